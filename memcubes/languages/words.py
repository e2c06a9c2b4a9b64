"""Words for lexical search, in any script.

The word index (``memcubes.lexicon``, as FTS5's ``unicode61 remove_diacritics 2`` did) splits on
Unicode word boundaries and folds case and diacritics, but it takes a run of Chinese or Japanese
characters as one token, so "我在上海的一家银行工作" never matches a question about "银行". Those scripts get
a second index of overlapping character bigrams ("上海 海的 的一 ..."), the classic CJK analysis:
most Chinese words are two characters long, and a question shares bigrams with the memory that
answers it whatever the particles around them. Korean is written with spaces, but particles stick
to the word ("고양이는", "고양이가"), so Hangul gets bigrams as well.
"""

from __future__ import annotations

import re
import unicodedata

from memcubes.languages.identify import language_of
from memcubes.languages.vocabulary import stop_words

# Han (with extensions and compatibility ideographs), Hiragana, Katakana (and halfwidth), Hangul.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\uac00-\ud7af\u1100-\u11ff\u3130-\u318f"
_CJK_RUN = re.compile(f"[{_CJK}]+")
_ENGLISH_WORD = re.compile(r"[\w][\w'’-]*")
_WORD = re.compile(rf"(?:(?![{_CJK}])\w)+(?:['’-](?:(?![{_CJK}])\w)+)*")  # CJK runs go to cjk_grams
_ELISION = re.compile(r"^(?:[ldjmnstc]|qu|all|dell|nell|sull|dall|un)['’]", re.I)  # l'hôpital, dell'anno
MAX_GRAMS = 64  # a long CJK question adds little past its first 64 bigrams
PREFIX = "*"  # ends a query word that matches every indexed word it starts
_PREFIX_FROM, _PREFIX_MIN = 6, 5


def fold(text: str) -> str:
    """Lower case without diacritics ("Ação" -> "acao"), as the word index folds."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def cjk_grams(text: str) -> list[str]:
    """Overlapping character bigrams of every CJK run, in order, each once (a one-character run
    is its own gram); empty for text without CJK."""
    grams: dict[str, None] = {}
    for run in _CJK_RUN.findall(unicodedata.normalize("NFKC", text)):
        if len(run) == 1:
            grams[run] = None
        for i in range(len(run) - 1):
            grams[run[i : i + 2]] = None
    return list(grams)


def query_words(text: str) -> list[str]:
    """Content words of a query for the word index: order kept, stop words of the query's
    language dropped (typed with or without accents), elided articles cut ("l'hôpital" ->
    "hôpital"). English queries get exactly the English analysis. Words keep their diacritics:
    the word index folds them itself, by its own rules for each script."""
    language = language_of(text)
    stop = stop_words(language)
    if language == "en":
        words = [w.strip("'’-").lower() for w in _ENGLISH_WORD.findall(text)]
        return list(dict.fromkeys(w for w in words if w and w not in stop and (len(w) > 1 or w.isdigit())))
    words = [_ELISION.sub("", w).lower() for w in _WORD.findall(text)]
    kept = (w for w in words if fold(w) not in stop and (len(w) > 1 or w.isdigit()))
    return list(dict.fromkeys(_stem(w) for w in kept))


def _stem(word: str) -> str:
    """A long word of a language the word index cannot stem becomes a prefix (``PREFIX``):
    its last letters carry gender, number and person ("alergia", "alérgica", "alérgico";
    "estudio", "estudia", "estudiante"), the start carries the meaning."""
    if len(word) < _PREFIX_FROM or not word.isalpha():
        return word
    return word[: max(_PREFIX_MIN, len(word) - 2)] + PREFIX
