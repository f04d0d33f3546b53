"""Engine, sessions and schema versioning for the preference store.

Any SQLAlchemy URL works; the default is a SQLite file with WAL (readers never block
the writer), foreign keys on, and a busy timeout so that concurrent writers wait
instead of failing. A database written by another schema version is upgraded by the
migrations below or refused with one clear line, never silently misread.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import Callable, Iterator

from sqlalchemy import event, inspect
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, create_engine, select

from labeling import models, store_triggers
from labeling.models import SCHEMA_VERSION, Meta
from prefloop.errors import NotFoundError, StoreError

DEFAULT_DB = "sqlite:///prefloop.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_POOL_SIZE, SQLITE_POOL_OVERFLOW = 32, 64  # connections kept, and more at peaks (a file handle each)

def _add_artifact_table(session: Session) -> None:
    """1 -> 2: the `artifact` table of the loop's lineage (labeling.lineage), with its index."""
    models.Artifact.__table__.create(session.connection(), checkfirst=True)


def _add_task_is_full(session: Session) -> None:
    """2 -> 3: `task.is_full` and the triggers that keep it (labeling.store_triggers); its index,
    ix_task_open, is created with the other indexes added since (init_db)."""
    conn = session.connection()
    conn.exec_driver_sql("ALTER TABLE task ADD COLUMN is_full BOOLEAN NOT NULL DEFAULT false")
    store_triggers.install_full_mark(conn)


def _add_lease_close_trigger(session: Session) -> None:
    """3 -> 4: a stored judgment closes its assignment's lease (labeling.store_triggers), which makes
    the vote one statement on SQLite. Every lease already answered was closed by the code that answered it."""
    store_triggers.install_lease_close(session.connection())


# version N -> function upgrading a version-N database to N+1, run in one transaction.
MIGRATIONS: dict[int, Callable[[Session], None]] = {1: _add_artifact_table, 2: _add_task_is_full,
                                                    3: _add_lease_close_trigger}


class SchemaError(StoreError):
    """The database cannot be used by this version of prefloop."""


def db_url(url: str | None = None) -> str:
    """The URL given, else $PREFLOOP_DB, else ./prefloop.db. A bare path means a SQLite file."""
    url = url or os.environ.get("PREFLOOP_DB") or DEFAULT_DB
    return url if "://" in url else f"sqlite:///{url}"


def make_engine(url: str | None = None) -> Engine:
    url = db_url(url)
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            poolclass=StaticPool if memory else None,
            # An API call holds one connection for its reads and takes another for its write
            # (one_read_connection): 16 calls at once need 32, past the default 5 + 10 overflow, and
            # a call waiting on the pool for its write while holding its read one could wait on itself.
            **({} if memory else {"pool_size": SQLITE_POOL_SIZE, "max_overflow": SQLITE_POOL_OVERFLOW}),
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        # SQLite has one writer at a time. Threads of one process that all BEGIN IMMEDIATE wait in
        # SQLite's busy handler, which sleeps in growing steps (up to 100 ms) and polls again;
        # queueing them on a lock in the process instead hands the write lock over at once.
        engine.write_lock = threading.RLock()
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # pysqlite's own transaction handling would defer BEGIN; take control so that
    # `BEGIN IMMEDIATE` (used by assignment) really takes the write lock up front.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn) -> None:
    options = conn.get_execution_options()
    if options.get("sqlite_autocommit"):
        return  # read_connection: each statement is its own read transaction
    conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("sqlite_immediate") else "BEGIN")


def display_url(url: str | None) -> str:
    """The store as a user named it: a SQLite path, or a URL without its password (fit for messages, metadata)."""
    url = db_url(url)
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///"):] or ":memory:"
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def init_db(engine: Engine, create: bool = True) -> None:
    """Create the tables of a new database (unless create=False), or check/upgrade an existing one."""
    tables = set(inspect(engine).get_table_names())
    if not tables and not create:
        raise StoreError("the database is empty, not a prefloop store (create one with `labeling init`)")
    if not tables:
        SQLModel.metadata.create_all(engine)
        with Session(engine) as session:
            store_triggers.install(session.connection())
            session.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
            session.commit()
        return
    if Meta.__tablename__ not in tables:
        raise SchemaError("database has tables but no prefloop_meta: it was not created by prefloop (refusing to touch it)")
    _upgrade(engine)
    SQLModel.metadata.create_all(engine)  # tables added since (no-op otherwise)
    for table in SQLModel.metadata.sorted_tables:  # indexes added since: speed only, no schema version
        for index in table.indexes:
            index.create(engine, checkfirst=True)


def schema_version(engine: Engine) -> int:
    with Session(engine) as session:
        row = session.get(Meta, "schema_version")
        return int(row.value) if row else 0


def _upgrade(engine: Engine) -> None:
    version = schema_version(engine)
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"database schema version {version} is newer than this prefloop supports ({SCHEMA_VERSION}); upgrade prefloop"
        )
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise SchemaError(f"database schema version {version} cannot be upgraded to {SCHEMA_VERSION}: no migration")
        with Session(engine) as session:
            step(session)
            session.get(Meta, "schema_version").value = str(version + 1)
            session.commit()
        version += 1


def open_store(url: str | None = None, *, create: bool = True) -> Engine:
    """Engine for the store at `url`, created or upgraded as needed.

    create=False (every command but `labeling init`): a store that does not exist is
    refused, so a mistyped --db never leaves an empty store behind. Any failure to open
    (missing directory, unreachable server, not a database) is a StoreError naming the store.
    """
    url, shown = db_url(url), display_url(url)
    path = _sqlite_path(url)
    if path is not None and not path.parent.is_dir():
        raise StoreError(f"{shown}: directory {path.parent} does not exist")
    if path is not None and not create and not path.exists():
        raise StoreError(f"{shown}: no such store (create it with `labeling init --db {shown}`)")
    try:
        engine = make_engine(url)
    except (ArgumentError, NoSuchModuleError) as err:
        raise StoreError(f"{shown}: not a database URL or SQLite path ({err})") from None
    try:
        init_db(engine, create)
    except StoreError as err:
        engine.dispose()
        raise type(err)(f"{shown}: {err}") from None
    except DBAPIError as err:  # unreachable server, wrong password, a file that is not a database
        engine.dispose()
        reason = (str(err.orig).strip().splitlines() or [type(err.orig).__name__])[0]
        raise StoreError(f"{shown}: cannot open the store ({reason})") from None
    return engine


def _sqlite_path(url: str):
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    from pathlib import Path

    if not url.startswith("sqlite:///") or url in ("sqlite:///:memory:",):
        return None
    return Path(url[len("sqlite:///"):]).expanduser()


@contextmanager
def session_scope(engine: Engine, immediate: bool = True) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error (all-or-nothing).

    `immediate=True` (the default) takes SQLite's write lock at BEGIN: a deferred
    transaction that reads and then writes fails at once with "database is locked"
    when another writer committed in between (the busy timeout does not apply to a
    lock upgrade), while BEGIN IMMEDIATE simply waits its turn. Pure readers may pass
    `immediate=False`; under WAL they never block. PostgreSQL ignores the option.
    """
    if immediate and _ON_EVENT_LOOP.get():
        raise WouldWait("an ORM write transaction is not run on the event loop")
    # expire_on_commit=False: rows returned from the scope stay readable after it closes.
    with _write_turn(engine) if immediate else nullcontext(), Session(engine, expire_on_commit=False) as session:
        if immediate:
            session.connection(execution_options={"sqlite_immediate": True})
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def read_connection(engine: Engine):
    """A connection for the hot path's reads, without a transaction around them on SQLite.

    Each statement then reads its own snapshot, with no BEGIN and ROLLBACK round trips around it:
    fine where the reads need not agree with each other (who is asking, a task's texts, progress
    counts); a decision that must see one state is made inside `write_connection`. Inside
    `one_read_connection` (one API call) the call's connection is lent instead of a new one.
    """
    shared = _CALL_CONNECTION.get()
    if shared is not None and shared[0] is engine:
        return nullcontext(shared[1])  # lent: it stays open for the call's next read
    return engine.connect().execution_options(sqlite_autocommit=True)


# (engine, connection) of the API call running in this thread, if it runs in `one_read_connection`
_CALL_CONNECTION: ContextVar[tuple[Engine, Connection] | None] = ContextVar("prefloop_call_connection",
                                                                           default=None)


@contextmanager
def one_read_connection(engine: Engine) -> Iterator[None]:
    """Let every `read_connection(engine)` inside (one API call's reads) use one connection, on SQLite.

    A call reads in four to six places (who is asking, the project, the task's texts, progress); a
    connection taken from the pool and given back for each cost more CPU than most of those reads
    (BENCHMARKS.md, labeling server). Each statement still reads its own snapshot (autocommit).
    PostgreSQL keeps one connection per read: a shared one would hold a transaction open across them.
    """
    if engine.dialect.name != "sqlite" or _CALL_CONNECTION.get() is not None:
        yield
        return
    with engine.connect().execution_options(sqlite_autocommit=True) as conn:
        token = _CALL_CONNECTION.set((engine, conn))
        try:
            yield
        finally:
            _CALL_CONNECTION.reset(token)


@contextmanager
def write_statement(engine: Engine) -> Iterator[Connection]:
    """A connection for one write statement that is its own transaction (with what its triggers do),
    in the process's queue of writers: no BEGIN and COMMIT around it, which on SQLite are two more
    waits for the GIL while the write lock is held (labeling.assign.submit_judgment)."""
    with _write_turn(engine), read_connection(engine) as conn, _no_busy_wait_on_event_loop(conn):
        yield conn
        conn.commit()  # PostgreSQL began a transaction anyway; on SQLite the statement committed itself


@contextmanager
def write_connection(engine: Engine) -> Iterator[Connection]:
    """`session_scope` without the ORM session: one write transaction on a plain Connection.

    The annotator hot path (labeling.assign: claim, vote) runs typed Core statements only; a Session
    around them cost CPU while the process's SQLite write lock was held (BENCHMARKS.md, server profile).
    """
    with _write_turn(engine), engine.connect() as conn, _no_busy_wait_on_event_loop(conn):
        conn.execution_options(sqlite_immediate=True)
        with conn.begin():
            yield conn


# ---------------------------------------------------------------------------------------------
# SQLite calls run on the server's event loop (labeling.app.rest)
#
# On SQLite every call of a process is serialized anyway, by the GIL and by the write lock; handing each
# to a worker thread cost more CPU than the call (a GIL handoff around every statement, since sqlite3
# releases the GIL in each: BENCHMARKS.md, labeling server). So the JSON API runs short SQLite calls on
# the event loop itself. There nothing may wait: a write that finds the process's write lock taken (a
# page event's write, in a worker thread) or SQLite's lock held by another process raises WouldWait
# before it has written anything, and the caller runs the whole call again in a worker thread, where
# the write waits its turn. Such a call must therefore make at most one write transaction.

_ON_EVENT_LOOP: ContextVar[bool] = ContextVar("prefloop_on_event_loop", default=False)


class WouldWait(Exception):
    """A write on the event loop would have to wait for a lock: run the call in a worker thread instead."""


@contextmanager
def on_event_loop() -> Iterator[None]:
    """Mark the code inside as running on the event loop: its writes raise WouldWait instead of waiting."""
    token = _ON_EVENT_LOOP.set(True)
    try:
        yield
    finally:
        _ON_EVENT_LOOP.reset(token)


def running_on_event_loop() -> bool:
    return _ON_EVENT_LOOP.get()


@contextmanager
def _write_turn(engine: Engine) -> Iterator[None]:
    """The process's queue of SQLite writers (engine.write_lock; nothing on other databases)."""
    lock = getattr(engine, "write_lock", None)
    if lock is None:
        yield
        return
    if not lock.acquire(blocking=not _ON_EVENT_LOOP.get()):
        raise WouldWait("the process's write lock is taken")
    try:
        yield
    finally:
        lock.release()


@contextmanager
def _no_busy_wait_on_event_loop(conn: Connection) -> Iterator[None]:
    """On the event loop SQLite's busy handler must not sleep (up to SQLITE_BUSY_TIMEOUT_MS while another
    process writes): "database is locked" comes at once instead (labeling.assign.with_retry: WouldWait)."""
    if not _ON_EVENT_LOOP.get() or conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.dbapi_connection
    raw.execute("PRAGMA busy_timeout = 0")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")


def get_project(session: Session, name: str) -> models.Project:
    project = session.exec(select(models.Project).where(models.Project.name == name)).first()
    if project is None:
        raise NotFoundError(f"project {name!r} does not exist (create it with `labeling init --project {name}`)")
    return project
