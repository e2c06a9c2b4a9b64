"""The per-space lexical index (``memcubes.lexicon``): documents tokenized as FTS5's ``porter
unicode61 remove_diacritics 2`` did, BM25 as FTS5 computed it but from each space's own term
statistics, postings read by space only, and a data dir of FTS5 indexes migrated when opened."""

from __future__ import annotations

import logging
import sqlite3
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from memcubes import lexicon
from memcubes.cube import MemCube
from memcubes.languages.words import query_words
from memcubes.store import ChangeSet, Store

FIXTURE = Path(__file__).parent / "fixtures" / "previous-layout" / "data-dir.tar.gz"
TEXTS = [
    "Caroline is running a charity race for mental health awareness next Saturday.",
    "Melanie's kids love the pottery classes; they painted bowls and mugs together.",
    "We're relocating to São Paulo: the Ação Social office offered her a role in Zürich first.",
    "I've been reading 'Becoming Nicole' and it inspired me to volunteer at the LGBTQ center.",
    "Running, runs, ran: the runner's 10k personal best was 47:12 in 2023.",
    "Her daughters adopted two guinea pigs, Oscar and Bailey, from the shelter.",
    "Camping trips with the family: hiking, marshmallows and stargazing by the lake.",
    "The conference on relational databases and relativity was cancelled.",
]


def fts5(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE VIRTUAL TABLE f USING fts5 (content, tokenize = 'porter unicode61 remove_diacritics 2')")
    conn.executemany("INSERT INTO f (rowid, content) VALUES (?, ?)", enumerate(TEXTS, 1))


def test_documents_are_tokenized_as_fts5_did() -> None:
    conn = sqlite3.connect(":memory:")
    fts5(conn)
    conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab (f, 'instance')")
    for rowid, text in enumerate(TEXTS, 1):
        rows = conn.execute("SELECT term FROM v WHERE doc = ? ORDER BY offset", (rowid,)).fetchall()
        assert lexicon.terms(text) == [term for (term,) in rows]


def test_a_query_is_a_bounded_list_of_term_ranges() -> None:
    assert lexicon.query_ranges(["Ação", "alergi*", "o'brien", "*"]) == [
        ("acao", "acao"),
        ("alergi", "alergi\U0010ffff"),
        ("o", "o"),
        ("brien", "brien"),
    ]
    assert len(lexicon.query_ranges(["-".join(["x"] * 4000)])) == lexicon.MAX_RANGES


def test_bm25_is_fts5s_within_a_space(tmp_path: Path, open_store: Callable[[Path], Store]) -> None:
    """The same scores as FTS5's bm25() over the space's documents alone, prefix terms included,
    on both engines."""
    store = open_store(tmp_path / "memproxy.db")
    cubes = [MemCube(space="u", content=text) for text in TEXTS]
    store.apply(ChangeSet(cubes=[*cubes, MemCube(space="other", content="running runs running relativity")]))
    conn = sqlite3.connect(":memory:")
    fts5(conn)
    try:
        for words in (["running", "race"], ["relati*", "databases", "kids"], query_words("Where is São Paulo?")):
            match = " OR ".join(f'"{w[:-1]}"*' if w.endswith("*") else f'"{w}"' for w in words)
            expected = conn.execute("SELECT rowid, -bm25(f) FROM f WHERE f MATCH ? ORDER BY rank", (match,)).fetchall()
            found = store.lexical("u", words, limit=10)
            assert [cube_id for cube_id, _ in found] == [cubes[rowid - 1].id for rowid, _ in expected]
            assert [score for _, score in found] == pytest.approx([score for _, score in expected], rel=1e-9)
    finally:
        store.close()


def test_a_space_is_ranked_by_its_own_statistics(tmp_path: Path, open_store: Callable[[Path], Store]) -> None:
    """Another space full of a query's word neither shows up nor moves this space's scores."""
    store = open_store(tmp_path / "memproxy.db")
    try:
        mine = [MemCube(space="u", content=text) for text in TEXTS]
        store.apply(ChangeSet(cubes=mine))
        before = store.lexical("u", ["camping", "runner"], limit=10)
        store.apply(ChangeSet(cubes=[MemCube(space="v", content=f"camping trip {n}") for n in range(50)]))
        assert store.lexical("u", ["camping", "runner"], limit=10) == before
        assert {cube_id for cube_id, _ in before} == {mine[4].id, mine[6].id}
        store.delete_space("v")
        assert store.read("SELECT count(*) AS n FROM postings WHERE term = 'camp'")[0]["n"] == 1
    finally:
        store.close()


def test_a_data_dir_of_fts5_indexes_gets_postings_on_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """main@6f0406b's data dir (tests/fixtures/previous-layout): live cubes become postings, the
    deleted one does not, and the FTS5 tables are dropped."""
    with tarfile.open(FIXTURE) as archive:
        archive.extractall(tmp_path, filter="data")
    path = tmp_path / "memproxy.db"
    assert {"cubes_fts", "cubes_grams"} <= {
        row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")
    }
    with caplog.at_level(logging.INFO, logger="memcubes.lexicon"):
        store = Store.open(path)
    try:
        assert caplog.records[0].getMessage() == "building the lexical index of 5 memories"
        assert (
            store.read("SELECT name FROM sqlite_master WHERE name LIKE 'cubes_fts%' OR name LIKE 'cubes_grams%'") == []
        )
        stats = store.read("SELECT space, docs FROM lexicon_spaces ORDER BY space")
        assert [tuple(row) for row in stats] == [("user:olga", 3), ("user:piet", 2)]
        [(bees, _)] = store.lexical("user:olga", query_words("Who keeps bees?"), limit=5)
        assert "bees" in store.get(bees).content  # type: ignore[union-attr]
        assert store.lexical("user:piet", ["lisbon"], limit=5) == []
        assert [store.get(hit).content for hit, _ in store.lexical("user:piet", ["cat"], limit=5)] == [  # type: ignore[union-attr]
            "Piet's cat is called Miso."
        ]
    finally:
        store.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="memcubes.lexicon"):
        Store.open(path).close()
    assert not caplog.records
