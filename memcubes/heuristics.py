"""Rule-based memory distillation, and the fact keys that reconcile memories.

The proxy has to remember things without an LLM (offline mode, tests, and as a cheap first pass on
every message), so this module turns one English chat message into the statements worth keeping and
recognises a conservative set of facts whose subject/attribute/value let the reconciler UPDATE or
DELETE older memories. Every rule prefers to answer nothing: a missing key costs one redundant
memory, a wrong key overwrites a true one. Everything is pure and deterministic, and every pattern is
compiled at import because this runs on every message the proxy forwards.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from memcubes.sentences import split_sentences

__all__ = [
    "JOB_WORDS",
    "FactKey",
    "canon_words",
    "canonical",
    "clean",
    "extract_facts",
    "fact_key",
    "negation_of",
    "normalize",
    "says_nothing",
]


@dataclass(frozen=True)
class FactKey:
    """What a statement asserts: equal subject and attribute with another value means a conflict."""

    subject: str
    attribute: str
    value: str


# --- shared vocabulary ------------------------------------------------------------------------------
_I, _I_AM, _I_HAVE = r"(?:i|we)", r"(?:i'm|we're)", r"(?:i've|we've)"
_ADV = (
    r"(?:(?:just|recently|currently|now|still|actually|finally|also|already|officially|really|originally|"
    r"happily|newly|mostly|basically)\s+)*"
)
_REL = (
    r"(?:(?:best|older|younger|little|big|baby|twin|step|ex|eldest|oldest|youngest)[\s-]?)?(?:mom|mum|"
    r"mother|dad|father|parents|sister|brother|sibling|wife|husband|partner|spouse|boyfriend|girlfriend|"
    r"fianc[eé]e?|son|daughter|kid|child|baby|grandma|grandmother|grandpa|grandfather|aunt|uncle|cousin|"
    r"niece|nephew|friend|boss|manager|colleague|co-?worker|roommate|flatmate|neighbou?r|dog|cat|puppy|"
    r"kitten|pet|parrot|rabbit|hamster|horse)"
)
# An appositive name ("my sister Anna lives ...") is accepted only when capitalised, so that
# "my dog walker lives in Rome" is not read as the dog's address.
_MY = rf"my\s+(?P<subj>{_REL})(?:\s+(?-i:[A-Z])[\w'-]*)?"
_DIETS = r"(?:vegetarian|vegan|pescatarian|pescetarian|flexitarian|plant-based|keto|paleo|omnivore|carnivore)"
_STATUS = r"(?:married|single|divorced|engaged|widowed|separated|in\s+a\s+relationship)"
_FAVORITE = r"(?:absolute\s+|all-time\s+)?(?:favou?rite|fave?)\s+(?P<attr>[a-z][a-z ]{0,30}?)"
_YEARS_OLD = r"(?:\s+(?:years?|yrs?)(?:\s+old)?|\s*y/?o)?"
_NOT, _NOT_BE = r"(?:no\s+longer|don't|doesn't|no\s+more)", r"(?:no\s+longer|not)"
# Where a value stops: punctuation, a time phrase, or a new clause ("Lisbon since 2019", "Google as
# an engineer", "Porto 2 years ago"). "and" ends a value only before a new clause ("fish and chips").
_END = (
    r"(?:\s*[,;:(!?]|\s+[-–—]\s|\s+(?:since|for|from|until|till|to|as|at|in|near|because|but|so|or|when|"
    r"while|where|which|who|that|with|now|currently|anymore|any\s+more|any\s+longer|again|too|though|"
    r"already|yet|soon|ago|yesterday|today|tonight|tomorrow|recently|lately|nowadays|these\s+days|"
    r"right\s+now|last|next|this|every|around|after|before|during|like|btw|lol|haha|please|full[- ]time|"
    r"part[- ]time|remotely)(?![\w&'-])|"
    r"\s+(?:\d+|an?|one|two|three|four|five|six|seven|eight|nine|ten|a\s+few|a\s+couple(?:\s+of)?|several)"
    r"\s+(?:years?|months?|weeks?|days?)\b|"
    r"\s+and\s+(?:i|i'm|i've|my|we|it|it's|also|then|now|have|love|work|live|am|an?)\b)"
)
_TAIL = rf"(?=\s*$|{_END})"  # a closed value ("vegan", "34") must be followed by nothing new
_VALUE_END = re.compile(_END, re.I)
_ARTICLE = re.compile(r"^(?:the|a|an)\s+")
_SYNONYMS = {
    "mum": "mother",
    "mom": "mother",
    "dad": "father",
    "grandma": "grandmother",
    "grandpa": "grandfather",
    "kid": "child",
    "co-worker": "coworker",
    "neighbour": "neighbor",
    "fiancé": "fiance",
    "fiancée": "fiance",
    "fiancee": "fiance",
    "colour": "color",
    "flavour": "flavor",
    "pescetarian": "pescatarian",
}


# --- value checks ------------------------------------------------------------------------------------
def _wordset(words: str) -> frozenset[str]:
    """Vocabulary written as prose, which is easier to review than a column of quoted strings."""
    return frozenset(words.split())


JOB_WORDS = _wordset(
    "accountant actor actress analyst architect artist assistant attorney author baker banker barber barista "
    "bartender broker carpenter cashier chef cleaner clerk coach consultant cook counselor counsellor dancer "
    "dentist designer developer director doctor driver economist editor electrician entrepreneur farmer "
    "firefighter fisherman freelancer hairdresser illustrator instructor intern janitor journalist judge "
    "lawyer lecturer librarian manager mechanic midwife musician nurse nutritionist officer painter "
    "paralegal paramedic pharmacist pilot plumber policeman postdoc producer professor programmer realtor "
    "receptionist recruiter researcher sailor salesman scientist secretary singer soldier student supervisor "
    "surgeon tailor teacher therapist trader translator tutor vet veterinarian waiter waitress welder writer"
)
_JOB_SUFFIXES = ("ologist", "ician", "ographer", "iatrist", "engineer")
_NOT_JOB = _wordset(
    "big huge total real true good bad great terrible awful proud lazy former retired ex aspiring wannabe "
    "future amateur hobby failed bit little kind sort fan lover pretty better best worst"
)
_NOT_A_PLACE = _wordset(
    "fear hope denial peace sin harmony luxury poverty comfort style misery shame city countryside suburbs "
    "country area neighborhood neighbourhood dorms moment present past future same place"
)
_NOT_AN_EMPLOYER = _wordset("night nights weekends weekend living myself free fun hours moment")
_NOT_A_NAME = _wordset(
    "back crazy later anytime tomorrow whatever when if maybe sometime now please stupid "
    "lazy out old-fashioned paranoid"
)
_DETERMINER = re.compile(
    r"^(?:my|our|his|her|their|your|its?|this|that|these|those|some|me|him|them|us|here|"
    r"there|home|myself)\b"
)


def _is_place(value: str) -> bool:
    # "I live in a small flat" describes housing, not a place an UPDATE should overwrite a city with.
    bare = _ARTICLE.sub("", value)
    return (
        len(value.split()) <= 5
        and not value.startswith(("a ", "an "))
        and not _DETERMINER.match(value)
        and bare not in _NOT_A_PLACE
    )


def _is_employer(value: str) -> bool:
    return len(value.split()) <= 5 and not _DETERMINER.match(value) and _ARTICLE.sub("", value) not in _NOT_AN_EMPLOYER


def _is_job(value: str) -> bool:
    words = value.split()
    return (
        0 < len(words) <= 4
        and not _NOT_JOB.intersection(words)
        and (words[-1] in JOB_WORDS or words[-1].endswith(_JOB_SUFFIXES))
    )


def _is_name(value: str) -> bool:
    words = value.split()
    return (
        0 < len(words) <= 3
        and words[0] not in _NOT_A_NAME
        and all(word.replace("-", "").replace("'", "").isalpha() for word in words)
    )


def _is_age(value: str) -> bool:
    return value.isdigit() and 0 < int(value) < 120


def _is_favorite(value: str) -> bool:
    return len(value.split()) <= 6 and not _DETERMINER.match(value) and value not in {"it", "that", "this"}


@dataclass(frozen=True)
class _Rule:
    """One recognisable phrasing.

    An open value ("Lisbon since 2019") is cut at the next clause and checked by ``accepts``; without
    ``accepts`` the pattern itself spells out every value it allows ("vegan", "in a relationship"), and
    ``value`` is fixed when the words carry none ("I eat meat").
    """

    pattern: re.Pattern[str]
    attribute: str
    accepts: Callable[[str], bool] | None
    value: str | None


def _rule(
    pattern: str, attribute: str, *, accepts: Callable[[str], bool] | None = None, value: str | None = None
) -> _Rule:
    return _Rule(re.compile("^" + pattern, re.I), attribute, accepts, value)


_FACT_RULES = (
    # residence and origin
    _rule(
        rf"(?:{_I}\s+{_ADV}(?:live|reside)|{_I_AM}\s+{_ADV}(?:living|based|settled)|"
        rf"{_I_HAVE}\s+{_ADV}(?:been\s+living|lived))\s+in\s+(?P<val>.+)",
        "residence",
        accepts=_is_place,
    ),
    _rule(
        rf"(?:{_I}|{_I_HAVE})\s+{_ADV}(?:moved|relocated)(?:\s+back)?\s+to\s+(?P<val>.+)",
        "residence",
        accepts=_is_place,
    ),
    _rule(r"my\s+(?:home|house|apartment|flat|place)\s+is\s+in\s+(?P<val>.+)", "residence", accepts=_is_place),
    _rule(
        rf"{_MY}\s+{_ADV}(?:lives|resides|is\s+living|'s\s+living|is\s+based|'s\s+based)\s+in\s+"
        r"(?P<val>.+)",
        "residence",
        accepts=_is_place,
    ),
    _rule(
        rf"{_MY}\s+{_ADV}(?:has\s+)?(?:moved|relocated)(?:\s+back)?\s+to\s+(?P<val>.+)", "residence", accepts=_is_place
    ),
    _rule(rf"i(?:'m|\s+come|\s+came)\s+{_ADV}from\s+(?P<val>.+)", "origin", accepts=_is_place),
    _rule(r"i\s+was\s+born\s+(?:and\s+raised\s+)?in\s+(?P<val>.+)", "origin", accepts=_is_place),
    # employer and job
    _rule(
        rf"(?:i\s+{_ADV}(?:work|started\s+working|began\s+working)|i'm\s+{_ADV}working)\s+(?:at|for)\s+"
        r"(?P<val>.+)",
        "employer",
        accepts=_is_employer,
    ),
    _rule(rf"i'm\s+{_ADV}employed\s+(?:at|by)\s+(?P<val>.+)", "employer", accepts=_is_employer),
    _rule(
        rf"i(?:'ve)?\s+{_ADV}(?:got|landed|accepted|took|started|began|found)\s+(?:a\s+|an\s+|my\s+)?"
        r"(?:new\s+)?(?:job|position|role|internship)\s+(?:at|with)\s+(?P<val>.+)",
        "employer",
        accepts=_is_employer,
    ),
    # "I joined a gym" is not a job, so a bare "joined"/"hired" needs a capitalised name.
    _rule(
        rf"i(?:'ve)?\s+{_ADV}(?:joined|(?:got|was)\s+hired\s+(?:at|by))\s+(?P<val>(?-i:[A-Z]).*)",
        "employer",
        accepts=_is_employer,
    ),
    _rule(
        rf"{_MY}\s+{_ADV}(?:works|is\s+working|'s\s+working)\s+(?:at|for)\s+(?P<val>.+)",
        "employer",
        accepts=_is_employer,
    ),
    _rule(
        rf"i(?:'m|\s+{_ADV}work\s+as|'m\s+{_ADV}working\s+as|\s+{_ADV}became|'ve\s+{_ADV}become)\s+{_ADV}"
        r"an?\s+(?P<val>.+)",
        "job",
        accepts=_is_job,
    ),
    _rule(rf"{_MY}\s+(?:is|'s)\s+{_ADV}an?\s+(?P<val>.+)", "job", accepts=_is_job),
    # age, name, favourites
    _rule(rf"(?:i'm|i(?:'ve)?\s+{_ADV}turned)\s+(?P<val>\d{{1,3}}){_YEARS_OLD}{_TAIL}", "age", accepts=_is_age),
    _rule(rf"{_MY}\s+(?:is|'s|just\s+turned|turned)\s+(?P<val>\d{{1,3}}){_YEARS_OLD}{_TAIL}", "age", accepts=_is_age),
    _rule(
        r"(?:my\s+name\s+is|my\s+name's|call\s+me|i\s+go\s+by|i'm\s+called|(?:people|everyone|"
        r"friends)\s+call\s+me)\s+(?P<val>.+)",
        "name",
        accepts=_is_name,
    ),
    _rule(
        rf"{_MY}(?:'s\s+name\s+is|'s\s+name's|\s+is\s+called|\s+is\s+named|'s\s+called|\s+goes\s+by)\s+"
        r"(?P<val>.+)",
        "name",
        accepts=_is_name,
    ),
    _rule(
        rf"(?:{_I_HAVE}(?:\s+got)?|{_I}\s+{_ADV}(?:got|adopted|own))\s+an?\s+(?:new\s+)?(?P<subj>{_REL})\s+"
        r"(?:named|called)\s+(?P<val>.+)",
        "name",
        accepts=_is_name,
    ),
    _rule(
        rf"my\s+{_FAVORITE}\s+(?:is|are|'s|would\s+be|has\s+to\s+be)\s+{_ADV}(?P<val>.+)",
        "favorite",
        accepts=_is_favorite,
    ),
    _rule(
        rf"(?P<val>[^,]+?)\s+(?:is|are)\s+(?:definitely\s+|probably\s+|still\s+)?my\s+{_FAVORITE}"
        r"(?:\s+(?:of\s+all\s+time|ever|by\s+far|right\s+now|now))?$",
        "favorite",
        accepts=_is_favorite,
    ),
    # diet and relationship status
    _rule(
        rf"(?:{_I_AM}|{_I}\s+{_ADV}(?:became|went|turned|eat|follow|do)|{_I_HAVE}\s+{_ADV}(?:been|become|"
        rf"gone))\s+{_ADV}(?:an?\s+)?(?:strict\s+|fully\s+)?(?P<val>{_DIETS})(?:\s+diet)?{_TAIL}",
        "diet",
    ),
    _rule(
        rf"(?:{_I}\s+{_ADV}(?:eat|started\s+eating)\s+(?:meat|everything)|"
        rf"{_I_AM}\s+{_ADV}eating\s+meat){_TAIL}",
        "diet",
        value="omnivore",
    ),
    # "I'm engaged in a project" is not a status; "married with two kids" is.
    _rule(
        rf"(?:{_I_AM}|{_I}\s+{_ADV}(?:got|became)|{_I_HAVE}\s+{_ADV}(?:been|gotten|got))\s+{_ADV}"
        rf"(?P<val>{_STATUS})(?!\s+in\b)(?!\s+with\b(?!\s+(?:\w+\s+)?(?:kids|children))){_TAIL}",
        "relationship status",
    ),
)

_RETRACTION_RULES = (
    _rule(
        rf"(?:{_I}\s+{_NOT}\s+(?:live|reside)|{_I_AM}\s+{_NOT_BE}\s+(?:living|based))\s+in\s+(?P<val>.+)",
        "residence",
        accepts=_is_place,
    ),
    _rule(
        rf"(?:{_I}|{_I_HAVE})\s+{_ADV}moved\s+(?:out\s+of|away\s+from|from)\s+(?P<val>.+)",
        "residence",
        accepts=_is_place,
    ),
    _rule(rf"{_MY}\s+{_NOT}\s+(?:lives?|resides?)\s+in\s+(?P<val>.+)", "residence", accepts=_is_place),
    _rule(rf"{_MY}\s+(?:has\s+)?moved\s+(?:out\s+of|away\s+from|from)\s+(?P<val>.+)", "residence", accepts=_is_place),
    _rule(
        rf"(?:i\s+{_NOT}\s+work|i'm\s+{_NOT_BE}\s+(?:working|employed))\s+(?:at|for|by)\s+(?P<val>.+)",
        "employer",
        accepts=_is_employer,
    ),
    _rule(rf"(?:i\s+{_NOT}\s+work|i'm\s+{_NOT_BE}\s+working)\s+there{_TAIL}", "employer"),
    _rule(
        rf"i(?:'ve)?\s+{_ADV}(?:quit|left|lost)\s+my\s+(?:old\s+|current\s+)?(?:job|position|role)"
        r"(?:\s+(?:at|with)\s+(?P<val>.+)|\s.*)?$",
        "employer",
        accepts=_is_employer,
    ),
    # "I quit smoking" / "I left my keys" retract nothing: a bare object must be a capitalised name.
    _rule(rf"i(?:'ve)?\s+{_ADV}(?:quit|left)\s+(?P<val>(?-i:[A-Z]).*)", "employer", accepts=_is_employer),
    _rule(
        rf"i(?:'ve)?\s+{_ADV}(?:resigned|retired|(?:was|got|'ve\s+been|been)\s+(?:fired|laid\s+off|"
        r"let\s+go|sacked))(?:\s+(?:from|at|by)\s+(?P<val>.+)|\s.*)?$",
        "employer",
        accepts=_is_employer,
    ),
    _rule(rf"i\s+{_ADV}stopped\s+working\s+(?:at|for)\s+(?P<val>.+)", "employer", accepts=_is_employer),
    _rule(rf"{_MY}\s+{_NOT}\s+works?\s+(?:at|for)\s+(?P<val>.+)", "employer", accepts=_is_employer),
    _rule(rf"i'm\s+{_NOT_BE}\s+{_ADV}an?\s+(?P<val>.+)", "job", accepts=_is_job),
    _rule(rf"i\s+{_ADV}(?:stopped|quit)\s+(?:working\s+as|being)\s+an?\s+(?P<val>.+)", "job", accepts=_is_job),
    _rule(
        rf"(?:i'm\s+{_NOT_BE}|i\s+{_ADV}(?:stopped|quit|gave\s+up)\s+being)\s+(?:an?\s+)?"
        rf"(?P<val>{_DIETS}){_TAIL}",
        "diet",
    ),
    _rule(
        rf"(?:i\s+{_NOT}\s+eat|i\s+{_ADV}(?:stopped|quit)\s+eating|i\s+{_ADV}gave\s+up)\s+meat{_TAIL}",
        "diet",
        value="omnivore",
    ),
    _rule(rf"{_I_AM}\s+{_NOT_BE}\s+(?P<val>{_STATUS}){_TAIL}", "relationship status"),
)

# --- text clean-up shared by extraction and the rules --------------------------------------------------
_CANONICAL = (
    (re.compile(r"[’‘`´]"), "'"),
    (re.compile(r"\b(?:i\s+am|im)\b", re.I), "i'm"),
    (re.compile(r"\bwe\s+are\b", re.I), "we're"),
    (re.compile(r"\b(?:i\s+have|ive)\b", re.I), "i've"),
    (re.compile(r"\bwe\s+have\b", re.I), "we've"),
    (re.compile(r"\bdo\s*n[o']?t\b", re.I), "don't"),
    (re.compile(r"\bdoes\s*n[o']?t\b", re.I), "doesn't"),
)
_FILLERS = (
    r"well|oh|wow|ugh|oops|sorry|yay|omg|so|btw|by\s+the\s+way|actually|anyway|anyways|also|and|but|"
    r"hey|hi|hello|um+|uh+|hmm+|ah|haha\w*|lol|honestly|basically|fyi|ok|okay|yeah|yes|yep|yup|no|nope|"
    r"sure|cool|great|nice|right|correct|exactly|true|indeed|absolutely|thanks|thank\s+you|oh\s+and|"
    r"just\s+so\s+you\s+know|for\s+the\s+record|for\s+context|fun\s+fact|to\s+be\s+honest|tbh|"
    r"(?:please\s+)?(?:remember|note|keep\s+in\s+mind|don't\s+forget)(?:\s+that)?|"
    r"(?:do\s+me\s+a\s+favou?r\s+and\s+remember|i(?:\s+want|\s+need|'d\s+like|\s+would\s+like)\s+you\s+to\s+"
    r"(?:remember|know))(?:\s+that)?|i\s+(?:should|forgot\s+to)\s+mention(?:\s+that)?|"
    r"i\s+wanted\s+to\s+(?:tell|let)\s+you(?:\s+know)?(?:\s+that)?|just\s+to\s+let\s+you\s+know(?:\s+that)?"
)
# A filler goes when punctuation, another filler or the speaker's own subject follows it ("oh btw, I ...").
_LEAD_FILLER = re.compile(
    rf"^[\s,;:.!?~\-–—]*(?:(?:{_FILLERS})(?:\s*[,:;!.\-]+\s*|\s+(?=(?:i|my|we|our|{_FILLERS})\b)))*", re.I
)
_TRAILER = re.compile(
    r"(?:[\s,]+(?:btw|by\s+the\s+way|lol|haha\w*|fyi|tbh|though|honestly|i\s+guess|"
    r"i\s+think|you\s+know))*[\s.!?,;:~\-]*$",
    re.I,
)
_LEAD_TIME = re.compile(
    r"^(?:yesterday|today|tonight|recently|lately|nowadays|these\s+days|currently|now|finally|"
    r"(?:last|this|next)\s+\w+|(?:back\s+)?in\s+\d{4}|since\s+\d{4}|"
    r"as\s+of\s+(?:this\s+|last\s+)?\w+(?:\s+\d{4})?|(?:\d+|an?|one|two|three|a\s+few|a\s+couple\s+of|several)"
    r"\s+\w+\s+ago)\s*,?\s+",
    re.I,
)
_EMOJI = re.compile(
    r"[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F\u200B-\u200D\u2060\uFEFF]+|"
    r"(?:[:;=]-?[()\[\]DPpOo3|*]+|<3|\^_\^)(?!\w)"
)


def canonical(text: str) -> str:
    """Contractions spelt one way ("I am" and "im" are "i'm", "do not" is "don't")."""
    for pattern, replacement in _CANONICAL:
        text = pattern.sub(replacement, text)
    return text


def _strip_filler(text: str) -> str:
    return _TRAILER.sub("", _LEAD_FILLER.sub("", text.strip(), count=1), count=1).strip()


def clean(statement: str) -> str:
    """A statement as the rules read it: canonical contractions, no emoji, no leading filler or time."""
    text = " ".join(_EMOJI.sub(" ", unicodedata.normalize("NFKC", statement)).split())
    return _strip_filler(_LEAD_TIME.sub("", _strip_filler(canonical(text)), count=1))


_INITIALISM = re.compile(r"\b(?:[a-z]\.)+[a-z]\b\.?")  # "the U.S." and "the US" are one place


def _cut_value(raw: str) -> str:
    end = _VALUE_END.search(" " + raw)
    value = raw[: max(end.start() - 1, 0)] if end else raw
    value = _INITIALISM.sub(lambda initials: initials.group().replace(".", ""), value.casefold())
    return " ".join(value.strip(" \"'.").split())


def canon_words(text: str) -> str:
    """Words with their spelling variants folded ("mum" and "mom" are "mother")."""
    return " ".join(_SYNONYMS.get(word, word) for word in text.casefold().split())


def _match(rules: tuple[_Rule, ...], statement: str, *, retraction: bool) -> FactKey | None:
    """The first rule that matches and whose value passes its check wins.

    A rejected value falls through to later phrasings ("I'm a vegetarian" is no job, but it is a diet).
    """
    text = clean(statement)
    for rule in rules:
        found = rule.pattern.match(text)
        if found is None:
            continue
        groups = found.groupdict()
        raw = groups.get("val") or ""
        if rule.value is not None:
            value = rule.value
        elif rule.accepts is None:
            value = " ".join(raw.casefold().split())
        else:
            value = _cut_value(raw)
            if value and not rule.accepts(value):
                continue
        if not value and not retraction:
            continue
        attribute = rule.attribute
        if groups.get("attr"):
            attribute = f"{attribute} {canon_words(groups['attr'])}"
        value = _ARTICLE.sub("", value)
        return FactKey(canon_words(groups.get("subj") or "user"), attribute, _SYNONYMS.get(value, value))
    return None


def fact_key(statement: str) -> FactKey | None:
    """Subject/attribute/value of a statement when a rule recognises it, else None."""
    return _match(_FACT_RULES, statement, retraction=False)


def negation_of(statement: str) -> FactKey | None:
    """The fact a statement retracts ("I no longer live in Lisbon" -> (user, residence, lisbon)), else None.

    The value is "" when the retraction is of the attribute as a whole ("I quit my job").
    """
    return _match(_RETRACTION_RULES, statement, retraction=True)


_PUNCTUATION = re.compile(r"[^\w\s]+")


def normalize(text: str) -> str:
    """Canonical form used for exact-duplicate detection (case, whitespace, punctuation folded)."""
    folded = re.sub(r"['’‘`´]", "", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(_PUNCTUATION.sub(" ", folded).split())


# --- sentence splitting and the keep/drop judgement -----------------------------------------------------
_CODE_BLOCK = re.compile(r"```.*?(?:```|\Z)", re.S)
_BULLET = re.compile(r"^\s*(?:[-*•·‣▪◦–—>]+|\d{1,2}[.)])\s+")
_CLAUSE = r"(?:^|[,;:]\s*(?:(?:and|but|so|or|now|then)\s+)?|\s+(?:and|but|so|or)\s+)"
_QUESTION = (
    r"(?:what|what's|whats|which|who|who's|whom|whose|why|how|how's|where|where's|when|(?:is|are|am|"
    r"was|were|do|does|did|can|could|would|will|should|shall|may|might|have|has|isn't|aren't|don't|"
    r"doesn't|didn't|can't|won't|wouldn't|shouldn't)\s+(?:you|it|there|i|we|they|he|she|that|this|"
    r"these|those|my|your|the|a|an|any|anyone|someone|anybody|somebody))\b"
)
_QUESTION_CUT = re.compile(_CLAUSE + _QUESTION, re.I)
_QUESTION_START = re.compile(rf"^(?!when\b){_QUESTION}", re.I)
# Polite requests may follow any clause; a bare imperative only starts a clause ("..., write me a poem"),
# since after "and" it usually shares the speaker's subject ("I love hiking and plan to ...").
_REQUEST_CUT = re.compile(
    _CLAUSE + r"(?:please|pls|plz|(?:can|could|would|will)\s+you|i(?:\s+want|\s+need|\s+would\s+like|"
    r"'d\s+like)\s+you\s+to|let\s+me\s+know|tell\s+me|give\s+me|show\s+me|help\s+me|let's)\b|(?:^|"
    r"[,;:]\s*(?:(?:and|so|now|then)\s+)?)(?:write|rewrite|summari[sz]e|translate|explain|list|describe|"
    r"draft|compose|generate|create|suggest|recommend|fix|rephrase|proofread|correct|calculate|convert|"
    r"compare|define|outline|make|find|check|remind|give|tell|show|provide|send|search|look\s+up|plan|book|"
    r"help|imagine|pretend|act\s+as|draw|debug|implement|continue|answer|edit|improve|shorten|expand|"
    r"analy[sz]e|review|estimate|teach)\b",
    re.I,
)
_SUBORDINATE = re.compile(r"^(?:since|because|as|given\s+that|considering)\s+", re.I)
_ACK = (
    r"hi|hello|hey|yo|hiya|howdy|good\s+(?:morning|afternoon|evening|night)|bye|goodbye|"
    r"see\s+you(?:\s+later)?|cheers|take\s+care|thanks|thank\s+you|thx|ty|much\s+appreciated|ok|okay|k|"
    r"kk|cool|great|nice|awesome|sure|yes|no|yeah|yep|yup|nope|nah|got\s+it|sounds\s+good|perfect|"
    r"alright|fine|right|lol|haha\w*|hmm+|wow|exactly|indeed|of\s+course|no\s+problem|never\s+mind|nvm|"
    r"makes\s+sense|fair\s+enough|good\s+point|interesting|me\s+too|same\s+here|not\s+bad|"
    r"oh\s+my\s+(?:god|gosh)|omg|so\s+much|a\s+lot|again|too|now|then|as\s+well|though|and\s+you|man|"
    r"dude|i\s+(?:think|guess|hope|suppose|believe)\s+(?:so|not)|i\s+(?:see|know|guess|agree|understand|"
    r"get\s+it|dunno|don't\s+know|suppose)|i'm\s+(?:fine|good|ok|okay|great|alright|well|not\s+sure|"
    r"doing\s+\w+|back|here|done|ready|tired|busy|bored|hungry|in\s+a\s+hurry)|i\s+(?:love|like|hate|"
    r"loved|liked|enjoyed)\s+(?:it|this|that|them|these|those)|i'll\s+(?:try|do|check)\s+(?:it|that|"
    r"this)(?:\s+out)?|i'll\s+(?:think\s+about\s+it|let\s+you\s+know)"
)
_CHITCHAT = re.compile(rf"^(?:{_ACK})(?:[\s,!.]+(?:{_ACK}))*$", re.I)
_CHITCHAT_START = re.compile(
    r"^(?:i\s+(?:(?:really|just|totally|do|also|completely)\s+)?(?:appreciate|agree|disagree|wonder|mean\b|meant\b|"
    r"was\s+(?:wondering|just|joking|kidding)|have\s+(?:a|another|one\s+more)\s+question|"
    r"need\s+(?:your\s+)?help|(?:want|need|would\s+like)\s+to\s+(?:know|ask|understand)|think\s+(?:you|"
    r"that's|this|it's|so)|hope\s+(?:you|this|that)|didn't\s+know\s+that|don't\s+(?:know|understand|"
    r"get)\s+(?:what|how|why|if|whether|where|when|who|which|it|that))|i'd\s+like\s+to\s+(?:know|ask)|"
    r"i'm\s+(?:not\s+sure|curious|confused|sorry|glad\s+(?:you|to\s+hear|that|it)|just\s+(?:kidding|joking|"
    r"asking)|happy\s+to\s+hear))",
    re.I,
)
_HYPOTHETICAL = re.compile(
    r"^(?:if|imagine|suppose|supposing|assuming|pretend|what\s+if|let's\s+say|"
    r"hypothetically)\b|\bif\s+(?:i|we)\s+(?:were|was|had|could|won|did|didn't|"
    r"would)\b|\b(?:i|we)\s+wish\b|\b(?:i|we)(?:'d|\s+would)\s+have\b",
    re.I,
)
# The speaker must be the subject within the first few words ("Last summer, my wife and I ...").
_FIRST_PERSON = re.compile(r"^(?!(?:that|this|these|those|you|your)\b)(?:\S+\s+){0,3}?(?:i|my|we|our|me\s+and)\b", re.I)
# Two-word statements are chit-chat ("I'm tired") unless they state a lasting trait or a proper noun.
_TRAIT = re.compile(
    r"^i'm\s+(?:retired|unemployed|self-employed|pregnant|diabetic|asthmatic|epileptic|"
    r"celiac|coeliac|deaf|blind|colou?rblind|left-handed|right-handed|autistic|bilingual|"
    r"trilingual|introverted|extroverted|sober|atheist|agnostic|religious|gay|lesbian|"
    r"bisexual|transgender|nonbinary|non-binary|disabled|(?-i:[A-Z])[\w-]+)$",
    re.I,
)
# A sentence that stops on a preposition or determiner was cut short ("My name is", "I live in").
_DANGLING = re.compile(r"\b(?:in|at|to|for|of|from|with|by|my|our|the|a|an|is|are|was|and|but|or|because)$", re.I)
# Chat drops the subject of news ("Moved to Porto last week!"): the speaker's, restored.
_ELIDED_SUBJECT = re.compile(
    r"^(?=(?:just\s+|finally\s+)?(?:moved|relocated|quit|left|started|sold|switched|broke\s+up|adopted|bought|"
    r"graduated|transferred|got\s+(?:married|engaged|divorced|hired|promoted|fired|laid\s+off)|retired|"
    r"resigned)\b)",
    re.I,
)
_ELIDED_OWNER = re.compile(r"^new\s+(?:\w+\s+)?(?:number|phone|e-?mail|address|job|car)\b", re.I)
_LONE_I = re.compile(r"(?<![\w.'])i(?=\s|'|$)")


def _sentences(text: str) -> Iterator[str]:
    text = _EMOJI.sub(" ", unicodedata.normalize("NFKC", _CODE_BLOCK.sub("\n", text)))
    for line in text.splitlines():
        yield from split_sentences(_BULLET.sub("", line, count=1))


def _statement_part(sentence: str, *, asks: bool) -> str:
    """The sentence up to its first request or question clause ("I'm vegetarian, what should I cook?")."""
    end = len(sentence)
    request = _REQUEST_CUT.search(sentence)
    if request is not None:
        end = request.start()
    if asks:
        question = _QUESTION_CUT.search(sentence, 0, end)
        if question is not None:
            end = question.start()
        elif request is None:  # a tag question ("I'm vegan, right?") or a whole yes/no question
            end = max(sentence.rfind(","), 0)
    if end == len(sentence):
        return sentence
    return _SUBORDINATE.sub("", sentence[:end])


def _is_fact(statement: str) -> bool:
    if not statement:
        return False
    if fact_key(statement) is not None or negation_of(statement) is not None:
        return True
    text = canonical(statement)
    if (
        _CHITCHAT.match(text)
        or _CHITCHAT_START.match(text)
        or _HYPOTHETICAL.search(text)
        or _QUESTION_START.match(text)
    ):
        return False
    words = len(text.split())
    long_enough = words >= 3 or _TRAIT.match(text) is not None
    complete = words <= 60 and _DANGLING.search(text) is None
    return long_enough and complete and _FIRST_PERSON.match(text) is not None


def extract_facts(text: str) -> list[str]:
    """Statements worth remembering about the speaker, from one message the speaker wrote."""
    facts: list[str] = []
    seen: set[str] = set()
    for sentence in _sentences(text):
        body = _strip_filler(sentence)
        if sentence.endswith(":") and _REQUEST_CUT.match(body):
            break  # "Translate this:" — what follows is material to work on, not the speaker talking
        candidate = _strip_filler(_statement_part(body, asks="?" in sentence[-2:]))
        if _ELIDED_SUBJECT.match(candidate):
            candidate = f"I {candidate[0].lower()}{candidate[1:]}"
        elif _ELIDED_OWNER.match(candidate):
            candidate = f"My {candidate[0].lower()}{candidate[1:]}"
        if not _is_fact(candidate):
            continue
        tidy = _LONE_I.sub("I", " ".join(candidate.split()))
        fact = tidy[0].upper() + tidy[1:] + "."
        if normalize(fact) not in seen:
            seen.add(normalize(fact))
            facts.append(fact)
    return facts


def says_nothing(text: str) -> bool:
    """True when no sentence of a message states anything: greetings, acknowledgements, questions
    and requests only ("hi there!", "thanks, that helps", "What's 2+2?"): nothing a later turn
    could need as evidence."""
    for sentence in _sentences(text):
        body = _strip_filler(sentence)
        statement = _strip_filler(_statement_part(body, asks="?" in sentence[-2:]))
        folded = canonical(statement)
        words = len(statement.split()) if " " in statement else len(statement) // _CHARS_PER_WORD
        if _is_fact(statement) or (
            words >= _STATEMENT_WORDS and not (_CHITCHAT.match(folded) or _CHITCHAT_START.match(folded))
        ):
            return False
    return True


_CHARS_PER_WORD = 2  # scripts written without spaces (Japanese, Chinese): about two characters a word
_STATEMENT_WORDS = 4  # shorter, a sentence that is not a fact is small talk ("hi there, thanks")
