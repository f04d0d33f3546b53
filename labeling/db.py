"""The preference store's engine and ORM sessions: `open_store`, `session_scope`, `get_project`.

Any SQLAlchemy URL works; the default is a SQLite file with WAL (readers never block
the writer), foreign keys on, and a busy timeout so that concurrent writers wait
instead of failing. Schema versions: labeling.migrations. The hot path's plain connections:
labeling.connections. What may run on the server's event loop: labeling.event_loop.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, create_engine, select

from labeling import models
from labeling.event_loop import SQLITE_BUSY_TIMEOUT_MS, WouldWait, wait_point, write_turn
from labeling.migrations import init_db
from prefloop.errors import NotFoundError, StoreError

DEFAULT_DB = "sqlite:///prefloop.db"
SQLITE_POOL_SIZE, SQLITE_POOL_OVERFLOW = 32, 64  # connections kept, and more at peaks (a file handle each)

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


def open_store(url: str | None = None, *, create: bool = True) -> Engine:
    """Engine for the store at `url`, created or upgraded as needed.

    create=False (every command but `labeling init`): a store that does not exist is
    refused, so a mistyped --store never leaves an empty store behind. Any failure to open
    (missing directory, unreachable server, not a database) is a StoreError naming the store.
    """
    url, shown = db_url(url), display_url(url)
    path = _sqlite_path(url)
    if path is not None and not path.parent.is_dir():
        raise StoreError(f"{shown}: directory {path.parent} does not exist")
    if path is not None and not create and not path.exists():
        raise StoreError(f"{shown}: no such store (create it with `labeling init --store {shown}`)")
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
    if immediate and wait_point("an ORM write transaction"):
        raise WouldWait("an ORM write transaction is not run on the event loop")
    # expire_on_commit=False: rows returned from the scope stay readable after it closes.
    with write_turn(engine) if immediate else nullcontext(), Session(engine, expire_on_commit=False) as session:
        if immediate:
            session.connection(execution_options={"sqlite_immediate": True})
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def get_project(session: Session, name: str) -> models.Project:
    project = session.exec(select(models.Project).where(models.Project.name == name)).first()
    if project is None:
        raise NotFoundError(f"project {name!r} does not exist (create it with `labeling init --project {name}`)")
    return project
