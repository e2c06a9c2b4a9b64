"""Lexical search that leads by space: postings keyed (space, term, cube), BM25 from the term
statistics kept beside them, in SQL that SQLite and PostgreSQL both run.

One FTS5 index over every space made each query term's doclist span all spaces (12 ms of a cold
search at a million memories); here a query reads only its own space's postings of its terms, a
range of the primary key. What FTS5 did is done in Python or plain SQL:

- **Tokenizing** (``terms``) as FTS5's ``porter unicode61 remove_diacritics 2`` did: Unicode
  letters and digits make words, case and diacritics are folded, ASCII words of three letters or
  more are Porter-stemmed (``snowballstemmer``'s "porter", the original algorithm, as FTS5's).
  Queries go through the same function, so a query word meets the documents' stems.
- **Chinese, Japanese and Korean bigrams** (``memcubes.languages.words.cjk_grams``) are postings
  too, their terms marked with ``GRAM`` (a word never holds it) and counted apart: a second field.
- **BM25** as FTS5 computed it (k1 = 1.2, b = 0.75, idf = ln((N - n + 0.5) / (n + 0.5)) with a floor
  just above 0, a prefix term's frequency summed over the words it starts), except that N,
  n and the mean length are the space's own (per-space idf: one user's vocabulary does not
  weigh on another's ranking).
- **Postings rows** hold the term frequency and the document's length, so the score needs no
  join but the space's statistics (``lexicon_spaces``, one row per space and its integer id).

A cube's postings are deleted from its own text (tokenized again: the tokenizer is versioned in
``VERSION``, and a data dir indexed by another version is indexed again when opened), so a purged
memory leaves no term row. What is engine-specific: ``SQLITE_SCHEMA`` (PostgreSQL's wants an
identity ``id`` and ``term TEXT COLLATE "C"``, so that a prefix's range holds by code point),
``prepare``, ``rebuild`` (it reads SQLite's JSON documents: only an SQLite data dir had FTS5
indexes) and the ``?`` placeholders (psycopg's are ``%s``).
"""

from __future__ import annotations

import functools
import logging
import math
import re
import sqlite3
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import snowballstemmer

from memcubes.languages.words import PREFIX, cjk_grams

log = logging.getLogger(__name__)

VERSION = "1"  # of the tokenizer and layout: a data dir indexed by another is indexed again
META = "lexicon"
GRAM = "#"  # starts a bigram's term: words are letters and digits only
K1, B = 1.2, 0.75  # FTS5's bm25()
_IDF_FLOOR = 1e-6  # FTS5's: a term in more than half the documents still counts a little
_STEM_FROM, _STEM_UP_TO = 3, 64  # FTS5's porter leaves shorter and longer tokens as they are
_TOP = chr(0x10FFFF)  # sorts after every character: ends a prefix's term range
_PROGRESS_SECONDS = 2.0
MAX_RANGES = 128  # of a query: a hyphenated "word" of thousands of parts is one query word
_REBUILD_BATCH = 10_000

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS lexicon_spaces (
    id INTEGER PRIMARY KEY, space TEXT NOT NULL UNIQUE,
    docs INTEGER NOT NULL DEFAULT 0, length INTEGER NOT NULL DEFAULT 0,
    gram_docs INTEGER NOT NULL DEFAULT 0, gram_length INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS postings (
    space INTEGER NOT NULL, term TEXT NOT NULL, rid INTEGER NOT NULL, tf INTEGER NOT NULL, dl INTEGER NOT NULL,
    PRIMARY KEY (space, term, rid)
) WITHOUT ROWID;
"""
# The tables this module replaced: dropped once their contents are postings.
FTS_TABLES = ("cubes_fts", "cubes_grams")

_WORD = re.compile(r"[^\W_]+")
_porter = snowballstemmer.stemmer("porter")


class Cursor(Protocol):
    """What a DB-API connection or cursor offers here (sqlite3's and psycopg's both do)."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...
    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> Any: ...


@dataclass(frozen=True)
class Field:
    """A searched field: its statistics' columns in ``lexicon_spaces``."""

    docs: str
    length: str


WORDS = Field("docs", "length")
GRAMS = Field("gram_docs", "gram_length")


@functools.lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    if not word.isascii() or word.isdigit() or not _STEM_FROM <= len(word) <= _STEM_UP_TO:
        return word  # (Porter leaves digits alone: a number, often unique, need not fill the cache)
    return str(_porter.stemWord(word))


def _fold(text: str) -> str:
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFD", text.lower())
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


def terms(text: str) -> list[str]:
    """The indexed words of ``text``, in order: folded and stemmed as FTS5's porter unicode61 did."""
    return [_stem(word) for word in _WORD.findall(_fold(text))]


@dataclass(frozen=True)
class Document:
    """A cube's postings: term frequencies and lengths, words and bigrams."""

    words: Counter[str]
    length: int
    grams: list[str]

    @classmethod
    def of(cls, content: str) -> Document:
        words = terms(content)
        return cls(Counter(words), len(words), [GRAM + gram for gram in cjk_grams(content)])

    def rows(self, space_id: int, rid: int) -> list[tuple[int, str, int, int, int]]:
        rows = [(space_id, term, rid, tf, self.length) for term, tf in self.words.items()]
        return rows + [(space_id, gram, rid, 1, len(self.grams)) for gram in self.grams]


def prepare(conn: sqlite3.Connection) -> None:
    """Give a SQLite connection ``ln`` where its library was built without the math functions
    (PostgreSQL has it)."""
    try:
        conn.execute("SELECT ln(1)")
    except sqlite3.OperationalError:
        conn.create_function("ln", 1, _ln, deterministic=True)


def _ln(value: float) -> float:
    return math.log(value)


def add(conn: Cursor, space: str, rid: int, content: str) -> None:
    """Index a live cube's text; the space gets its integer id with its first document."""
    doc = Document.of(content)
    sid = int(
        conn.execute(
            "INSERT INTO lexicon_spaces AS s (space, docs, length, gram_docs, gram_length) VALUES (?, 1, ?, ?, ?) "
            "ON CONFLICT (space) DO UPDATE SET docs = s.docs + 1, length = s.length + excluded.length, "
            "gram_docs = s.gram_docs + excluded.gram_docs, gram_length = s.gram_length + excluded.gram_length "
            "RETURNING id",
            (space, doc.length, 1 if doc.grams else 0, len(doc.grams)),
        ).fetchone()[0]
    )
    conn.executemany("INSERT INTO postings (space, term, rid, tf, dl) VALUES (?, ?, ?, ?, ?)", doc.rows(sid, rid))


def remove(conn: Cursor, space: str, rid: int, content: str) -> None:
    """Take a cube's text out of the index (nothing happens when it was not in it)."""
    row = conn.execute("SELECT id FROM lexicon_spaces WHERE space = ?", (space,)).fetchone()
    if row is None:
        return
    doc = Document.of(content)
    keys = [(sid, term, rid) for sid, term, rid, _, _ in doc.rows(int(row[0]), rid)]
    # rowcount: the rows deleted by all of them (sqlite3 and psycopg 3 both sum it)
    if conn.executemany("DELETE FROM postings WHERE space = ? AND term = ? AND rid = ?", keys).rowcount > 0:
        conn.execute(
            "UPDATE lexicon_spaces SET docs = docs - 1, length = length - ?, "
            "gram_docs = gram_docs - ?, gram_length = gram_length - ? WHERE id = ?",
            (doc.length, 1 if doc.grams else 0, len(doc.grams), row[0]),
        )


def drop_space(conn: Cursor, space: str) -> None:
    """Forget a space's postings and statistics."""
    conn.execute("DELETE FROM postings WHERE space IN (SELECT id FROM lexicon_spaces WHERE space = ?)", (space,))
    conn.execute("DELETE FROM lexicon_spaces WHERE space = ?", (space,))


def query_ranges(words: Sequence[str], *, grams: bool = False) -> list[tuple[str, str]]:
    """Analysed query words (a trailing ``PREFIX`` asks for every word it starts) as term ranges,
    tokenized as documents are; a word of several tokens ("o'brien") gives each of them."""
    ranges: list[tuple[str, str]] = []
    for word in words:
        if grams:
            ranges.append((GRAM + word, GRAM + word))
            continue
        prefix = word.endswith(PREFIX)
        tokens = terms(word.rstrip(PREFIX))
        for i, token in enumerate(tokens):
            last = prefix and i == len(tokens) - 1
            ranges.append((token, token + _TOP if last else token))
    return ranges[:MAX_RANGES]


def search_sql(field: Field, count: int) -> str:
    """BM25 of a space's cubes for ``count`` term ranges, best first, in one statement.
    Parameters: (index, low, high) per range, the space, the result limit."""
    ranges = ", ".join("(?, ?, ?)" for _ in range(count))
    avgdl = f"(s.{field.length} * 1.0 / s.{field.docs})"
    idf = f"ln((s.{field.docs} - n.n + 0.5) / (n.n + 0.5))"
    return (
        f"WITH q (qi, lo, hi) AS (VALUES {ranges}), "
        f"s AS (SELECT id, {field.docs}, {field.length} FROM lexicon_spaces WHERE space = ?), "
        "h AS (SELECT q.qi AS qi, p.rid AS rid, SUM(p.tf) AS tf, MAX(p.dl) AS dl FROM q, s, postings p "
        "WHERE p.space = s.id AND p.term BETWEEN q.lo AND q.hi GROUP BY q.qi, p.rid), "
        "n AS (SELECT qi, COUNT(*) AS n FROM h GROUP BY qi), "
        f"t AS (SELECT h.rid AS rid, SUM(CASE WHEN {idf} > 0 THEN {idf} ELSE {_IDF_FLOOR} END "
        f"* h.tf * {K1 + 1} / (h.tf + {K1} * ({1 - B} + {B} * h.dl / {avgdl}))) AS score "
        "FROM h JOIN n ON n.qi = h.qi, s GROUP BY h.rid ORDER BY score DESC, h.rid LIMIT ?) "
        "SELECT c.id AS id, t.score AS score FROM t JOIN cubes c ON c.rid = t.rid ORDER BY t.score DESC, t.rid"
    )


def search_params(ranges: Sequence[tuple[str, str]], space: str, limit: int) -> list[Any]:
    return [*(value for i, (lo, hi) in enumerate(ranges) for value in (i, lo, hi)), space, limit]


def rebuild(conn: sqlite3.Connection) -> int:
    """Index every live cube afresh and drop the FTS5 tables (a data dir written before the
    postings, or by another tokenizer version); returns the cubes indexed."""
    conn.execute("DELETE FROM postings")
    conn.execute("DELETE FROM lexicon_spaces")
    total = int(conn.execute("SELECT count(*) FROM cubes WHERE state = 'active'").fetchone()[0])
    if total:
        log.info("building the lexical index of %d memories", total)
    started = last = time.monotonic()
    done = 0
    after = -1
    while rows := conn.execute(
        "SELECT rid, space, json_extract(doc, '$.content') FROM cubes WHERE state = 'active' AND rid > ? "
        "ORDER BY rid LIMIT ?",
        (after, _REBUILD_BATCH),
    ).fetchall():
        for rid, space, content in rows:
            add(conn, space, rid, content)
        after, done = rows[-1][0], done + len(rows)
        now = time.monotonic()
        if now - last >= _PROGRESS_SECONDS:
            last = now
            log.info("lexical index: %d/%d memories, %.0f s", done, total, now - started)
    for table in FTS_TABLES:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (META, VERSION))
    if total:
        log.info("lexical index built: %d memories in %.0f s", done, time.monotonic() - started)
    return done
