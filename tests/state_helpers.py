"""A digest of what a user owns on disk, to prove that a command changed nothing."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path


def tree_digest(*roots: Path) -> str:
    """Every path and file's bytes under `roots`; SQLite stores by their rows (WAL side files are not state)."""
    h = hashlib.sha256()
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.name.endswith(("-wal", "-shm", "-journal")):
                continue
            h.update(str(path.relative_to(root)).encode())
            if path.is_file():
                h.update(_sqlite_rows(path) if path.suffix == ".db" else path.read_bytes())
    return h.hexdigest()


def _sqlite_rows(path: Path) -> bytes:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return "\n".join(conn.iterdump()).encode()
    except sqlite3.DatabaseError:  # not a SQLite file after all: its bytes are its state
        return path.read_bytes()
