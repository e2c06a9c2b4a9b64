"""Update detection: which live fact a statement of change replaces.

People announce changes in their own words ("Big news: I just moved to Porto last week!", "I quit
my nursing job; I am now a software tester", "sold the car", "stopped eating meat"), rarely by
restating a fact in the form it was first said. So a statement is read as a *claim*: whose fact it
is (the speaker, or "my sister"), which slots it speaks about (where one lives, works, partner,
diet, phone, pets, car, school, health, a liked or disliked thing), whether it says something
changed, and whether something rules an update out (a plan or a possibility, a visit, a past fact
such as "I used to live in Lisbon", an addition such as "I also work at a bakery"). Lifecycle finds
the old fact among the candidate's embedding neighbours: a live fact of the same speaker, subject
and slot, which the new claim replaces when

- the slot holds one value at a time (residence, work, partner, diet, phone, email, school, car, a
  favourite) and the new statement says it changed or names a value the old one lacks; or
- the slot holds many (pets, health conditions, likes) and the new statement says it changed *and*
  both speak of the same thing (the cat Luna, penicillin, sushi).

Every rule prefers to find nothing: a missed update leaves two facts side by side (as before), a
wrong one hides a true fact from the current view (it stays in history and in past answers).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from memcubes import heuristics

__all__ = ["Claim", "claim_of", "replaces"]


@dataclass(frozen=True)
class _Slot:
    name: str
    mention: re.Pattern[str]
    single: bool  # holds one value at a time
    implied: bool  # a new value alone replaces the old one ("I live in Porto" after "... Lisbon")
    change: re.Pattern[str]  # the slot's own words of change


def _words(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w'])(?:{pattern})(?![\w'])", re.I)


_PET_WORDS = (
    r"dogs?|cats?|pupp(?:y|ies)|kittens?|pets?|parrots?|rabbits?|bunn(?:y|ies)|hamsters?|goldfish|"
    r"fish|horses?|birds?|turtles?|tortoises?|guinea\s+pigs?|ferrets?|lizards?|snakes?|budgies?"
)
# Studying is the school slot, not work.
_JOBS = "|".join(sorted(heuristics.JOB_WORDS - {"student"})) + r"|\w+(?:ologist|ician|engineer|tester)"
_SLOTS = (
    _Slot(
        "residence",
        _words(
            r"live|lives|living|lived|reside|resides|residing|(?:moved|moving|relocated|relocating)\s+"
            r"(?:back\s+)?(?:to|into|in|out|away|abroad|home|house|across|here|there)|relocated|based\s+in|"
            r"settled\s+in|home\s+is|(?:house|apartment|flat|(?<!mail\s)address)\s+is|new\s+(?:address|apartment|flat|"
            r"house|place|home)"
        ),
        single=True,
        implied=True,
        change=_words(r"moved|relocated|new\s+(?:address|apartment|flat|house|place|home)"),
    ),
    _Slot(
        "work",
        _words(
            rf"(?:work|works|working)(?!\s+(?:on|out|phone|e-?mail|number|address|laptop|schedule|trip|friends?))|job|jobs|employer|employed|unemployed|hired|careers?|"
            rf"position|role|promoted|promotion|resigned|retired|fired|laid\s+off|let\s+go|freelanc\w*|"
            rf"self-employed|internship|offer|joined|colleagues|profession|{_JOBS}"
        ),
        single=True,
        implied=True,
        change=_words(
            r"quit|left|resigned|retired|fired|laid\s+off|let\s+go|promoted|hired|joined|started|became|"
            r"accepted|took\s+(?:a|the|an)|found\s+a\s+job|new\s+(?:job|role|position|boss|employer|company)"
        ),
    ),
    _Slot(
        "partner",
        _words(
            r"boyfriend|girlfriend|husband|wife|partner|fianc\w*|spouse|married|marry|marrying|divorced?|"
            r"engaged|single|dating|broke\s+up|split\s+up|separated|relationship|seeing\s+someone|"
            r"widowed|together|dumped"
        ),
        single=True,
        implied=True,
        change=_words(r"broke\s+up|split\s+up|separated|divorced|got\s+(?:married|engaged)|proposed|dumped"),
    ),
    _Slot(
        "diet",
        _words(
            r"vegetarian|vegan|pescatarian|pescetarian|keto|paleo|omnivore|carnivore|plant-based|meat|"
            r"diet|flexitarian"
        ),
        single=True,
        implied=True,
        change=_words(r"stopped\s+eating|gave\s+up|went|gone|turned|became|started\s+eating|cut\s+out"),
    ),
    _Slot(
        "phone",
        _words(r"phone|mobile|cell|(?:my|new|the)\s+number|number\s+(?:is|changed)|whatsapp"),
        single=True,
        implied=True,
        change=_words(r"new\s+(?:\w+\s+)?number|new\s+phone\s+number"),
    ),
    _Slot("email", _words(r"e-?mail"), single=True, implied=True, change=_words(r"new\s+e-?mail")),
    _Slot(
        "school",
        _words(
            r"school|schools|university|college|uni|campus|student|studying|study|studies|major|majoring|"
            r"degree|enrolled|graduated|graduate|transferred|phd|master's|bachelor's|semester|freshman|"
            r"sophomore|junior\s+year|senior\s+year"
        ),
        single=True,
        implied=True,
        change=_words(r"transferred|graduated|dropped\s+out|enrolled|finished"),
    ),
    _Slot(
        "car",
        _words(
            r"car|cars|drive|drives|driving|vehicle|truck|suv|van|minivan|motorbike|motorcycle|scooter|vespa|"
            r"tesla|toyota|honda|bmw|ford|audi|volkswagen|vw|prius|civic|corolla|mercedes|volvo|kia|hyundai|"
            r"nissan|mazda|subaru|jeep|fiat|renault|peugeot|skoda|porsche|leaf|golf"
        ),
        single=True,
        implied=False,
        change=_words(
            r"sold|traded(?:\s+in)?|got\s+rid\s+of|totaled|totalled|wrecked|replaced|upgraded|"
            r"new\s+(?:car|ride|vehicle)|now\s+drive|drive\s+(?:an?\s+)?\S+(?:\s+\S+)?\s+now|"
            r"bought\s+an?\s+(?:new\s+|used\s+)?(?:car|(?-i:[A-Z]))"
        ),
    ),
    _Slot(
        "pet",
        _words(_PET_WORDS),
        single=False,
        implied=False,
        change=_words(
            r"died|passed\s+away|passed|put\s+(?:\w+\s+){0,2}down|gave\s+(?:\S+\s+){0,3}(?:away|to)|"
            r"given\s+away|rehomed|re-homed|ran\s+away|lost|sold|no\s+pets|no\s+longer\s+have"
        ),
    ),
    _Slot(
        "health",
        _words(
            r"diagnosed|diabetes|diabetic|asthma|asthmatic|cancer|allerg\w*|condition|illness|sick|injur\w*|"
            r"broken|broke\s+my|sprained|fracture\w*|pregnant|recovered|recovering|recovery|remission|cured|"
            r"healed|surgery|migraines?|depress\w*|anxiety|arthritis|covid|blood\s+pressure|cholesterol|"
            r"pain|insomnia|celiac|coeliac|intolerant|intolerance|leg|ankle|knee|wrist|arm|hip|shoulder"
        ),
        single=False,
        implied=False,
        change=_words(
            r"recovered|cured|healed|remission|got\s+over|cleared\s+up|all\s+better|better\s+now|"
            r"back\s+to\s+normal|turns?\s+out|turned\s+out|after\s+all|outgrew|grew\s+out\s+of|had\s+the\s+baby|"
            r"fully\s+recovered|came\s+off"
        ),
    ),
)
_SLOT_BY_NAME = {slot.name: slot for slot in _SLOTS}
_ADDRESS = re.compile(r"\S+@\S+\.\w+")  # its words ("bob@work.org") are no slot's words
_MAX_CHARS = 1000  # a fact is a sentence or two; longer text is read no further (bounds regex work)
_FACT_KEY_SLOTS = {"employer": "work", "job": "work", "relationship status": "partner"}
_PARTNERS = frozenset("wife husband partner spouse boyfriend girlfriend fiance".split())

# Likes and habits: the thing is the slot ("opinion:sushi"), and polarity says which way it points.
_OPINION = re.compile(
    r"\b(?:i|we)(?:'m)?\s+(?:really\s+|absolutely\s+|totally\s+|now\s+|still\s+|actually\s+|only\s+)?"
    r"(?P<verb>(?:can't|cannot)\s+stand|don't\s+(?:like|enjoy|love|drink|eat|play|watch)|"
    r"(?:no\s+longer|not)\s+(?:like|enjoy|into|a\s+fan\s+of)|(?:stopped|quit|gave\s+up|got\s+(?:tired|"
    r"sick|bored)\s+of|over|done\s+with|tired\s+of|sick\s+of)|love|loves|like|likes|enjoy|adore|prefer|"
    r"hate|dislike|detest|into|a\s+(?:big\s+|huge\s+)?fan\s+of|drink|eat|play|watch|smoke)"
    r"(?P<object>[^,;.!?]*)",
    re.I,
)
_NEGATIVE = re.compile(
    r"can't|cannot|don't|no\s+longer|not|stopped|quit|gave|tired|sick|bored|over|done|hate|dislike|detest", re.I
)
_HABITS = frozenset("drink eat play watch smoke".split())
_FAVORITE = re.compile(r"\b(?:favou?rite|fave?)\s+(?P<what>[a-z]+)", re.I)

# Words of change for any slot, and those that say so only of a slot holding one value.
_CHANGE = _words(
    r"no\s+longer|not\s+\S+\s+anymore|anymore|any\s+more|any\s+longer|switched|switching|changed|instead|"
    r"stopped|quit|gave\s+up|turns?\s+out"
)
_CHANGE_OF_ONE = _words(
    r"now|(?:my|our)\s+new|these\s+days|nowadays|from\s+now\s+on|as\s+of|finally|actually|again|since\s+(?:last|january|"
    r"february|march|april|may|june|july|august|september|october|november|december|\d{4})"
)
# What rules an update out.
_HYPOTHETICAL = _words(
    r"might|(?-i:may)|could|would|should|maybe|perhaps|possibly|probably|thinking\s+(?:of|about)|"
    r"considering|consider|plan|plans|planning|want|wants|wanted\s+to|wanna|hope|hoping|dream|dreaming|"
    r"going\s+to|gonna|will|i'll|we'll|if|someday|one\s+day|eventually|wish|i'd|we'd|about\s+to|"
    r"next\s+(?:week|month|year|spring|summer|autumn|fall|winter)|applying|applied|interview\w*|offered|"
    r"tomorrow|soon|unless|whether|pretend|imagine"
)
_NEGATED = _words(r"didn't|did\s+not|never|haven't|hasn't|won't|wasn't|weren't|not\s+sure|still")
_PAST = _words(
    r"used\s+to|back\s+when|when\s+i\s+was|when\s+we\s+were|as\s+a\s+(?:kid|child|teen|teenager|student)|"
    r"in\s+the\s+past|years\s+ago|grew\s+up|growing\s+up|once\s+lived|formerly|previously|my\s+old|"
    r"my\s+former|my\s+ex|my\s+first|had\s+an?\s+\w+\s+when"
)
_VISIT = _words(
    r"visit|visited|visiting|trip|vacation|holiday|holidays|travel\w*|flew|flying|fly|went\s+to|"
    r"staying|stayed|weekend|tour|touring|conference|honeymoon|passing\s+through|layover|backpacking|"
    r"cruise|getaway|spent\s+(?:a|our|my|the)"
)
_ADDITIVE = _words(
    r"also|too|as\s+well|another|second|side\s+(?:job|gig|hustle)|in\s+addition|on\s+the\s+side|besides|"
    r"alongside|both|extra|weekends|part-time|volunteer\w*|hobby"
)
# A statement about someone else: "my sister moved", "my neighbour's cat", unless "my sister and I".
_PERSON = (
    r"(?:best\s+|older\s+|younger\s+|little\s+|big\s+|twin\s+|step)?(?P<rel>mom|mum|mother|dad|father|"
    r"parents|sister|brother|sibling|wife|husband|partner|spouse|boyfriend|girlfriend|fianc[eé]e?|son|"
    r"daughter|kids?|child|children|baby|grandma|grandmother|grandpa|grandfather|aunt|uncle|cousin|niece|"
    r"nephew|friend|boss|manager|colleague|co-?worker|roommate|flatmate|neighbou?r|ex)"
)
_OTHER_SUBJECT = re.compile(
    rf"^(?:\S+\s+){{0,2}}?(?:my|our)\s+{_PERSON}(?:'s|\s+(?-i:[A-Z])[\w'-]*)?\s+(?!and\s+(?:i|me)\b)(?!or\b)",
    re.I,
)
_NAMED_OTHER = re.compile(
    r"^(?!(?i:we|i|my|our|me|us)\b)(?-i:[A-Z])[\w'-]+\s+(?!and\s+(?:i|me)\b)(?:moved|works?|lives?|got|quit|left)\b"
)
_VALUE_TOKEN = re.compile(r"(?<![\w'])(?:(?-i:[A-Z])[\w'&.@-]*|[\w.+-]+@[\w.-]+|\d[\d\s()+-]{2,}\d|\d+)")
_STEM = re.compile(r"(?:ing|ed|es|s|e)$")
_STOP = frozenset(
    """a an the and or but so to of in on at for from with by about as is are was were be been being am i
    i'm i've we we're my our me us it it's this that these those there here just really very now then
    still also too do does did don't doesn't didn't have has had not no any some all last week month year
    day yesterday today morning night every again anymore any more longer only""".split()
)


@dataclass(frozen=True)
class Claim:
    """What one statement says: whose fact, in which slots, and whether it can replace one."""

    speaker: str
    subject: str  # "user", or the relation it speaks of ("sister")
    slots: frozenset[str]
    changed: frozenset[str]  # slots the statement says changed
    blocked: frozenset[str]  # slots it cannot replace a value of (a visit, an addition ...)
    values: frozenset[str]  # names, numbers: where a new value of a slot differs from the old one
    things: frozenset[str]  # stems of its content words, for slots that hold many things
    liked: frozenset[str]  # opinion slots it speaks of favourably (the others: unfavourably)
    settled: bool  # a plan, a possibility, a question, a denial or a past fact: replaces nothing

    def whose(self, slot: str) -> str:
        """The subject of a slot: "my wife is Ana" is about the speaker's partner."""
        return "user" if slot == "partner" and self.subject in _PARTNERS else self.subject


def _stem(word: str) -> str:
    word = word.casefold().strip("'")
    return _STEM.sub("", word) if len(word) > 4 else word


def _content(text: str) -> frozenset[str]:
    return frozenset(_stem(w) for w in re.findall(r"[a-zA-Z][\w'-]+", text) if w.casefold() not in _STOP)


def _subject(text: str) -> str:
    other = _OTHER_SUBJECT.match(text)
    if other is not None:
        return heuristics.canon_words(other.group("rel"))
    if _NAMED_OTHER.match(text):
        return "other:" + text.split()[0].casefold()
    return "user"


def _values(statement: str) -> frozenset[str]:
    tokens = (token.casefold().rstrip(".") for token in _VALUE_TOKEN.findall(statement))
    return frozenset(token for token in tokens if token not in _STOP)


def _opinions(text: str) -> dict[str, bool]:
    found: dict[str, bool] = {}
    for match in _OPINION.finditer(text):
        verb = match.group("verb")
        things = _content(match.group("object"))
        if not things or verb.split()[-1].casefold() in _HABITS:  # "I smoke", "I quit smoking"
            things |= _content(verb.split()[-1])
        for thing in things:
            found[f"opinion:{thing}"] = _NEGATIVE.search(verb) is None
    return found


@functools.lru_cache(maxsize=8192)
def claim_of(statement: str, *, speaker: str = "") -> Claim | None:
    """The claim a statement makes (without its "Speaker: " prefix), or None when it speaks of no
    slot this module knows. Cached: a space's facts are read again for each new one (~0.7 ms each)."""
    statement = statement[:_MAX_CHARS]
    text = _ADDRESS.sub(" email ", heuristics.canonical(" ".join(statement.split())))
    body = heuristics.clean(statement)
    slots = {slot.name for slot in _SLOTS if slot.mention.search(text)}
    key = heuristics.fact_key(statement)
    if key is not None and re.fullmatch(_PET_WORDS, key.subject) is None:  # two cats have two names
        attribute = _FACT_KEY_SLOTS.get(key.attribute, key.attribute)
        if attribute == "work" and key.value.endswith("student"):
            attribute = "school"
        slots.add(attribute if key.subject == "user" else f"{key.subject} {attribute}")
    positive = _opinions(body)
    slots |= positive.keys()
    slots |= {f"favorite {heuristics.canon_words(found.group('what'))}" for found in _FAVORITE.finditer(text)}
    if not slots:
        return None
    any_change = _CHANGE.search(text) is not None
    one_change = any_change or _CHANGE_OF_ONE.search(text) is not None
    changed = set()
    for name in slots:
        spec = _SLOT_BY_NAME.get(name)
        own_words = spec is not None and spec.change.search(text) is not None
        if any_change or own_words or (one_change and (spec is None or spec.single)):
            changed.add(name)
    blocked: set[str] = set()
    if _VISIT.search(text):
        blocked.add("residence")
    if _ADDITIVE.search(text):
        blocked |= {name for name in slots if not name.startswith("opinion:")}
    settled = (
        statement.rstrip().endswith("?")
        or _HYPOTHETICAL.search(text) is not None
        or _NEGATED.search(text) is not None
        or (_PAST.search(text) is not None and not changed)
    )
    return Claim(
        speaker=speaker.casefold(),
        subject=_subject(body),
        slots=frozenset(slots),
        changed=frozenset(changed),
        blocked=frozenset(blocked),
        values=_values(statement),
        things=_content(body),
        liked=frozenset(slot for slot, favourable in positive.items() if favourable),
        settled=settled,
    )


def replaces(new: Claim, old: Claim) -> str | None:
    """The slot in which ``new`` replaces ``old``, or None: same speaker and subject, and a change
    of that slot's value (see the module's docstring)."""
    if new.settled or old.settled or new.speaker != old.speaker:
        return None
    for slot in sorted(new.slots & old.slots):
        if slot in new.blocked or new.whose(slot) != old.whose(slot):
            continue
        changed = slot in new.changed
        if slot.startswith("opinion:"):
            if (slot in new.liked) != (slot in old.liked):
                return slot
            continue
        spec = _SLOT_BY_NAME.get(slot)
        if spec is None or spec.single:  # favourites hold one value
            implied = (spec is None or spec.implied) and bool(new.values - old.values) and bool(old.values - new.values)
            if changed or implied:
                return slot
        elif changed and (new.things & old.things) - _GENERIC:
            return slot
    return None


# Words every fact of a many-valued slot may share: sharing only these is not speaking of one thing.
_GENERIC = frozenset(
    _stem(w) for w in "have has had got pet pets named called name my our now new longer anymore".split()
)
