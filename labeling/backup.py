"""`labeling backup --out FILE`: a consistent copy of a store, also while the app is writing to it.

    labeling backup --store prefloop.db --out backups/prefloop-2026-06-01.db

SQLite: the online backup API (`sqlite3.Connection.backup`, SQLite's sqlite3_backup_*) copies every
page in one step, inside one read transaction of the source. In WAL mode (the store's) a read
transaction sees one snapshot and never blocks the app's writers, so the copy is the store as of one
moment: every judgment committed before the backup began is in it, none half-written. The copy is
written beside FILE under a temporary name, checked with `PRAGMA integrity_check`, and only then
takes FILE's name; an existing FILE is refused, never overwritten.

PostgreSQL: `pg_dump` is the tool (it copies from one snapshot too); the command refuses with the
line to run, password left out (libpq reads it from ~/.pgpass or $PGPASSWORD):

    pg_dump --format=custom --file FILE 'postgresql://USER@HOST:5432/DB'
    pg_restore --dbname 'postgresql://USER@HOST:5432/NEW_DB' FILE     # restore into an empty database
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from prefloop.errors import InputError, StoreError
from prefloop.fields import store_field

BUSY_TIMEOUT_S = 30.0  # a checkpoint by the app may hold the source briefly


@dataclass
class BackupConfig:
    """Copy a store consistently while the app may be writing (SQLite's online backup; pg_dump for PostgreSQL)."""

    out: str | None = field(default=None, metadata={
        "help": "the copy to write (a new file: an existing one is refused)"})
    store: str | None = store_field()

    def __post_init__(self):
        if not self.out:
            raise ValueError("--out is required: the new file the copy goes to")


def pg_dump_command(url: str, out: str) -> str:
    """The pg_dump line for a PostgreSQL store URL, without its password and SQLAlchemy's driver suffix."""
    from sqlalchemy.engine import URL, make_url

    u = make_url(url)
    libpq = URL.create("postgresql", username=u.username, host=u.host, port=u.port, database=u.database,
                       query=u.query).render_as_string(hide_password=False)
    return f"pg_dump --format=custom --file {shlex.quote(out)} {shlex.quote(libpq)}"


def backup_sqlite(source: Path, out: Path) -> int:
    """Copy the SQLite store `source` to the new file `out`; -> judgments in the copy."""
    if not source.is_file():
        raise StoreError(f"{source}: no such store")
    if out.exists():
        raise InputError(f"{out}: exists; a backup never overwrites a file (choose a new name)")
    if not out.parent.is_dir():
        raise InputError(f"{out}: directory {out.parent} does not exist")
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        # read-only: a mistyped path is never created, and the store is never written
        src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as err:
        raise StoreError(f"{source}: cannot open the store ({err})") from None
    try:
        _check_store(src, source)
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst, pages=-1)  # every page in one step: one read transaction, one snapshot
            judgments = _check_copy(dst, source)
        finally:
            dst.close()
        os.link(partial, out)  # takes the name only if it is still free (no race with another writer of `out`)
        return judgments
    except FileExistsError:
        raise InputError(f"{out}: exists; a backup never overwrites a file (choose a new name)") from None
    except sqlite3.Error as err:
        raise StoreError(f"{source}: backup failed ({err})") from None
    finally:
        src.close()
        for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm"), Path(f"{partial}-journal")):
            leftover.unlink(missing_ok=True)


def _check_store(conn: sqlite3.Connection, source: Path) -> None:
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as err:  # not a database file
        raise StoreError(f"{source}: cannot open the store ({err})") from None
    if "prefloop_meta" not in tables:
        raise StoreError(f"{source}: not a prefloop store (no prefloop_meta table)")


def _check_copy(conn: sqlite3.Connection, source: Path) -> int:
    result = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    if result != ["ok"]:
        raise StoreError(f"{source}: the copy failed its integrity check ({'; '.join(result[:3])})")
    return conn.execute("SELECT count(*) FROM judgment").fetchone()[0]


def main(argv: list[str] | None = None) -> int:
    from labeling.db import _sqlite_path, db_url, display_url
    from prefloop.config import parse_config

    cfg = parse_config(BackupConfig, argv, prog="labeling backup")
    url = db_url(cfg.store)
    if url.startswith("postgresql"):
        raise InputError(f"{display_url(cfg.store)}: a PostgreSQL store is backed up with pg_dump: "
                         f"{pg_dump_command(url, cfg.out)}")
    source = _sqlite_path(url)
    if source is None:
        raise InputError(f"{display_url(cfg.store)}: only a SQLite file (online backup) or PostgreSQL (pg_dump) "
                         "store can be backed up")
    start = time.perf_counter()
    judgments = backup_sqlite(source, Path(cfg.out))
    size = Path(cfg.out).stat().st_size / 2**20
    print(f"backup of {display_url(cfg.store)} -> {cfg.out}: {judgments} judgments, {size:.1f} MiB, "
          f"integrity ok, {time.perf_counter() - start:.1f} s")
    return 0
