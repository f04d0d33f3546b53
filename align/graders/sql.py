"""SQL: the answer runs read-only on the task's SQLite database; its result is compared with the reference query's.

Credit (weights are options; defaults in `SQL_WEIGHTS`):
  parse    the statement prepares and runs against this schema (one SELECT, within the time limit)
  columns  its result has the reference result's column names (case-insensitive, any order)
  rows     its rows equal the reference's: the F1 of the two row multisets, so a result with
           some right rows earns part; with `ordered`, the row lists must be equal

The sandbox (model output is untrusted; Python's sqlite3 in this process, no shell, no files):
  * the database is opened through a read-only URI (`mode=ro`) with `PRAGMA query_only`;
  * an authorizer allows only reading (SELECT, READ, FUNCTION, RECURSIVE) and denies
    every write, ATTACH/DETACH, PRAGMA, transaction control and the functions that reach
    files or extensions (`load_extension`, `readfile`, `writefile`, `edit`, `fts3_tokenizer`);
  * a progress handler aborts the statement past `time_limit` seconds (an endless recursive
    CTE stops there), and `setlimit` caps string/blob size, SQL length and attachments;
  * at most `MAX_ROWS` rows and `MAX_RESULT_CHARS` characters are fetched.
A refused, timed-out or failing statement scores 0 and says why.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

from align.graders.base import Grade, GraderSpecError, checked, fenced_block

SQL_WEIGHTS = {"parse": 0.2, "columns": 0.3, "rows": 0.5}
MAX_ROWS = 10_000
MAX_RESULT_CHARS = 5_000_000
_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "zipfile"}


class QueryRefused(Exception):
    """The statement was refused, timed out or failed: the message says which."""


def _authorize(action, arg1, arg2, db_name, trigger):
    if action not in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and str(arg2).lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def run_read_only(db: str | Path, query: str, time_limit: float) -> tuple[list[str], list[tuple]]:
    """(column names, rows) of one SELECT run in the sandbox above; QueryRefused otherwise."""
    uri = f"file:{quote(str(Path(db).resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        conn.execute("PRAGMA query_only = ON")  # before the authorizer, which denies every PRAGMA
        conn.set_authorizer(_authorize)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1_000_000)
        conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, 100_000)
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        deadline = time.monotonic() + time_limit
        conn.set_progress_handler(lambda: time.monotonic() > deadline, 1_000)  # non-zero aborts
        try:
            cursor = conn.execute(query)
            columns = [d[0] for d in cursor.description or ()]
            rows, size = [], 0
            for row in cursor:
                rows.append(row)
                size += sum(len(str(v)) for v in row)
                if len(rows) > MAX_ROWS or size > MAX_RESULT_CHARS:
                    raise QueryRefused(f"result larger than {MAX_ROWS} rows / {MAX_RESULT_CHARS} characters")
        except sqlite3.Error as err:
            message = str(err)
            if "interrupted" in message:
                message = f"timed out after {time_limit:g}s"
            elif "not authorized" in message or "readonly" in message or "read-only" in message:
                message = f"refused: only reading is allowed ({message})"
            raise QueryRefused(message) from None
        except (UnicodeError, ValueError, OverflowError, MemoryError) as err:  # e.g. lone surrogates, NUL
            raise QueryRefused(f"{type(err).__name__}: {err}") from None
        if not columns:
            raise QueryRefused("not a query: it returns no columns")
        return columns, rows
    finally:
        conn.close()


@functools.lru_cache(maxsize=256)
def _reference_result(db: str, mtime: float, query: str, time_limit: float):
    """The reference query's result, once per (database version, query)."""
    try:
        return run_read_only(db, query, time_limit)
    except QueryRefused as err:
        raise GraderSpecError(f"sql: the reference query fails on {db}: {err}") from None


def extract_sql(text: str) -> str:
    """The last ```sql block, or the whole answer; one trailing semicolon dropped."""
    sql = fenced_block(text, ("sql", "sqlite")) or text
    return sql.strip().removesuffix(";").strip()


def sql_result(prompt, response, reference, db: str = "", time_limit: float = 1.0, ordered: bool = False,
               weights: dict | None = None) -> Grade:
    """Credit for parsing, columns and rows; see the module head."""
    if not db or not os.path.isfile(db):
        raise GraderSpecError(f"sql: database {db!r} not found (set the grader option `db`)")
    weights = {**SQL_WEIGHTS, **(weights or {})}
    ref_columns, ref_rows = _reference_result(str(Path(db).resolve()), os.path.getmtime(db), str(reference).strip(),
                                              time_limit)
    text, bad = checked(response)
    if bad is not None:
        return bad
    query = extract_sql(text)
    if not query:
        return Grade(0.0, "no SQL in the answer")
    try:
        columns, rows = run_read_only(db, query, time_limit)
    except QueryRefused as err:
        return Grade(0.0, str(err)[:200])
    except sqlite3.Warning as err:  # "You can only execute one statement at a time."
        return Grade(0.0, str(err)[:200])
    total = sum(weights.values())
    same_columns = Counter(c.lower() for c in columns) == Counter(c.lower() for c in ref_columns)
    if same_columns and columns != ref_columns:  # same names, other order: compare rows in the reference's
        order = [[c.lower() for c in columns].index(c.lower()) for c in ref_columns]
        rows = [tuple(row[i] for i in order) for row in rows]
    row_credit = float(rows == ref_rows) if ordered else multiset_f1(rows, ref_rows)
    score = (weights["parse"] + weights["columns"] * same_columns + weights["rows"] * row_credit) / total
    why = [] if same_columns else [f"columns {columns[:8]} != {ref_columns[:8]}"]
    if row_credit < 1:
        why.append(f"rows match {row_credit:.0%}")
    return Grade(score, "; ".join(why))


def multiset_f1(got: list, expected: list) -> float:
    """F1 of two row multisets: 1 when equal, 0 when disjoint (two empty results are equal)."""
    if not got and not expected:
        return 1.0
    common = sum((Counter(map(_hashable, got)) & Counter(map(_hashable, expected))).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def _hashable(row: tuple) -> tuple:
    # 0.1 + 0.2 computed by SQLite must equal a stored 0.3: compare reals to 12 significant digits.
    return tuple(float(f"{v:.12g}") if isinstance(v, float) else v for v in row)
