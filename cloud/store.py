"""Durable store: SQLite (WAL) by default, PostgreSQL by URL, through the same code and SQL.

URLs: ``sqlite:///relative/or/abs.db`` (``sqlite:////abs/path.db`` also works, ``sqlite://:memory:``
for throwaway stores), ``postgresql://user:pass@host:port/dbname`` (psycopg 3).

The SQL is written once with ``?`` placeholders and portable types; the only per-backend
differences are the placeholder (psycopg takes ``%s``) and the binary column type. Schema
changes are numbered migrations recorded in ``schema_migrations``, applied in order at open.
Every batch of windows is written in one transaction before the edge is acked, and the
aggregator's per-dancer/per-session state is saved in the same transaction, so a restart
resumes where it stopped. SQLite runs with ``journal_mode=WAL`` and ``synchronous=NORMAL``:
committed data survives a crash or restart of the process (a power cut may lose the last
commits; set ``DANCEWIRE_SQLITE_SYNC=FULL`` to fsync each commit).

Retention: ``prune(days)`` deletes windows, results and idle dancers/sessions older than that.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from cloud.records import BeatGridIn, WindowIn, WindowResult
from dancewire.errors import DancewireError

log = logging.getLogger(__name__)

# (version, name, statements). Never edit a released migration: add a new one.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "initial schema", [
        """CREATE TABLE nodes (
            node_id TEXT PRIMARY KEY, first_seen DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION NOT NULL,
            info TEXT NOT NULL DEFAULT '{}')""",
        """CREATE TABLE sessions (
            session_id TEXT PRIMARY KEY, node_id TEXT NOT NULL, first_seen DOUBLE PRECISION NOT NULL,
            last_seen DOUBLE PRECISION NOT NULL, routine TEXT NOT NULL DEFAULT '', state TEXT)""",
        """CREATE TABLE dancers (
            dancer TEXT PRIMARY KEY, session_id TEXT NOT NULL, node_id TEXT NOT NULL, track_id BIGINT NOT NULL,
            first_seen DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION NOT NULL,
            style TEXT NOT NULL DEFAULT '', confidence DOUBLE PRECISION NOT NULL DEFAULT 0, state TEXT)""",
        "CREATE INDEX dancers_session ON dancers (session_id)",
        """CREATE TABLE windows (
            node_id TEXT NOT NULL, epoch BIGINT NOT NULL, seq BIGINT NOT NULL, session_id TEXT NOT NULL,
            dancer TEXT NOT NULL, track_id BIGINT NOT NULL, t0 DOUBLE PRECISION NOT NULL, t1 DOUBLE PRECISION NOT NULL,
            arrival DOUBLE PRECISION NOT NULL, pose_quality DOUBLE PRECISION, rhythm TEXT, embedding {blob},
            PRIMARY KEY (node_id, epoch, seq))""",
        "CREATE INDEX windows_arrival ON windows (arrival)",
        """CREATE TABLE results (
            node_id TEXT NOT NULL, epoch BIGINT NOT NULL, seq BIGINT NOT NULL, session_id TEXT NOT NULL,
            dancer TEXT NOT NULL, t0 DOUBLE PRECISION NOT NULL, t1 DOUBLE PRECISION NOT NULL,
            arrival DOUBLE PRECISION NOT NULL, style TEXT, confidence DOUBLE PRECISION, probs TEXT,
            stable_style TEXT, stable_confidence DOUBLE PRECISION, nearest TEXT, nearest_groups TEXT,
            scores TEXT, phrase BIGINT, beat_count BIGINT, late BIGINT NOT NULL DEFAULT 0,
            classify_ms DOUBLE PRECISION, PRIMARY KEY (node_id, epoch, seq))""",
        "CREATE INDEX results_session ON results (session_id, arrival)",
        "CREATE INDEX results_dancer ON results (dancer, arrival)",
        "CREATE INDEX results_arrival ON results (arrival)",
        """CREATE TABLE beats (
            node_id TEXT NOT NULL, session_id TEXT NOT NULL, seq BIGINT NOT NULL, t0 DOUBLE PRECISION NOT NULL,
            t1 DOUBLE PRECISION NOT NULL, bpm DOUBLE PRECISION, arrival DOUBLE PRECISION NOT NULL, data TEXT,
            PRIMARY KEY (node_id, session_id, seq))""",
        "CREATE INDEX beats_arrival ON beats (arrival)",
    ]),
    (2, "latency samples", [
        """CREATE TABLE latency (
            ts DOUBLE PRECISION NOT NULL, stage TEXT NOT NULL, ms DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX latency_ts ON latency (ts)",
    ]),
    (3, "beat grids keyed by spool epoch (a fresh spool numbers its grids from 1 again)", [
        """CREATE TABLE beats_v3 (
            node_id TEXT NOT NULL, epoch BIGINT NOT NULL, session_id TEXT NOT NULL, seq BIGINT NOT NULL,
            t0 DOUBLE PRECISION NOT NULL, t1 DOUBLE PRECISION NOT NULL, bpm DOUBLE PRECISION,
            arrival DOUBLE PRECISION NOT NULL, data TEXT, PRIMARY KEY (node_id, epoch, session_id, seq))""",
        """INSERT INTO beats_v3 (node_id, epoch, session_id, seq, t0, t1, bpm, arrival, data)
            SELECT node_id, 0, session_id, seq, t0, t1, bpm, arrival, data FROM beats""",
        "DROP TABLE beats",
        "ALTER TABLE beats_v3 RENAME TO beats",
        "CREATE INDEX beats_arrival ON beats (arrival)",
    ]),
]

_BLOB = {"sqlite": "BLOB", "postgresql": "BYTEA"}


class StoreUnavailable(DancewireError):
    """The database cannot take writes now (disk full, server unreachable); retrying later may work."""


# A server that vanishes without closing the connection (failover, power cut, partition) must end
# in StoreUnavailable within seconds, not hang every write and read for TCP's ~15 minutes.
MIGRATION_LOCK = 0x64776D67      # PostgreSQL advisory lock key of schema migrations ("dwmg")
PG_DEFAULTS = {"connect_timeout": "5", "keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5",
               "keepalives_count": "3", "tcp_user_timeout": "15000"}


def _pg_connect(target: str):
    """psycopg connection with PG_DEFAULTS for every parameter the URL does not set itself."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(target)
    return psycopg.connect(target, autocommit=True, **{k: v for k, v in PG_DEFAULTS.items() if k not in given})


def _unavailable(exc: Exception) -> bool:
    """Errors of the database's state, not of the data: every database error but those that say a value
    or a statement's parameters are wrong. Disk full, I/O, read-only, locked, corrupt, server gone, a
    hot standby after a failover (25006), privileges revoked: the batch is held and retried, never
    dropped as if its values were bad (dropped, it was acked and lost)."""
    import sqlite3

    if isinstance(exc, sqlite3.Error):
        return not isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError,
                                    sqlite3.InterfaceError))
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(exc, psycopg.Error) and not isinstance(exc, (psycopg.DataError, psycopg.IntegrityError))


def parse_url(url: str) -> tuple[str, str]:
    """(dialect, target): ('sqlite', path) or ('postgresql', conninfo url)."""
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://"):]
        if rest in ("", ":memory:", "/:memory:"):
            return "sqlite", ":memory:"
        return "sqlite", rest[1:] if rest.startswith("/") and not rest.startswith("//") else rest[1:]
    scheme = urlparse(url).scheme
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return "postgresql", url.replace("postgresql+psycopg://", "postgresql://", 1)
    raise DancewireError(f"unsupported database URL {url!r} (sqlite:///path or postgresql://...)")


def _dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), default=float)


class Store:
    def __init__(self, url: str):
        self.url = url
        self.dialect, target = parse_url(url)
        self._lock = threading.RLock()
        self._in_transaction = False
        if self.dialect == "sqlite":
            import sqlite3
            if target != ":memory:":
                Path(target).parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(target, check_same_thread=False, isolation_level=None, timeout=30)
            if target != ":memory:":
                mode = self._journal_wal()
                if mode.lower() != "wal":
                    log.warning("SQLite journal mode is %s, not WAL", mode)
            sync = os.environ.get("DANCEWIRE_SQLITE_SYNC", "NORMAL").upper()
            self.conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'FULL' else 'NORMAL'}")
            self.conn.execute("PRAGMA foreign_keys=ON")
        else:
            try:
                import psycopg
            except ImportError:
                raise DancewireError("PostgreSQL needs psycopg: pip install 'dancewire[postgres]'") from None
            self._target = target
            try:
                self.conn = _pg_connect(target)
            except psycopg.OperationalError as exc:
                raise DancewireError(f"cannot connect to PostgreSQL: {str(exc).strip().splitlines()[0]}") from None
        try:
            self.migrate()
        except Exception:
            self.conn.close()
            raise

    # ----- plumbing ---------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        sql = sql.replace("{blob}", _BLOB[self.dialect])
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def _connected(self):
        """The connection, opened again if the PostgreSQL server dropped it (a restart, a failover):
        the write that met the loss raised StoreUnavailable and is retried; this one goes through."""
        if self.dialect == "postgresql" and (self.conn.closed or self.conn.broken):
            import psycopg

            if self._in_transaction:         # never finish half a transaction on a new connection
                raise StoreUnavailable("the postgresql store lost its connection during a write")
            try:
                self.conn = _pg_connect(self._target)
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"the postgresql store cannot be reached: "
                                       f"{str(exc).strip().splitlines()[0]}") from exc
            log.info("store: reconnected to PostgreSQL")
        return self.conn

    @contextmanager
    def transaction(self):
        """All or nothing. A database that cannot take the write now (full disk, server gone, read-only)
        raises `StoreUnavailable` after the rollback; other errors (bugs, bad data) pass unchanged."""
        with self._lock:
            try:
                self._connected()
                self._in_transaction = True
                if self.dialect == "sqlite":
                    self.conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield self
                    except BaseException:
                        if self.conn.in_transaction:
                            self.conn.execute("ROLLBACK")
                        raise
                    self.conn.execute("COMMIT")
                else:
                    with self.conn.transaction():
                        yield self
            except Exception as exc:
                if _unavailable(exc):
                    raise StoreUnavailable(f"the {self.dialect} store cannot write now: "
                                           f"{str(exc).strip().splitlines()[0]}") from exc
                raise
            finally:
                self._in_transaction = False

    @contextmanager
    def _statement(self, what: str = "write"):
        """One statement outside a transaction: a lost server is StoreUnavailable (the API's 503, and
        the next call reconnects), as in `transaction`."""
        with self._lock:
            try:
                yield self._connected().cursor()
            except Exception as exc:
                if _unavailable(exc):
                    raise StoreUnavailable(f"the {self.dialect} store cannot {what} now: "
                                           f"{str(exc).strip().splitlines()[0]}") from exc
                raise

    def execute(self, sql: str, params=()) -> None:
        with self._statement() as cur:
            cur.execute(self._sql(sql), tuple(params))
            cur.close()

    def executemany(self, sql: str, rows) -> None:
        rows = list(rows)
        if not rows:
            return
        with self._statement() as cur:
            cur.executemany(self._sql(sql), rows)
            cur.close()

    def query(self, sql: str, params=()) -> list[dict]:
        with self._statement("be read") as cur:
            cur.execute(self._sql(sql), tuple(params))
            cols = [c[0] for c in cur.description] if cur.description else []
            rows = [dict(zip(cols, r)) for r in cur.fetchall()]
            cur.close()
            return rows

    def _journal_wal(self) -> str:
        """Switch a SQLite file to WAL. The switch takes the file's lock without waiting on the busy
        timeout: processes opening a fresh database at once got "database is locked" at once."""
        import sqlite3

        deadline = time.monotonic() + 30.0
        while True:
            try:
                return self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    # ----- migrations -------------------------------------------------------------------------
    def schema_version(self) -> int:
        rows = self.query("SELECT MAX(version) AS v FROM schema_migrations")
        return int(rows[0]["v"] or 0)

    def migrate(self) -> list[int]:
        """Apply the migrations this database lacks, each in its own transaction. Each one first takes
        the database's writer lock (SQLite's BEGIN IMMEDIATE, a PostgreSQL advisory lock) and then
        reads what is applied, so two processes opening a fresh database at once (`cloud serve` and
        `cloud migrate`, two replicas) apply each migration once."""
        applied = []
        for version, name, statements in MIGRATIONS:
            with self.transaction():
                if self.dialect == "postgresql":
                    self.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
                self.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                    version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)""")
                if self.query("SELECT 1 AS one FROM schema_migrations WHERE version = ?", (version,)):
                    continue
                for sql in statements:
                    self.execute(sql)
                self.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                             (version, name, time.time()))
            log.info("store: applied migration %d (%s)", version, name)
            applied.append(version)
        have = {int(r["version"]) for r in self.query("SELECT version FROM schema_migrations")}
        latest = max(v for v, _, _ in MIGRATIONS)
        if have and max(have) > latest:
            raise DancewireError(f"database schema {max(have)} is newer than this dancewire ({latest})")
        return applied

    # ----- writes -----------------------------------------------------------------------------
    def write_batch(self, windows: list[WindowIn], results: list[WindowResult | None],
                    dancer_states: list[dict] = (), session_states: list[dict] = (),
                    beats: list[BeatGridIn] = (), store_embeddings: bool = True,
                    node_info: dict[str, dict] | None = None, latency: list[tuple[float, str, float]] = ()) -> None:
        """One transaction: nodes, sessions, beats, windows, results, dancer/session states."""
        now = time.time()
        nodes = {w.node_id for w in windows} | {b.node_id for b in beats} | set(node_info or {})
        sessions = {(w.session_id, w.node_id) for w in windows} | {(b.session_id, b.node_id) for b in beats}
        with self.transaction():
            for node in nodes:
                info = (node_info or {}).get(node)
                if info is None:
                    self.execute("""INSERT INTO nodes (node_id, first_seen, last_seen) VALUES (?, ?, ?)
                        ON CONFLICT (node_id) DO UPDATE SET last_seen = excluded.last_seen""", (node, now, now))
                else:
                    self.execute("""INSERT INTO nodes (node_id, first_seen, last_seen, info) VALUES (?, ?, ?, ?)
                        ON CONFLICT (node_id) DO UPDATE SET last_seen = excluded.last_seen, info = excluded.info""",
                                 (node, now, now, _dumps(info)))
            states = {s["session_id"]: s for s in session_states}
            for sid, node in sessions:
                self.execute("""INSERT INTO sessions (session_id, node_id, first_seen, last_seen) VALUES (?, ?, ?, ?)
                    ON CONFLICT (session_id) DO UPDATE SET last_seen = excluded.last_seen""", (sid, node, now, now))
            for sid, st in states.items():
                self.execute("UPDATE sessions SET state = ?, routine = ? WHERE session_id = ?",
                             (_dumps(st), st.get("routine", ""), sid))
            self.executemany("""INSERT INTO beats (node_id, epoch, session_id, seq, t0, t1, bpm, arrival, data)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (node_id, epoch, session_id, seq) DO NOTHING""",
                             [(b.node_id, int(b.epoch), b.session_id, int(b.seq), b.t0, b.t1, b.bpm, now,
                               _dumps({"beats": b.beats, "counts": b.counts, "onsets": b.onsets,
                                       "confidence": b.confidence})) for b in beats])
            self.executemany("""INSERT INTO windows (node_id, epoch, seq, session_id, dancer, track_id, t0, t1, arrival,
                pose_quality, rhythm, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (node_id, epoch, seq) DO NOTHING""",
                             [(w.node_id, int(w.epoch), int(w.seq), w.session_id, w.dancer, int(w.track_id), w.t0, w.t1,
                               w.arrival, float(w.pose_quality), _dumps(w.rhythm),
                               np.asarray(w.embedding, np.float32).tobytes() if store_embeddings else None)
                              for w in windows])
            rows = []
            for r in results:
                if r is None:
                    continue
                w, c = r.window, r.cls
                cms = None
                if "received" in w.stamps and "classified" in w.stamps:
                    cms = 1000 * (w.stamps["classified"] - w.stamps["received"])
                rows.append((w.node_id, int(w.epoch), int(w.seq), w.session_id, w.dancer, w.t0, w.t1, w.arrival,
                             c.style if c else None, c.confidence if c else None, _dumps(c.probs) if c else None,
                             r.stable_style, r.stable_confidence,
                             _dumps([n.__dict__ for n in c.nearest]) if c else None,
                             _dumps([n.__dict__ for n in c.nearest_groups]) if c else None,
                             _dumps(r.scores), r.phrase, r.count, int(r.late), cms))
            self.executemany("""INSERT INTO results (node_id, epoch, seq, session_id, dancer, t0, t1, arrival, style,
                confidence, probs, stable_style, stable_confidence, nearest, nearest_groups, scores, phrase, beat_count,
                late, classify_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (node_id, epoch, seq) DO NOTHING""", rows)
            self.executemany("INSERT INTO latency (ts, stage, ms) VALUES (?, ?, ?)", latency)
            for st in dancer_states:
                self.execute("""INSERT INTO dancers (dancer, session_id, node_id, track_id, first_seen, last_seen, style,
                    confidence, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (dancer) DO UPDATE SET last_seen = excluded.last_seen, style = excluded.style,
                    confidence = excluded.confidence, state = excluded.state""",
                             (st["key"], st["session_id"], st["node_id"], int(st["track_id"]),
                              st.get("first_arrival") or now, st.get("last_arrival") or now, st.get("stable", ""),
                              float(st.get("stable_conf", 0.0)), _dumps(st)))

    # ----- reads ------------------------------------------------------------------------------
    def nodes(self) -> list[dict]:
        rows = self.query("SELECT node_id, first_seen, last_seen, info FROM nodes ORDER BY last_seen DESC")
        for r in rows:
            r["info"] = json.loads(r["info"] or "{}")
        return rows

    def sessions(self, limit: int = 100) -> list[dict]:
        return self.query("""SELECT s.session_id, s.node_id, s.first_seen, s.last_seen, s.routine,
            (SELECT COUNT(*) FROM dancers d WHERE d.session_id = s.session_id) AS dancers
            FROM sessions s ORDER BY s.last_seen DESC LIMIT ?""", (int(limit),))

    def session(self, session_id: str) -> dict | None:
        rows = self.query("SELECT session_id, node_id, first_seen, last_seen, routine, state FROM sessions "
                          "WHERE session_id = ?", (session_id,))
        if not rows:
            return None
        r = rows[0]
        r["state"] = json.loads(r["state"]) if r["state"] else None
        return r

    def dancers(self, session_id: str | None = None) -> list[dict]:
        sql = "SELECT dancer, session_id, node_id, track_id, first_seen, last_seen, style, confidence FROM dancers"
        if session_id is None:
            return self.query(sql + " ORDER BY last_seen DESC")
        return self.query(sql + " WHERE session_id = ? ORDER BY track_id", (session_id,))

    def results(self, session_id: str | None = None, dancer: str | None = None, since: float | None = None,
                limit: int = 500) -> list[dict]:
        where, params = [], []
        if session_id is not None:
            where.append("session_id = ?"); params.append(session_id)
        if dancer is not None:
            where.append("dancer = ?"); params.append(dancer)
        if since is not None:
            where.append("arrival > ?"); params.append(float(since))
        sql = ("SELECT node_id, epoch, seq, session_id, dancer, t0, t1, arrival, style, confidence, probs, "
               "stable_style, stable_confidence, nearest, nearest_groups, scores, phrase, beat_count, late, classify_ms "
               "FROM results")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY arrival DESC, seq DESC LIMIT ?"
        rows = self.query(sql, (*params, int(limit)))
        for r in rows:
            for k in ("probs", "nearest", "nearest_groups", "scores"):
                r[k] = json.loads(r[k]) if r[k] else None
            r["late"] = bool(r["late"])
        rows.reverse()
        return rows

    def window_embeddings(self, session_id: str) -> tuple[list[dict], np.ndarray]:
        """A session's stored embeddings, by t0, and the rows they belong to (row i is embedding i);
        windows stored without one (`store_embeddings` off at the time) are left out of both."""
        rows = self.query("SELECT node_id, epoch, seq, dancer, t0, t1, embedding FROM windows WHERE session_id = ? "
                          "AND embedding IS NOT NULL ORDER BY t0", (session_id,))
        embs = [np.frombuffer(bytes(r.pop("embedding")), np.float32) for r in rows]
        return rows, (np.stack(embs) if embs else np.zeros((0, 0), np.float32))

    def count(self, table: str) -> int:
        if table not in ("nodes", "sessions", "dancers", "windows", "results", "beats", "latency"):
            raise ValueError(table)
        return int(self.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"])

    HISTORY_ROWS = 200_000                              # samples one history read takes at most (the newest)

    def latency_history(self, since: float) -> tuple[dict[str, dict], bool]:
        """Per stage: count and percentiles (ms) of the latency samples kept since `since`, over the
        newest HISTORY_ROWS of them (a read of months would hold the store's lock for long); and
        whether older samples were left out for that."""
        rows = self.query("SELECT stage, ms FROM latency WHERE ts > ? ORDER BY ts DESC LIMIT ?",
                          (float(since), self.HISTORY_ROWS + 1))
        truncated = len(rows) > self.HISTORY_ROWS
        rows = rows[:self.HISTORY_ROWS]
        by: dict[str, list[float]] = {}
        for r in rows:
            by.setdefault(r["stage"], []).append(float(r["ms"]))
        out = {}
        for stage, vals in by.items():
            a = np.asarray(vals)
            out[stage] = {"count": int(a.size), "p50_ms": float(np.percentile(a, 50)),
                          "p95_ms": float(np.percentile(a, 95)), "p99_ms": float(np.percentile(a, 99)),
                          "max_ms": float(a.max())}
        return out, truncated

    def load_states(self) -> tuple[list[dict], list[dict]]:
        """Saved aggregator states: (dancer states, session states)."""
        dancers = [json.loads(r["state"]) for r in self.query("SELECT state FROM dancers WHERE state IS NOT NULL")]
        sessions = [json.loads(r["state"]) for r in self.query("SELECT state FROM sessions WHERE state IS NOT NULL")]
        return dancers, sessions

    # ----- retention --------------------------------------------------------------------------
    def prune(self, days: float, now: float | None = None) -> dict[str, int]:
        """Delete what is older than `days` (windows, results, beats, latency, idle dancers/sessions)."""
        if days <= 0:
            return {}
        cutoff = (now or time.time()) - days * 86400.0
        counts = {}
        with self.transaction():
            for table, col in (("windows", "arrival"), ("results", "arrival"), ("beats", "arrival"),
                               ("latency", "ts"), ("dancers", "last_seen"), ("sessions", "last_seen")):
                n = int(self.query(f"SELECT COUNT(*) AS n FROM {table} WHERE {col} < ?", (cutoff,))[0]["n"])
                if n:
                    self.execute(f"DELETE FROM {table} WHERE {col} < ?", (cutoff,))
                counts[table] = n
        return counts
