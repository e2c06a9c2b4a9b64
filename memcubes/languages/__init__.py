"""Memory for users who do not write English.

- ``identify``: which language a text is in (py3langid, restricted to the languages listed there;
  English unless another language is clearly more likely).
- ``words``: tokenising for lexical search in any script: words folded (case, diacritics), stop
  words per language, and character bigrams for scripts written without spaces (Chinese,
  Japanese, Korean), which the word index cannot split.
- ``vocabulary``: per-language word lists (first person, questions, requests, chit-chat, stop words).
- ``distill``: the heuristic reader's rules beyond English: first-person statements in
  Portuguese, Spanish, French, German and Italian; in other languages, the user's statements as
  written. Memory text is never translated.
"""

from memcubes.languages.distill import extract_facts
from memcubes.languages.identify import language_of, warm_up
from memcubes.languages.words import MAX_GRAMS, cjk_grams, query_words

__all__ = ["MAX_GRAMS", "cjk_grams", "extract_facts", "language_of", "query_words", "warm_up"]
