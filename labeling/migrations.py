"""Schema versioning of the preference store: create a new store, or check and upgrade an existing one.

A database written by another schema version is upgraded by the migrations below (each in one
transaction) or refused with one clear line, never silently misread.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from labeling import models, store_triggers
from labeling.models import SCHEMA_VERSION, Meta
from prefloop.errors import StoreError


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


