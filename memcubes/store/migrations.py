"""Versioned schema migrations, for both engines: the ``schema_migrations`` table names those
applied; ``apply`` runs the missing ones in order, in one transaction, when a store opens (and
``memproxy migrate`` reports them).

A data dir from before this table has no row in it: its tables already exist, so every SQLite
migration is written to be a no-op on what is already there (``IF NOT EXISTS``, columns added
only when missing, an index filled only when its meta flag is absent). PostgreSQL databases start
at version 1 with today's schema.

To change the schema, append a ``Migration`` (never edit an applied one): its statements for
each engine, or a function of the connection where SQL alone cannot say it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from memcubes.cube import utcnow
from memcubes.store.engine import Connection, Engine

Step = Sequence[str] | Callable[[Engine, Connection], None]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sqlite: Step
    postgresql: Step


_SQLITE_TABLES = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS spaces (space TEXT PRIMARY KEY, key TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS cubes (
        rid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, space TEXT NOT NULL, state TEXT NOT NULL,
        content_hash TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT, pinned INTEGER NOT NULL DEFAULT 0,
        slot TEXT, hits INTEGER NOT NULL DEFAULT 0, last_hit_at TEXT, heat REAL NOT NULL DEFAULT 0,
        stable_since TEXT, doc TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS cubes_by_space ON cubes (space, state, id)",
    "CREATE INDEX IF NOT EXISTS cubes_by_hash ON cubes (space, content_hash)",
    "CREATE INDEX IF NOT EXISTS cubes_by_slot ON cubes (space, slot) WHERE slot IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS cubes_by_heat ON cubes (space, heat) WHERE heat > 0",
    """CREATE VIRTUAL TABLE IF NOT EXISTS cubes_fts USING fts5 (
        space_key, content, tokenize = 'porter unicode61 remove_diacritics 2'
    )""",
    "CREATE VIRTUAL TABLE IF NOT EXISTS cubes_grams USING fts5 (space_key, grams, tokenize = 'unicode61')",
    """CREATE TABLE IF NOT EXISTS history (
        seq INTEGER PRIMARY KEY, cube_id TEXT NOT NULL, space TEXT NOT NULL, version INTEGER NOT NULL,
        event TEXT NOT NULL, at TEXT NOT NULL, reason TEXT, doc TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS history_by_cube ON history (cube_id, seq)",
    "CREATE INDEX IF NOT EXISTS history_by_space ON history (space, seq)",
    """CREATE TABLE IF NOT EXISTS journal (
        exchange_id TEXT PRIMARY KEY, space TEXT NOT NULL, state TEXT NOT NULL, payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, error TEXT,
        result TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS journal_by_state ON journal (state, created_at)",
    "CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY, space TEXT NOT NULL, writer TEXT NOT NULL, "
    "kind TEXT NOT NULL, cubes TEXT)",
    "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, space TEXT NOT NULL, cube_id TEXT NOT NULL, "
    "op TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS vectors (
        space_key TEXT NOT NULL, cube_id TEXT NOT NULL, sentence INTEGER NOT NULL, vec BLOB NOT NULL,
        PRIMARY KEY (space_key, cube_id, sentence)
    ) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS seen (space TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (space, digest)) "
    "WITHOUT ROWID",
    # keys and the audit trail (memcubes.keystore)
    """CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL, revoked_at TEXT, doc TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY, at TEXT NOT NULL, key_id TEXT, action TEXT NOT NULL, target TEXT,
        detail TEXT NOT NULL
    )""",
    # stored responses (memcubes.response_store); per-key count and size kept by triggers
    """CREATE TABLE IF NOT EXISTS responses (
        key TEXT NOT NULL, id TEXT NOT NULL, space TEXT, created REAL NOT NULL, size INTEGER NOT NULL,
        response TEXT NOT NULL, conversation TEXT NOT NULL, PRIMARY KEY (key, id)
    )""",
    "CREATE INDEX IF NOT EXISTS responses_created ON responses (created)",
    "CREATE INDEX IF NOT EXISTS responses_key ON responses (key, created)",
    "CREATE INDEX IF NOT EXISTS responses_space ON responses (space)",
    "CREATE TABLE IF NOT EXISTS responses_totals (key TEXT PRIMARY KEY, count INTEGER NOT NULL, size INTEGER NOT NULL)",
    """CREATE TRIGGER IF NOT EXISTS responses_added AFTER INSERT ON responses BEGIN
        INSERT INTO responses_totals (key, count, size) VALUES (new.key, 1, new.size)
        ON CONFLICT (key) DO UPDATE SET count = count + 1, size = size + new.size;
    END""",
    """CREATE TRIGGER IF NOT EXISTS responses_removed AFTER DELETE ON responses BEGIN
        UPDATE responses_totals SET count = count - 1, size = size - old.size WHERE key = old.key;
    END""",
    # the undo log of imports under way (memcubes.import_log)
    """CREATE TABLE IF NOT EXISTS imports (
        id TEXT PRIMARY KEY, space TEXT NOT NULL, state TEXT NOT NULL, first_seq INTEGER NOT NULL,
        new_space INTEGER NOT NULL, heartbeat TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS import_undo (
        import_id TEXT NOT NULL, cube_id TEXT NOT NULL, prior TEXT, PRIMARY KEY (import_id, cube_id)
    ) WITHOUT ROWID""",
)

# The same tables; ``rowid`` is an explicit column where SQLite's implicit one is used. Text
# searched by the lexical index: see memcubes.store.postgres (the tables come with ``lexicon``).
_POSTGRES_TABLES = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE spaces (space TEXT PRIMARY KEY, key TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL)",
    """CREATE TABLE cubes (
        rid BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, id TEXT NOT NULL UNIQUE, space TEXT NOT NULL,
        state TEXT NOT NULL, content_hash TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT,
        pinned INTEGER NOT NULL DEFAULT 0, slot TEXT, hits BIGINT NOT NULL DEFAULT 0, last_hit_at TEXT,
        heat DOUBLE PRECISION NOT NULL DEFAULT 0, stable_since TEXT, doc TEXT NOT NULL
    )""",
    "CREATE INDEX cubes_by_space ON cubes (space, state, id)",
    "CREATE INDEX cubes_by_hash ON cubes (space, content_hash)",
    "CREATE INDEX cubes_by_slot ON cubes (space, slot) WHERE slot IS NOT NULL",
    "CREATE INDEX cubes_by_heat ON cubes (space, heat) WHERE heat > 0",
    """CREATE TABLE history (
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, cube_id TEXT NOT NULL, space TEXT NOT NULL,
        version INTEGER NOT NULL, event TEXT NOT NULL, at TEXT NOT NULL, reason TEXT, doc TEXT NOT NULL
    )""",
    "CREATE INDEX history_by_cube ON history (cube_id, seq)",
    "CREATE INDEX history_by_space ON history (space, seq)",
    """CREATE TABLE journal (
        exchange_id TEXT PRIMARY KEY, space TEXT NOT NULL, state TEXT NOT NULL, payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, error TEXT,
        result TEXT, claimed_by TEXT, lease_until DOUBLE PRECISION
    )""",
    "CREATE INDEX journal_by_state ON journal (state, created_at)",
    "CREATE INDEX journal_by_space ON journal (space)",
    "CREATE TABLE changes (seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, space TEXT NOT NULL, "
    "writer TEXT NOT NULL, kind TEXT NOT NULL, cubes TEXT)",
    "CREATE TABLE outbox (seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, space TEXT NOT NULL, "
    "cube_id TEXT NOT NULL, op TEXT NOT NULL, writer TEXT, at DOUBLE PRECISION)",
    """CREATE TABLE vectors (
        space_key TEXT NOT NULL, cube_id TEXT NOT NULL, sentence INTEGER NOT NULL, vec BYTEA NOT NULL,
        PRIMARY KEY (space_key, cube_id, sentence)
    )""",
    "CREATE TABLE seen (space TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (space, digest))",
    """CREATE TABLE api_keys (
        id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL, revoked_at TEXT, doc TEXT NOT NULL
    )""",
    """CREATE TABLE audit (
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, at TEXT NOT NULL, key_id TEXT,
        action TEXT NOT NULL, target TEXT, detail TEXT NOT NULL
    )""",
    """CREATE TABLE responses (
        rowid BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE, key TEXT NOT NULL, id TEXT NOT NULL, space TEXT,
        created DOUBLE PRECISION NOT NULL, size BIGINT NOT NULL, response TEXT NOT NULL, conversation TEXT NOT NULL,
        PRIMARY KEY (key, id)
    )""",
    "CREATE INDEX responses_created ON responses (created)",
    "CREATE INDEX responses_key ON responses (key, created)",
    "CREATE INDEX responses_space ON responses (space)",
    "CREATE TABLE responses_totals (key TEXT PRIMARY KEY, count BIGINT NOT NULL, size BIGINT NOT NULL)",
    """CREATE FUNCTION responses_totals_kept() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO responses_totals (key, count, size) VALUES (NEW.key, 1, NEW.size)
            ON CONFLICT (key) DO UPDATE SET count = responses_totals.count + 1,
                size = responses_totals.size + EXCLUDED.size;
        ELSE
            UPDATE responses_totals SET count = count - 1, size = size - OLD.size WHERE key = OLD.key;
        END IF;
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER responses_added AFTER INSERT ON responses FOR EACH ROW EXECUTE FUNCTION responses_totals_kept()",
    "CREATE TRIGGER responses_removed AFTER DELETE ON responses FOR EACH ROW EXECUTE FUNCTION responses_totals_kept()",
    """CREATE TABLE imports (
        id TEXT PRIMARY KEY, space TEXT NOT NULL, state TEXT NOT NULL, first_seq BIGINT NOT NULL,
        new_space INTEGER NOT NULL, heartbeat TEXT NOT NULL
    )""",
    """CREATE TABLE import_undo (
        import_id TEXT NOT NULL, cube_id TEXT NOT NULL, prior TEXT, PRIMARY KEY (import_id, cube_id)
    )""",
)


def _sqlite_lease_columns(engine: Engine, conn: Connection) -> None:
    """Journal claims (``Store.journal_claim``) and outbox writers, in a data dir from before them."""
    for table, added in (
        ("journal", (("claimed_by", "TEXT"), ("lease_until", "REAL"))),
        ("outbox", (("writer", "TEXT"), ("at", "REAL"))),
    ):
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})").fetchall()}
        for column, kind in added:
            if column not in columns:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


GRAMS_META = "grams_index"  # set by data dirs that filled the bigram index before migrations


def _sqlite_fill_grams(engine: Engine, conn: Connection) -> None:
    """Fill the bigram index from the live cubes (a data dir written before it existed)."""
    if conn.execute("SELECT 1 FROM meta WHERE key = ?", (GRAMS_META,)).fetchone() is not None:
        return
    rows = conn.execute(
        "SELECT rid, space, json_extract(doc, '$.content') AS content FROM cubes WHERE state = 'active'"
    ).fetchall()
    engine.reindex_text(conn, ((row["rid"], row["space"], row["content"]) for row in rows))
    conn.execute("INSERT INTO meta (key, value) VALUES (?, '1')", (GRAMS_META,))


def _nothing(engine: Engine, conn: Connection) -> None:
    """Nothing to do on this engine (its first version already has it)."""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "tables", _SQLITE_TABLES, _POSTGRES_TABLES),
    Migration(2, "journal claims and outbox writers", _sqlite_lease_columns, _nothing),
    Migration(3, "character-bigram index filled", _sqlite_fill_grams, _nothing),
)

_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)


def apply(engine: Engine, conn: Connection) -> list[Migration]:
    """Run the migrations the database lacks, in order, inside the caller's transaction (a
    replica starting at the same time waits for it); returns those applied."""
    if engine.name == "postgresql":
        conn.execute("SELECT pg_advisory_xact_lock(7142, 0)")  # replicas starting together: one migrates
    conn.execute(_TABLE)
    done = {int(row[0]) for row in conn.execute("SELECT version FROM schema_migrations").fetchall()}
    applied = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        step = migration.sqlite if engine.name == "sqlite" else migration.postgresql
        if callable(step):
            step(engine, conn)
        else:
            for statement in step:
                conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, utcnow().isoformat()),
        )
        applied.append(migration)
    return applied


def latest() -> int:
    return MIGRATIONS[-1].version
