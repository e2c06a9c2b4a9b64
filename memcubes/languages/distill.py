"""The heuristic reader beyond English.

English keeps its own rules (``memcubes.heuristics``), unchanged: a message goes elsewhere only
when the identifier is sure of another language (never the case for a LOCOMO turn) or, for a
short sentence it is unsure of, when more of its words belong to the guessed language than to
English. Then the language decides:

- Portuguese, Spanish, French, German, Italian: a sentence is kept when the speaker states
  something about themselves: a first-person pronoun or possessive, or a first-person verb form,
  within its first words ("Moro em Coimbra com a minha avó.", "Meine Schwester heißt Greta.");
  questions, requests to the assistant, greetings and "if I were ..." are dropped, and of
  "Sou vegetariano, o que devo cozinhar?" the statement before the question is kept.
- any other language identified surely (``identify.language_of``): every sentence that is not a
  question and not a bare greeting is kept as written. The rules cannot tell a fact from small
  talk there, and keeping a little too much is better than dropping everything.

Sentences are stored as the user wrote them: never translated, never rephrased.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator

from memcubes import heuristics
from memcubes.languages.identify import ENGLISH, identify, language_of
from memcubes.languages.vocabulary import ENGLISH_STOP, VOCABULARIES, Vocabulary
from memcubes.languages.words import cjk_grams, fold
from memcubes.sentences import split_sentences

_CODE_BLOCK = re.compile(r"```.*?(?:```|\Z)", re.S)
_CJK_SENTENCE_END = re.compile(r"(?<=[。！？])")
_LETTERS = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")
_QUESTION_MARKS = ("?", "¿", "？", "؟")
_CJK_QUESTION_END = re.compile(r"(?:か|吗|嗎|呢)[。.!！]?$")  # a question without its mark
_FIRST_WORDS = 5  # the speaker is the subject within the first few words ("Desde 2019 vivo en ...")
_MIN_WORDS, _MAX_WORDS = 2, 60  # two words: "Sou vegetariano."
_MIN_STATED_WORDS, _MIN_STATED_GRAMS = 3, 3  # in a language without rules


def _sentences(text: str) -> Iterator[str]:
    for sentence in split_sentences(_CODE_BLOCK.sub("\n", text)):
        for piece in _CJK_SENTENCE_END.split(sentence):
            if piece.strip():
                yield piece.strip()


def _tidy(sentence: str) -> str:
    sentence = " ".join(sentence.split()).strip(" ,;:-–—")
    if sentence and sentence[-1].isalnum():
        sentence += "."
    return sentence[:1].upper() + sentence[1:]


def _is_question(sentence: str) -> bool:
    return any(mark in sentence for mark in _QUESTION_MARKS) or bool(_CJK_QUESTION_END.search(sentence))


def _statement(sentence: str, *, vocabulary: Vocabulary) -> str | None:
    """The part of ``sentence`` that states a first-person fact, or None."""
    sentence = vocabulary.remember.sub("", sentence, count=1)
    if _is_question(sentence):
        # "Sou vegetariano, o que devo cozinhar?": the clause before the question may be a statement.
        head, comma, _ = sentence.partition(",")
        return _statement(head, vocabulary=vocabulary) if comma else None
    folded = fold(sentence)
    words = _LETTERS.findall(folded.replace("'", " ").replace("’", " "))
    if not _MIN_WORDS <= len(words) <= _MAX_WORDS:
        return None
    if (
        words[0] in vocabulary.questions
        or words[0] in vocabulary.hypothetical
        or vocabulary.requests.match(folded)
        or all(word in vocabulary.chitchat for word in words)
    ):
        return None
    # The speaker is the subject near the start of the sentence or of one of its clauses
    # ("Antes vivía en Bilbao, pero me mudé a Valencia.").
    for clause in folded.split(","):
        opening = _LETTERS.findall(clause.replace("'", " ").replace("’", " "))[:_FIRST_WORDS]
        if vocabulary.first_person.intersection(opening) or vocabulary.verbs.intersection(opening):
            return sentence
    return None


def _kept_as_written(sentence: str) -> str | None:
    """A statement in a language without rules: anything but a question or a bare greeting."""
    if _is_question(sentence):
        return None
    if len(cjk_grams(sentence)) >= _MIN_STATED_GRAMS or len(_LETTERS.findall(sentence)) >= _MIN_STATED_WORDS:
        return sentence
    return None


def _more_than_english(text: str, vocabulary: Vocabulary) -> bool:
    """Whether a text whose language is only a guess reads more like that language than like
    English: more of its words are the language's stop words, pronouns and verbs."""
    words = _LETTERS.findall(fold(text).replace("'", " "))
    own = vocabulary.stop | vocabulary.first_person | vocabulary.verbs
    return sum(word in own for word in words) > sum(word in ENGLISH_STOP for word in words)


def _rule_for(text: str) -> Callable[[str], str | None] | None:
    """What keeps a sentence of this message, or None when it is English."""
    language, _ = identify(text)
    sure = language_of(text)
    if sure != ENGLISH:
        vocabulary = VOCABULARIES.get(sure)
        return _kept_as_written if vocabulary is None else functools.partial(_statement, vocabulary=vocabulary)
    vocabulary = VOCABULARIES.get(language)
    if vocabulary is not None and _more_than_english(text, vocabulary):
        # a short sentence the identifier is unsure of ("Moro no Porto.")
        return functools.partial(_statement, vocabulary=vocabulary)
    return None


def extract_facts(text: str) -> list[str]:
    """Statements worth remembering about the speaker, from one message, in its own language."""
    rule = _rule_for(text)
    if rule is None:
        return heuristics.extract_facts(text)
    kept: dict[str, str] = {}
    for sentence in _sentences(text):
        statement = rule(sentence)
        if statement is not None and (fact := _tidy(statement)):
            kept.setdefault(heuristics.normalize(fact), fact)
    return list(kept.values())
