"""Copying a data dir's SQLite database into PostgreSQL (``memproxy migrate --from sqlite:///DIR
--to postgresql://...``), then proving the copy: per table, the row count and a checksum computed
on both sides must agree.

The source is read in one read transaction: SQLite in WAL mode gives it a consistent snapshot
while a running proxy keeps writing (its later writes are not copied: stop it, or point it at the
database, before the replicas take over). The target must have the store's schema (created by
``prepare``, the same upgrade a server runs when it starts) and hold no rows yet in the tables
copied: a copy merged into live data could not be verified. The source must be up to date with
this version (its schema migrations applied, its vectors in SQLite): it is never written.

Every table the two databases have in common is copied but those listed in ``DERIVED`` (rebuilt
by the target itself, or meaningful only to the processes of one data dir). The column types are
the target's: a SQLite value is converted to them (JSON text to ``jsonb``, ISO text to
``timestamptz``, integers to ``boolean``...), and the checksum is computed over the converted
values on the source side and over the values read back on the target side, so it proves that
what was meant to be written is what PostgreSQL holds. It is the sum of a hash per row (order
free: the two databases need not sort text alike), modulo 2**64, so a row copied twice or lost
shows.

Rows go in with ``COPY`` in batches of ``batch`` rows; progress goes to ``progress`` (stderr).
Serial and identity columns get their sequences moved past the largest value copied.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from memcubes.cube import without_nul
from memcubes.database_url import split
from memcubes.store import migrations
from memcubes.vector_migration import LAYOUT, LAYOUT_META

# Tables of the SQLite file that are not copied, and why.
DERIVED = {
    "changes": "the change log the processes of one data dir poll (each database keeps its own)",
    "responses_totals": "kept by the target's triggers as responses are copied",
    "schema_migrations": "each database's own: the target's written by its migrations",
}
# A table SQLite keys by its implicit ``rowid`` whose PostgreSQL twin has the column (the order
# rows were written in, which the store reads): copied as a column.
ROWID = "rowid"
# Written by the target's store when it is opened (schema facts such as the lexical tokenizer's
# version): the source's rows, of the same version, replace them.
REPLACED = {"meta"}
DATABASE_FILE = "memproxy.db"
_MASK = (1 << 64) - 1
# A NUL escaped in JSON text: ``\u0000`` after an even number of backslashes (not itself escaped).
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
_PROGRESS_SECONDS = 2.0


class TransferError(Exception):
    """Why a copy cannot start or did not verify: a sentence for the person running it."""


@dataclass(frozen=True)
class TableCheck:
    """One table's rows and checksum on both sides."""

    table: str
    rows: int
    digest: int
    target_rows: int
    target_digest: int

    @property
    def ok(self) -> bool:
        return (self.rows, self.digest) == (self.target_rows, self.target_digest)


@dataclass(frozen=True)
class _Column:
    name: str
    convert: Callable[[Any], Any]


def sqlite_database(url: str) -> Path:
    """The SQLite file named by ``sqlite:///path/to/data`` (a data dir, or its database file)."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path:
        raise TransferError(f"--from must be sqlite:///path/to/data_dir, not {url!r}")
    path = Path(unquote(parts.path))
    path = path / DATABASE_FILE if path.is_dir() else path
    if not path.is_file():
        raise TransferError(f"no memproxy database at {path}")
    return path


def transfer(
    source: Path,
    target_url: str,
    *,
    prepare: Callable[[str], None],
    batch: int = 2000,
    progress: TextIO,
) -> list[TableCheck]:
    """Copy ``source`` into the PostgreSQL database of ``target_url`` (its schema made by
    ``prepare(target_url)`` first) and return each table's check; raises ``TransferError`` when
    the copy cannot be made (the target is not empty, a table or column has no counterpart).

    The rows go in one transaction, committed only when every table verifies: a copy that fails
    or does not match leaves the target without rows (its schema stays), so it can be run again."""
    conninfo, password = split(target_url)
    prepare(target_url)
    reader = sqlite3.connect(f"file:{source}?mode=ro", uri=True, isolation_level=None)
    try:
        reader.execute("BEGIN")  # one snapshot for the copy and the source's checksums
        _check_source(reader, source)
        with psycopg.connect(conninfo, password=password) as target:
            plan = _plan(reader, target)
            checks = []
            for table, columns in plan.items():
                if table in REPLACED:
                    target.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
                rows, digest = _copy(reader, target, table, columns, batch=batch, progress=progress)
                target_rows, target_digest = _target_digest(target, table, [c.name for c in columns])
                checks.append(TableCheck(table, rows, digest, target_rows, target_digest))
            if all(check.ok for check in checks):
                target.commit()
            else:
                target.rollback()
            return checks
    finally:
        reader.close()


def _check_source(reader: sqlite3.Connection, source: Path) -> None:
    """Refuse a data dir this version has not brought up to date (it is read, never written): its
    schema behind, or its vectors still in Chroma (the layout before vectors moved into SQLite)."""
    tables = {row[0] for row in reader.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    version = (
        reader.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
        if "schema_migrations" in tables
        else None
    )
    if version is None or version < migrations.latest():
        raise TransferError(
            f"{source} has schema version {version or 0}, this memproxy writes {migrations.latest()}: bring it up "
            f"to date first (memproxy migrate --data-dir {source.parent})"
        )
    layout = reader.execute("SELECT value FROM meta WHERE key = ?", (LAYOUT_META,)).fetchone()
    if (layout is None or layout[0] != LAYOUT) and reader.execute("SELECT 1 FROM cubes LIMIT 1").fetchone():
        raise TransferError(
            f"the vectors of {source.parent} are still in Chroma (the layout before they moved into SQLite): "
            "serve it once with this memproxy, which moves them, then copy it"
        )


def _plan(reader: sqlite3.Connection, target: psycopg.Connection[Any]) -> dict[str, list[_Column]]:
    """The tables to copy and their columns' conversions; refuses what cannot be copied whole."""
    target_columns = _target_columns(target)
    plan = {}
    for table in _source_tables(reader):
        source = [row[1] for row in reader.execute(f"PRAGMA table_info({_quoted(table)})")]
        if ROWID in target_columns.get(table, {}) and ROWID not in source and _has_rowid(reader, table):
            source.append(ROWID)
        rows = reader.execute(f"SELECT count(*) FROM {_quoted(table)}").fetchone()[0]
        if table not in target_columns:
            if rows:
                raise TransferError(f"the target has no table {table} for the {rows} rows of the source's")
            continue
        types = target_columns[table]
        lost = [name for name in source if name not in types]
        if lost:
            raise TransferError(f"the target's table {table} has no column {', '.join(lost)}")
        held = target.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
        if held and held[0] and table not in REPLACED:
            raise TransferError(f"the target is not empty ({table} holds {held[0]} rows): migrate into a new database")
        plan[table] = [_Column(name, _converter(table, name, types[name])) for name in source]
    return plan


def _quoted(name: str) -> str:
    """A SQLite identifier in double quotes, an embedded double quote doubled."""
    return '"' + name.replace('"', '""') + '"'


def _has_rowid(reader: sqlite3.Connection, table: str) -> bool:
    try:
        reader.execute(f"SELECT rowid FROM {_quoted(table)} LIMIT 1")
    except sqlite3.OperationalError:  # WITHOUT ROWID
        return False
    return True


def _source_tables(reader: sqlite3.Connection) -> list[str]:
    """The source's tables but SQLite's own, full-text indexes (virtual tables and their shadow
    tables: rebuilt by the target's own lexical index) and ``DERIVED``."""
    found = reader.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
    virtual = [name for name, text in found if (text or "").upper().startswith("CREATE VIRTUAL TABLE")]
    return [
        name
        for name, _ in found
        if not name.startswith("sqlite_")
        and name not in DERIVED
        and not any(name == v or name.startswith(f"{v}_") for v in virtual)
    ]


def _target_columns(target: psycopg.Connection[Any]) -> dict[str, dict[str, str]]:
    """Table -> column -> data type of the target's current schema (generated columns left out:
    the target computes them)."""
    rows = target.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND is_generated = 'NEVER'"
    ).fetchall()
    tables: dict[str, dict[str, str]] = {}
    for table, column, kind in rows:
        tables.setdefault(table, {})[column] = kind
    return tables


def _converter(table: str, column: str, kind: str) -> Callable[[Any], Any]:
    """How a SQLite value of ``table.column`` becomes a value of the target's type ``kind``."""
    simple: dict[str, Callable[[Any], Any]] = {
        "text": _text,
        "character varying": _text,
        "bigint": int,
        "integer": int,
        "smallint": int,
        "double precision": float,
        "real": float,
        "numeric": Decimal,
        "boolean": bool,
        "bytea": bytes,
        "json": _json,
        "jsonb": _json,
        "timestamp with time zone": _timestamp,
    }
    if kind not in simple:
        raise TransferError(f"{table}.{column} is of type {kind}, which migrate cannot copy into")
    convert = simple[kind]
    return lambda value: None if value is None else convert(value)


def _text(value: Any) -> str:
    """SQLite text as PostgreSQL can hold it: NUL characters dropped, as the memory model drops
    them (``memcubes.cube``). In text that is JSON (a cube's document) their ``\\u0000`` escapes
    go too: PostgreSQL's text keeps those, but its jsonb, which the store's queries cast documents
    to, refuses them, and one such document would fail every query over its space."""
    text = str(value).replace("\x00", "")
    if "\\u0000" in text and _is_json(text):
        text = _JSON_NUL.sub(r"\1", text)
    return text


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _json(value: Any) -> Any:
    return without_nul(json.loads(value))


def _timestamp(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _copy(
    reader: sqlite3.Connection,
    target: psycopg.Connection[Any],
    table: str,
    columns: Sequence[_Column],
    *,
    batch: int,
    progress: TextIO,
) -> tuple[int, int]:
    """Copy one table in batches; returns its source row count and checksum."""
    total = reader.execute(f"SELECT count(*) FROM {_quoted(table)}").fetchone()[0]
    names = ", ".join(_quoted(c.name) for c in columns)
    cursor = reader.execute(f"SELECT {names} FROM {_quoted(table)}")
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
    )
    copied = digest = cleaned = 0
    shown = time.monotonic()
    with target.cursor() as out, out.copy(statement) as copy:
        while chunk := cursor.fetchmany(batch):
            for row in chunk:
                values = [column.convert(value) for column, value in zip(columns, row, strict=True)]
                cleaned += any(
                    isinstance(v, str) and isinstance(c, str) and v != c for v, c in zip(row, values, strict=True)
                )
                digest = (digest + _row_hash(values)) & _MASK
                copy.write_row([Jsonb(v) if isinstance(v, dict | list) else v for v in values])
            copied += len(chunk)
            if time.monotonic() - shown >= _PROGRESS_SECONDS:
                print(f"migrate: {table}: {copied:,}/{total:,} rows", file=progress, flush=True)
                shown = time.monotonic()
    _advance_sequences(target, table, columns)
    if cleaned:
        print(
            f"migrate: {table}: NUL characters dropped from {cleaned:,} rows (PostgreSQL text cannot hold them)",
            file=progress,
            flush=True,
        )
    print(f"migrate: {table}: {copied:,} rows copied", file=progress, flush=True)
    return copied, digest


def _advance_sequences(target: psycopg.Connection[Any], table: str, columns: Sequence[_Column]) -> None:
    """Serial and identity columns: their sequence past the largest value copied."""
    for column in columns:
        found = target.execute("SELECT pg_get_serial_sequence(%s, %s)", (table, column.name)).fetchone()
        if found and found[0]:
            target.execute(
                sql.SQL("SELECT setval(%s, max({}), true) FROM {} HAVING max({}) IS NOT NULL").format(
                    sql.Identifier(column.name), sql.Identifier(table), sql.Identifier(column.name)
                ),
                (found[0],),
            )


def _target_digest(target: psycopg.Connection[Any], table: str, names: Sequence[str]) -> tuple[int, int]:
    """The row count and checksum of ``table`` as the target holds it (streamed: a server-side cursor)."""
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(name) for name in names), sql.Identifier(table)
    )
    with target.cursor(name=f"verify_{table}") as cursor:
        cursor.itersize = 2000
        cursor.execute(query)
        rows, digest = _digest(cursor)
    return rows, digest


def _digest(rows: Iterable[Sequence[Any]]) -> tuple[int, int]:
    count = digest = 0
    for row in rows:
        count += 1
        digest = (digest + _row_hash(row)) & _MASK
    return count, digest


def _row_hash(values: Sequence[Any]) -> int:
    text = json.dumps([_canonical(v) for v in values], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _canonical(value: Any) -> Any:
    """One spelling per value whichever driver returned it (JSON keeps dicts, lists and numbers)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def report(checks: Sequence[TableCheck]) -> Iterator[str]:
    """One line per table: rows and whether the checksums agree."""
    width = max((len(check.table) for check in checks), default=0)
    for check in checks:
        verdict = (
            "ok"
            if check.ok
            else f"MISMATCH: target {check.target_rows:,} rows, checksum {check.target_digest:016x} "
            f"(source {check.digest:016x})"
        )
        yield f"{check.table:<{width}}  {check.rows:>10,} rows  {verdict}"
