"""``memproxy migrate --from sqlite:///DATA_DIR --to postgresql://...``: a data dir with a few
hundred memories, API keys and a write-back journal copied into the throwaway PostgreSQL, verified
table by table, then served from there (a search finds the memories, the keys work as before);
a target that is not empty is refused, and a copy that differs from its source is caught."""

from __future__ import annotations

import sqlite3
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from memcubes.embedder import Embedder
from memcubes.store import Store
from proxy.cli import main as cli_main
from tests.conftest import Backend, Proxy, own_proxy, proxy_settings
from tests.postgres import PostgresServer
from tests.sharing import WORDS

MASTER = "sk-migrate-master"
SECRET = "hunter2-s3cr"
USERS = ("mia", "noor", "omar")
PER_USER = 120
PREVIOUS_LAYOUT = Path(__file__).parent / "fixtures" / "previous-layout" / "data-dir.tar.gz"
RUNS = [f"I ran {n + 3} km along the {WORDS[n]} {WORDS[n + 13]} trail." for n in range(6)]


def fact(user: str, n: int, i: int) -> str:
    return f"{user.title()} keeps the {WORDS[i % 26]} {WORDS[(i * 5 + n) % 26]} crate number {i * 7 + n}."


@pytest.fixture(scope="module")
def data_dir(embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A data dir served on SQLite: 3 x 120 memories, a key and a revoked one, a journal of chats,
    a stored response."""
    path = tmp_path_factory.mktemp("sqlite-data")
    keys = {}
    with own_proxy(
        embedder, path, general_settings={"master_key": MASTER}, memory={"extraction": {"mode": "raw"}}
    ) as proxy:
        proxy.api_key = MASTER
        with proxy.http() as http:
            for n, user in enumerate(USERS):
                facts = [fact(user, n, i) for i in range(PER_USER)]
                assert http.post("/v1/memories", json={"user": user, "facts": facts, "sync": True}).status_code == 200
            for name, settings in (("kept", {"user": "mia"}), ("revoked", {"user": "noor"})):
                created = http.post("/v1/keys", json=settings).json()
                keys[name] = created["key"]
                if name == "revoked":
                    assert http.delete(f"/v1/keys/{created['id']}").json()["revoked"] is True
            for said in RUNS:
                chat = {"model": "fake", "user": "omar", "messages": [{"role": "user", "content": said}]}
                assert http.post("/v1/chat/completions", json=chat).status_code == 200
            stored = http.post("/v1/responses", json={"model": "fake", "input": "Hello there.", "user": "mia"})
            assert stored.status_code == 200, stored.text
            keys["response"] = stored.json()["id"]
        proxy.wait_writeback()
    return path, keys


def migrate(*argv: str) -> int:
    return cli_main(["migrate", *argv])


def test_a_data_dir_copied_into_postgresql_is_verified_and_served_from_there(
    data_dir: tuple[Path, dict[str, str]],
    postgres_url: str,
    backend: Backend,
    start_proxy: Callable[..., Proxy],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, keys = data_dir
    assert migrate("--from", f"sqlite://{path}", "--to", postgres_url, "--batch", "50") == 0
    out, err = capsys.readouterr()
    tables = dict(line.split(None, 1) for line in out.splitlines() if line.strip().endswith("ok"))
    assert {"cubes", "history", "spaces", "vectors", "journal", "api_keys", "audit", "meta"} <= set(tables)
    with sqlite3.connect(path / "memproxy.db") as db:
        cubes = db.execute("SELECT count(*) FROM cubes").fetchone()[0]
        journal = dict(db.execute("SELECT state, count(*) FROM journal GROUP BY state").fetchall())
    assert cubes >= PER_USER * len(USERS) and set(journal) == {"done"} and journal["done"] >= len(RUNS)
    assert tables["cubes"].split()[0] == f"{cubes:,}"
    assert f"migrate: cubes: {cubes:,} rows copied" in err and "copied and verified" in out

    settings = proxy_settings(
        backend.url,
        tmp_path / "replica",
        memory={"database_url": postgres_url},
        general_settings={"master_key": MASTER},
    )
    served = start_proxy(settings)
    served.api_key = MASTER
    with served.http() as http:
        for n, user in enumerate(USERS):  # each memory's own words find it first: its vectors came along
            query = fact(user, n, 5)
            found = http.post("/v1/memories/search", json={"user": user, "query": query}).json()["results"]
            assert found[0]["text"].endswith(query), (query, found[:2])
        assert http.get("/readyz").json()["checks"]["journal"].get("done") == journal["done"]
        listed = http.get("/v1/memories", params={"user": "omar", "limit": 500}).json()["data"]
        assert {f"user: {said}" for said in RUNS} <= {memory["content"] for memory in listed}, listed[:3]
        assert http.get(f"/v1/responses/{keys['response']}").status_code == 200
    chat = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
    with served.http() as http:
        http.headers["authorization"] = f"Bearer {keys['kept']}"
        assert http.post("/v1/chat/completions", json=chat).status_code == 200
        http.headers["authorization"] = f"Bearer {keys['revoked']}"
        refused = http.post("/v1/chat/completions", json=chat)
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, "key_revoked")

    assert migrate("--from", f"sqlite://{path}", "--to", postgres_url) == 2  # not into live data
    assert "is not empty" in capsys.readouterr().err


def test_a_copy_that_differs_from_its_source_fails_verification(
    data_dir: tuple[Path, dict[str, str]], postgres_server: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = data_dir
    url = postgres_server.fresh_database()
    with tempfile.TemporaryDirectory() as scratch:
        Store.open(Path(scratch), database_url=url).close()  # the schema, before the fault is put in
    with psycopg.connect(url, autocommit=True) as db:  # a fault on the way in: one column rewritten
        db.execute(
            "CREATE FUNCTION garble() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN NEW.created_at := '1999-01-01T00:00:00+00:00'; RETURN NEW; END $$"
        )
        db.execute("CREATE TRIGGER garbled BEFORE INSERT ON spaces FOR EACH ROW EXECUTE FUNCTION garble()")
    assert migrate("--from", f"sqlite://{path}", "--to", url) == 1
    out, err = capsys.readouterr()
    lines: dict[str, Any] = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "MISMATCH" in lines["spaces"] and lines["cubes"].endswith("ok")
    assert "the copy of spaces does not match the source" in err


def test_a_data_dir_this_version_has_not_opened_is_refused(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with tarfile.open(PREVIOUS_LAYOUT) as archive:  # vectors in Chroma, no schema_migrations
        archive.extractall(tmp_path / "old", filter="data")
    assert migrate("--from", f"sqlite://{tmp_path / 'old'}", "--to", postgres_url) == 2
    assert f"bring it up to date first (memproxy migrate --data-dir {tmp_path / 'old'})" in capsys.readouterr().err
    assert cli_main(["migrate", "--data-dir", str(tmp_path / "old")]) == 0  # its schema, not its vectors
    assert migrate("--from", f"sqlite://{tmp_path / 'old'}", "--to", postgres_url) == 2
    assert "are still in Chroma" in capsys.readouterr().err


def test_bad_arguments_are_refused_with_a_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert migrate("--from", f"sqlite://{tmp_path}", "--to", "postgresql://nobody@/none?host=/nonexistent") == 2
    assert f"no memproxy database at {tmp_path}/memproxy.db" in capsys.readouterr().err
    assert migrate("--from", "mysql://x/y", "--to", "postgresql://h/db") == 2
    assert "--from must be sqlite:///path/to/data_dir" in capsys.readouterr().err
    assert migrate("--from", f"sqlite://{tmp_path}", "--to", "sqlite:///elsewhere") == 2
    assert "--to must be a postgresql:// URL" in capsys.readouterr().err


def test_a_copy_that_fails_midway_leaves_no_rows_and_no_password_printed(
    data_dir: tuple[Path, dict[str, str]],
    postgres_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One transaction: a failure after some tables went in leaves none of their rows, so the same
    command works once the fault is gone. The URL's ``?password=`` (ignored by the test server's
    trust authentication) is printed nowhere. Raw NULs and escaped ones in a cube's JSON document
    are dropped as the memory model drops them (PostgreSQL's text and jsonb refuse them)."""
    path, _ = data_dir
    source = tmp_path / "data"
    source.mkdir()
    with sqlite3.connect(path / "memproxy.db") as db, sqlite3.connect(source / "memproxy.db") as copy:
        db.backup(copy)
    with sqlite3.connect(source / "memproxy.db") as copy:
        copy.execute(
            "UPDATE cubes SET doc = json_set(doc, '$.content', 'Mo' || char(0) || 'chi') "
            "WHERE rowid = (SELECT min(rowid) FROM cubes)"
        )
        copy.execute("UPDATE history SET reason = 'so' || char(0) WHERE seq = (SELECT min(seq) FROM history)")
    url = f"{postgres_url}&password={SECRET}"
    with tempfile.TemporaryDirectory() as scratch:
        Store.open(Path(scratch), database_url=postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as db:  # responses go in after cubes and journal
        db.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE 'disk full'; END $$")
        db.execute("CREATE TRIGGER refused BEFORE INSERT ON responses FOR EACH ROW EXECUTE FUNCTION refuse()")
    assert migrate("--from", f"sqlite://{source}", "--to", url) == 2
    out, err = capsys.readouterr()
    assert "disk full" in err and "no rows were copied" in err and "password=***" in err
    assert SECRET not in out + err + caplog.text
    with psycopg.connect(postgres_url, autocommit=True) as db:
        assert db.execute("SELECT count(*) FROM cubes").fetchone() == (0,)
        db.execute("DROP TRIGGER refused ON responses")
    assert migrate("--from", f"sqlite://{source}", "--to", url) == 0
    out, err = capsys.readouterr()
    assert "migrate: cubes: NUL characters dropped from 1 rows" in err and "history: NUL characters" in err
    assert SECRET not in out + err + caplog.text
    with psycopg.connect(postgres_url) as db:
        contents = [row[0] for row in db.execute("SELECT doc::jsonb ->> 'content' FROM cubes")]
        assert "Mochi" in contents and not any("\x00" in text for text in contents)


def test_a_malformed_url_is_refused_without_echoing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """libpq quotes the token it cannot parse (here the password): checked before any connection."""
    assert migrate("--from", f"sqlite://{tmp_path}", "--to", f"postgresql://app:{SECRET}%zz@db.internal/memproxy") == 2
    out, err = capsys.readouterr()
    assert "--to is not a valid PostgreSQL URL" in err and "must be percent-encoded" in err
    assert SECRET not in out + err + caplog.text
