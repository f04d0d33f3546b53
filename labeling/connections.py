"""Connections of the annotator's hot path (labeling.assign, labeling.app.service): typed Core
statements on plain connections, without an ORM session around them.

Writes go through labeling.event_loop's `write_turn`, so the event-loop write protocol holds for them.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import Iterator

from sqlalchemy.engine import Connection, Engine

from labeling.event_loop import no_busy_wait_on_event_loop, write_turn


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
    waits for the GIL while the write lock is held (labeling.answers.submit_judgment)."""
    with write_turn(engine), read_connection(engine) as conn, no_busy_wait_on_event_loop(conn):
        yield conn
        conn.commit()  # PostgreSQL began a transaction anyway; on SQLite the statement committed itself


@contextmanager
def write_connection(engine: Engine) -> Iterator[Connection]:
    """`session_scope` without the ORM session: one write transaction on a plain Connection.

    The annotator hot path (labeling.assign: claim; labeling.answers: vote) runs typed Core statements only; a Session
    around them cost CPU while the process's SQLite write lock was held (BENCHMARKS.md, server profile).
    """
    with write_turn(engine), engine.connect() as conn, no_busy_wait_on_event_loop(conn):
        conn.execution_options(sqlite_immediate=True)
        with conn.begin():
            yield conn


