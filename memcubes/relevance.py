"""Whether a turn wants personal context at all, before anything is retrieved for it.

Twelve memories in front of "hi" cost tokens on every turn, dilute what matters and invite the
model to bring up things nobody asked about. Most turns that need no memory say so plainly:

- small talk: greetings, thanks, acknowledgements, in several languages ("hi", "thanks, that's
  all!", "obrigado", "ありがとう");
- arithmetic ("What's 2+2?", "17 * 23");
- a generic task with nothing personal in it: an imperative to write, explain, translate, code ...
  ("Write a haiku about autumn.", "Explain how TCP works").

Everything else is retrieved for, and a turn is personal as soon as it speaks of the user ("my",
"I", "we" and their equivalents in other languages) or asks for advice that depends on who they are
("any restaurant ideas for tonight?", "what should I cook?"): implicit personalisation must keep
working, so only the plain cases above skip memory. Pure and compiled at import: it runs on every
chat request.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["NOTHING_RELEVANT", "NO_PERSONAL_CONTEXT", "PROFILE_QUERY", "asks_advice", "is_personal", "skip_reason"]

PROFILE_QUERY = (
    "About me: where I live and work, my job, my partner, children and family, my pets, what I eat, "
    "my diet and allergies, my health, my car, what I am learning, my budget and my plans."
)
"""What the floor of a personal turn retrieves: the facts that shape any advice for this user."""

NO_PERSONAL_CONTEXT = "no-personal-context"
NOTHING_RELEVANT = "nothing-relevant"  # retrieved, but none close enough (``retrieval.min_relevance``)

_SMALL_TALK_WORDS = (
    # English
    r"hi|hello|hey|hiya|yo|howdy|good\s+(?:morning|afternoon|evening|night)|bye|goodbye|see\s+you(?:\s+later)?|"
    r"thanks?(?:\s+(?:a\s+lot|so\s+much|again))?|thank\s+you(?:\s+(?:so|very)\s+much)?|thx|ty|cheers|"
    r"that'?s\s+all|that\s+is\s+all|that'?s\s+it|ok(?:ay)?|k|cool|great|nice|awesome|perfect|sure|yes|no|yep|"
    r"yeah|nope|got\s+it|sounds\s+good|lol|haha\w*|wow|hmm+|good\s+job|well\s+done|never\s+mind|nvm|"
    r"how\s+are\s+you(?:\s+doing)?|how'?s\s+it\s+going|what'?s\s+up|sup|you'?re\s+(?:welcome|great|the\s+best)|"
    r"no\s+problem|np|bye\s+for\s+now|talk\s+(?:to\s+you\s+)?later|ttyl|all\s+good|makes\s+sense|"
    # Portuguese, Spanish, French, German, Italian, Dutch
    r"ol[aá]|oi|bom\s+dia|boa\s+(?:tarde|noite)|obrigad[oa]|valeu|tchau|at[eé]\s+logo|tudo\s+bem|"
    r"hola|buen(?:os|as)\s+(?:d[ií]as|tardes|noches)|gracias|muchas\s+gracias|adi[oó]s|hasta\s+luego|vale|"
    r"bonjour|bonsoir|salut|merci(?:\s+beaucoup)?|au\s+revoir|d'accord|[cç]a\s+va|"
    r"hallo|guten\s+(?:morgen|tag|abend)|danke(?:\s+sch[oö]n)?|tsch[uü]ss|auf\s+wiedersehen|"
    r"ciao|buongiorno|buonasera|grazie(?:\s+mille)?|arrivederci|"
    r"hoi|dank\s+je(?:\s+wel)?|bedankt|doei|"
    # Japanese, Chinese, Korean
    r"こんにちは|こんばんは|おはよう(?:ございます)?|ありがとう(?:ございます)?|どうも|さようなら|"
    r"你好|您好|谢谢|謝謝|再见|再見|안녕(?:하세요)?|감사합니다|고마워"
)
_SMALL_TALK = re.compile(rf"^(?:(?:{_SMALL_TALK_WORDS})[\s,.!?~。！？、]*)+$", re.I)
_ARITHMETIC = re.compile(
    r"^(?:what(?:'s|\s+is)|how\s+much\s+is|calculate|compute|solve)?\s*[-+*/×÷^()\d\s.,=x]+\??$", re.I
)
# An imperative that starts a generic task (nothing about the user unless a personal word says so).
_TASK = re.compile(
    r"^(?:please\s+|can\s+you\s+|could\s+you\s+)?(?:write|compose|draft|rewrite|rephrase|paraphrase|proofread|"
    r"translate|summari[sz]e|explain|define|describe|outline|list|calculate|convert|solve|prove|derive|"
    r"implement|code|program|debug|refactor|fix\s+(?:this|the|my)\s+(?:code|bug|function|query|regex)|"
    r"generate|create\s+an?\s+(?:function|script|class|regex|poem|story|haiku|list|table)|"
    r"tell\s+me\s+(?:a\s+joke|a\s+story|a\s+(?:fun\s+)?fact|about\s+(?:the|a|an)\b)|give\s+me\s+a\s+(?:joke|"
    r"riddle|fun\s+fact|synonym|word)|what\s+(?:does|do)\s+\S+\s+mean|how\s+do\s+(?:you|i)\s+(?:say|spell|"
    r"pronounce)|escreve|traduz|explica|escribe|traduce|écris|traduis|explique|schreib|übersetze|"
    r"erkläre|scrivi|traduci|spiega)\b",
    re.I,
)
# Advice that depends on who the user is, said or not ("any restaurant ideas for tonight?").
_ADVICE_WORDS = (
    r"recommend\w*|suggest\w*|ideas?|advice|advise|tips?|should\s+(?:i|we)|what\s+can\s+(?:i|we)|"
    r"plan\s+(?:my|our|a)|tonight|this\s+weekend"
)
_ADVICE = re.compile(rf"\b(?:{_ADVICE_WORDS})\b", re.I)
# Words that make a turn about the user (or ask advice that depends on who they are).
_PERSONAL = re.compile(
    rf"\b(?:i|i'm|i've|i'd|i'll|me|my|mine|myself|we|we're|our|ours|us|{_ADVICE_WORDS}|"
    r"eu|meu|minha|meus|minhas|n[oó]s|nosso|nossa|yo|mi|mis|nosotros|nuestr[oa]s?|je|j'|moi|mon|ma|mes|nous|"
    r"notre|nos|ich|mich|mir|mein\w*|wir|unser\w*|io|mio|mia|miei|mie|noi|nostr[oaie])\b"
    r"|私|僕|俺|わたし|我的|我们|我們|我|저는|제",
    re.I,
)


def skip_reason(text: str) -> str | None:
    """Why this turn needs no retrieved memory (``NO_PERSONAL_CONTEXT``), or None: retrieve."""
    words = " ".join(unicodedata.normalize("NFKC", text).replace("’", "'").split())
    if not words:
        return NO_PERSONAL_CONTEXT
    if _SMALL_TALK.match(words) or _ARITHMETIC.match(words):
        return NO_PERSONAL_CONTEXT
    if _TASK.match(words) and not _PERSONAL.search(words):
        return NO_PERSONAL_CONTEXT
    return None


def is_personal(text: str) -> bool:
    """The turn speaks of the user, or asks advice that depends on who they are. An impersonal
    turn ("What is the capital of Australia?", "When did Caroline move?") gets memory only when
    the space holds something close to it (``retrieval.impersonal_min_relevance``)."""
    return _PERSONAL.search(text.replace("’", "'")) is not None


def asks_advice(text: str) -> bool:
    """The turn asks for suggestions, plans or recommendations: the answer depends on the user's
    circumstances even when no memory is similar to the words ("any ideas for dinner?")."""
    return _ADVICE.search(text.replace("’", "'")) is not None
