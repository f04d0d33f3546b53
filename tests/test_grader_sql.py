"""The SQL grader: credit for parsing, columns and rows; a sandbox that refuses every way out."""

import os
import sqlite3
import time

import pytest

from align.graders import GraderSpecError, grade
from align.graders.sql import multiset_f1

REFERENCE = "SELECT name FROM employee WHERE salary > 1000"


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "company.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE employee (id INTEGER PRIMARY KEY, name TEXT, salary REAL, dept TEXT);
        INSERT INTO employee VALUES (1, 'ada', 1500, 'eng'), (2, 'bob', 900, 'ops'), (3, 'cy', 2500, 'eng'),
                                    (4, 'di', 1000, 'ops');
    """)
    conn.commit()
    conn.close()
    return str(path)


def sql(db, answer, reference=REFERENCE, **options):
    return grade("sql", "q", answer, reference, db=db, **options)


def unchanged(db) -> bool:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM employee").fetchone()[0] == 4 and \
            [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["employee"]
    finally:
        conn.close()


def test_full_credit_whatever_the_spelling(db):
    assert sql(db, "select NAME from employee where salary>1000;") == 1.0
    assert sql(db, "Here:\n```sql\nSELECT e.name FROM employee e WHERE e.salary > 1000\n```") == 1.0
    assert sql(db, "SELECT name FROM employee WHERE salary > 1000 ORDER BY name DESC") == 1.0  # unordered by default


def test_partial_credit_by_hand(db):
    # reference rows {ada, cy}; answer rows {ada, bob, cy, di}: precision 1/2, recall 1 -> F1 2/3
    g = sql(db, "SELECT name FROM employee")
    assert g == pytest.approx(0.2 + 0.3 + 0.5 * 2 / 3) and "rows match 67%" in g.why
    # right rows of the wrong column: parse only
    assert sql(db, "SELECT id FROM employee WHERE salary > 1000") == pytest.approx(0.2)
    # columns in another order compare in the reference's order
    two = "SELECT name, dept FROM employee WHERE salary > 1000"
    assert sql(db, "SELECT dept, name FROM employee WHERE salary > 1000", reference=two) == 1.0
    assert sql(db, "SELECT name FROM employee WHERE salary > 1000", weights={"parse": 0, "columns": 0}) == 1.0


def test_ordered_results(db):
    ref = "SELECT name FROM employee ORDER BY salary"
    assert sql(db, "SELECT name FROM employee ORDER BY salary", reference=ref, ordered=True) == 1.0
    assert sql(db, "SELECT name FROM employee ORDER BY salary DESC", reference=ref, ordered=True) == pytest.approx(0.5)


@pytest.mark.parametrize("answer, why", [
    ("DROP TABLE employee", "refused"),
    ("DELETE FROM employee", "refused"),
    ("UPDATE employee SET salary = 0", "refused"),
    ("INSERT INTO employee VALUES (9, 'eve', 1, 'x')", "refused"),
    ("CREATE TABLE evil (a)", "refused"),
    ("CREATE TEMP TABLE evil (a)", "refused"),
    ("ATTACH DATABASE '{tmp}/other.db' AS other", "refused"),
    ("VACUUM INTO '{tmp}/copy.db'", "authorization denied"),
    ("PRAGMA writable_schema = ON", "refused"),
    ("BEGIN", "refused"),
    ("SELECT load_extension('/tmp/evil.so')", "load_extension"),
    ("SELECT readfile('/etc/passwd')", "no such function"),
    ("SELECT 1; DROP TABLE employee", "one statement"),
    ("SELECT randomblob(100000000)", "too big"),
    ("SELECT nme FROM employee", "no such column"),
    ("this is not sql", "syntax error"),
    ("", "no SQL"),
])
def test_hostile_sql_is_refused_scores_zero_and_changes_nothing(db, tmp_path, answer, why):
    g = sql(db, answer.format(tmp=tmp_path))
    assert g == 0.0 and why in g.why
    assert unchanged(db)
    assert not (tmp_path / "other.db").exists() and not (tmp_path / "copy.db").exists()


def test_an_endless_recursive_cte_stops_at_the_time_limit(db):
    endless = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"
    start = time.monotonic()
    g = sql(db, endless, time_limit=0.3)
    assert g == 0.0 and "timed out" in g.why
    assert time.monotonic() - start < 2.0


def test_an_enormous_result_is_cut(db):
    many = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 50000) SELECT x FROM n"
    assert "result larger" in sql(db, many).why


def test_hostile_text(db):
    assert sql(db, "SELECT 'caf\ud800'") == pytest.approx(0.2)  # the surrogate became U+FFFD: a query that runs
    assert sql(db, b"SELECT name FROM employee WHERE salary > 1000 -- \xff") == 1.0
    assert sql(db, "SELECT 1" + " " * 30_000) == 0.0


def test_the_database_is_opened_read_only_even_if_the_authorizer_were_fooled(db):
    from align.graders.sql import QueryRefused, _authorize, run_read_only

    assert _authorize(sqlite3.SQLITE_INSERT, "employee", None, "main", None) == sqlite3.SQLITE_DENY
    with pytest.raises(QueryRefused):
        run_read_only(db, "DELETE FROM employee", 1.0)
    assert unchanged(db)


def test_spec_errors(db, tmp_path):
    with pytest.raises(GraderSpecError, match="not found"):
        grade("sql", "q", "SELECT 1", REFERENCE, db=str(tmp_path / "missing.db"))
    with pytest.raises(GraderSpecError, match="reference query fails"):
        grade("sql", "q", "SELECT 1", "SELECT nope FROM employee", db=db)


def test_reference_result_is_recomputed_when_the_database_changes(db):
    assert sql(db, "SELECT name FROM employee WHERE salary > 2000") < 1.0
    conn = sqlite3.connect(db)
    conn.execute("UPDATE employee SET salary = 100 WHERE name = 'ada'")
    conn.commit()
    conn.close()
    os.utime(db, (time.time() + 5, time.time() + 5))  # a new mtime even within the clock's resolution
    assert sql(db, "SELECT name FROM employee WHERE salary > 2000") == 1.0


def test_multiset_f1():
    assert multiset_f1([], []) == 1.0
    assert multiset_f1([(1,)], []) == 0.0
    assert multiset_f1([(1,), (1,)], [(1,)]) == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert multiset_f1([(0.1 + 0.2,)], [(0.3,)]) == 1.0
