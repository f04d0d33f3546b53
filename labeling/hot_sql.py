"""The statements of the annotator hot path (who is asking, claim, show, vote, progress), made once.

Built with the ORM on every call, these statements cost more server CPU than the database
spent running them: constructing the expressions, computing their cache keys and loading ORM
objects was most of the time in a profile under load (BENCHMARKS.md, "Labeling server: profile
and ceiling"). Here each is a `text()` made at import, its parameters and result columns typed
with the tables' own column types (JSON, UTC datetimes, booleans), so what is read and written
is exactly what the ORM reads and writes. The SQL runs unchanged on SQLite and PostgreSQL, except
the claim's row lock (`FOR UPDATE ... SKIP LOCKED`), which SQLite has no need or syntax for.
"""

from __future__ import annotations

from sqlalchemy import bindparam, column, exists, select, text
from sqlalchemy.engine import Connection

from labeling.models import Annotator, Assignment, Judgment, Project, Prompt, Task

_AT = Assignment.__table__.c.expires_at.type  # UTCDateTime: the format the ORM stores (string on SQLite)
_JSON = Task.__table__.c.candidate_ids.type


def _stmt(sql: str, binds: tuple[str, ...] = (), expanding: tuple[str, ...] = (), **types):
    """text(sql) with datetime parameters `binds`, list parameters `expanding`, and for a SELECT every
    result column in order (typed as `types` says, by name).

    In order, not by name only: SQLAlchemy then keeps the result's column map with the compiled
    statement instead of matching cursor.description by name on every execution, which cost more
    CPU than most of these statements (BENCHMARKS.md, labeling server; tests/test_hot_sql.py checks
    each list against what SQLite returns)."""
    stmt = text(sql).bindparams(*[bindparam(name, type_=_AT) for name in binds],
                                *[bindparam(name, expanding=True) for name in expanding])
    if not sql.startswith("SELECT "):
        return stmt
    names = result_names(sql)
    unknown = set(types) - set(names)  # a type for no column would leave the value untyped, silently
    assert not unknown, f"typed columns {sorted(unknown)} are not among the result's {names}"
    return stmt.columns(*[column(name, types.get(name)) for name in names])


def result_names(sql: str) -> list[str]:
    """The names of a SELECT's result columns: each top-level item's alias, else its column name."""
    items, depth, start = [], 0, len("SELECT ")
    for i, char in enumerate(sql):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and (char == "," or sql.startswith(" FROM ", i)):
            items.append(sql[start:i].strip())
            start = i + 1
            if char != ",":
                break
    return [item.split(" AS ")[-1].split(".")[-1] for item in items]


# A regular task (not gold): gold is SQL NULL or the JSON literal null (see assign._is_gold).
REGULAR = "(t.gold IS NULL OR CAST(t.gold AS VARCHAR) = 'null')"
# Slots held by answered or still-live assignments of task t (a lapsed lease counts as free).
LIVE_SLOTS = ("(SELECT count(*) FROM assignment s WHERE s.task_id = t.id AND s.slot IS NOT NULL "
              "AND (s.status != 'open' OR s.expires_at >= :at))")

VIEWER = _stmt("SELECT id, name, role, active FROM annotator WHERE name = :name",
               active=Annotator.__table__.c.active.type)
PROJECT_COLUMNS = "id, name, mode, guidelines, criteria, overlap, gold_rate, lease_seconds, is_open"
_PROJECT_TYPES = dict(criteria=_JSON, is_open=Project.__table__.c.is_open.type)
PROJECT_BY_NAME = _stmt(f"SELECT {PROJECT_COLUMNS} FROM project WHERE name = :key", **_PROJECT_TYPES)
PROJECT_BY_ID = _stmt(f"SELECT {PROJECT_COLUMNS} FROM project WHERE id = :key", **_PROJECT_TYPES)

EXPIRE = _stmt("UPDATE assignment SET status = 'expired', slot = NULL WHERE status = 'open' AND expires_at < :at",
               ("at",))
ASSIGNMENT_COLUMNS = "a.id, a.task_id, a.annotator_id, a.slot, a.display_order, a.status, a.created_at, a.expires_at"
_ASSIGNMENT_TYPES = dict(display_order=_JSON, created_at=_AT, expires_at=_AT)
# The annotator's live leases in the project (rule 2 of labeling.assign): read by LIVE_LEASE, excluded by CLAIM.
_LIVE_LEASES = ("FROM assignment a JOIN task t ON t.id = a.task_id WHERE t.project_id = :project_id"
                " AND a.annotator_id = :annotator_id AND a.status = 'open' AND a.expires_at >= :at")
LIVE_LEASE = _stmt(f"SELECT {ASSIGNMENT_COLUMNS} {_LIVE_LEASES} ORDER BY a.id LIMIT 1", ("at",),
                   **_ASSIGNMENT_TYPES)
# The lowest slot of task t that no assignment holds: 0, else the smallest s + 1 not held. With fewer than
# `overlap` held (the claim's condition) it is below `overlap`: slots 0 .. f-1 are all held, so f <= held.
LOWEST_FREE_SLOT = ("CASE WHEN NOT EXISTS (SELECT 1 FROM assignment z WHERE z.task_id = t.id AND z.slot = 0) THEN 0"
                    " ELSE (SELECT min(s.slot) + 1 FROM assignment s WHERE s.task_id = t.id AND s.slot IS NOT NULL"
                    " AND NOT EXISTS (SELECT 1 FROM assignment n WHERE n.task_id = t.id AND n.slot = s.slot + 1))"
                    " END")
# `is_full = false`: the walk of ix_task_open starts past the full tasks (labeling.store_triggers); the
# slot count stays the arbiter. No row either when the annotator holds a live lease in the project (rule 2
# of labeling.assign, then read by LIVE_LEASE only in that case): one statement fewer in a claim's write.
_CLAIM = ("SELECT t.id, t.candidate_ids{free} FROM task t"
          " WHERE t.project_id = :project_id AND t.is_full = false AND " + REGULAR +
          " AND NOT EXISTS (SELECT 1 FROM assignment m WHERE m.task_id = t.id AND m.annotator_id = :annotator_id)"
          " AND (SELECT count(*) FROM assignment s WHERE s.task_id = t.id AND s.slot IS NOT NULL) < :overlap"
          " AND NOT EXISTS (SELECT 1 " + _LIVE_LEASES + ")"
          " ORDER BY t.priority DESC, t.id LIMIT :n")
# SQLite: the claim holds the write lock, so the statement's own free slot is current (assign._claim_regular).
# PostgreSQL: concurrent claimers skip the rows another one is taking instead of colliding; the free slot is
# read after the row lock, so the statement does not compute one.
CLAIM = {"sqlite": _stmt(_CLAIM.format(free=", " + LOWEST_FREE_SLOT + " AS free_slot"), ("at",),
                         candidate_ids=_JSON),
         "postgresql": _stmt(_CLAIM.format(free="") + " FOR UPDATE OF t SKIP LOCKED", ("at",), candidate_ids=_JSON)}
SLOTS = _stmt("SELECT slot FROM assignment WHERE task_id = :task_id AND slot IS NOT NULL")
INSERT_ASSIGNMENT = Assignment.__table__.insert().returning(Assignment.__table__.c.id)

# One row per shown candidate, each with the task's project and prompt: one statement per task view. Under
# load each statement costs far more than its SQL (the thread waits to get the GIL back after every call
# into SQLite: BENCHMARKS.md), so the hot path asks in as few statements as it can.
TASK_VIEW = _stmt("SELECT p.name, p.mode, p.guidelines, p.criteria, pr.messages, c.id AS candidate_id, c.text "
                  "FROM task t JOIN project p ON p.id = t.project_id JOIN prompt pr ON pr.id = t.prompt_id "
                  "JOIN candidate c ON c.id IN :ids WHERE t.id = :task_id", expanding=("ids",),
                  criteria=_JSON, messages=Prompt.__table__.c.messages.type)

# prior_id: a judgment already stored under this request id (a repeated request), read in the same statement
OWN_ASSIGNMENT = _stmt(
    f"SELECT {ASSIGNMENT_COLUMNS}, t.candidate_ids, p.name AS project_name, p.mode, p.criteria, p.is_open, "
    "(SELECT r.id FROM judgment r WHERE r.client_request_id = :request_id) AS prior_id "
    "FROM assignment a JOIN task t ON t.id = a.task_id JOIN project p ON p.id = t.project_id "
    "WHERE a.id = :assignment_id", **_ASSIGNMENT_TYPES, candidate_ids=_JSON, **_PROJECT_TYPES)
CLOSE_LEASE = _stmt("UPDATE assignment SET status = 'done' WHERE id = :assignment_id AND status = 'open'")
_J = Judgment.__table__.c
JUDGMENT_BY_REQUEST = _stmt(f"SELECT {', '.join(_J.keys())} FROM judgment WHERE client_request_id = :request_id",
                            **{c.name: c.type for c in _J if c.name in (
                                "display_order", "ranking", "ratings", "created_at")})
INSERT_JUDGMENT = Judgment.__table__.insert().returning(_J.id)
# SQLite's vote in one statement: the judgment is stored only while its lease is open, and the trigger
# judgment_closes_lease (labeling.store_triggers) closes it in the same statement. No row: the lease is gone.
JUDGMENT_VALUES = [c for c in Judgment.__table__.c if c.name != "id"]  # what an INSERT of a judgment gives
_OPEN_LEASE = exists().where(Assignment.__table__.c.id == bindparam("assignment_id"),
                             Assignment.__table__.c.status == "open")
VOTE = Judgment.__table__.insert().from_select(
    [c.name for c in JUDGMENT_VALUES],
    select(*[bindparam(c.name, type_=c.type) for c in JUDGMENT_VALUES]).where(_OPEN_LEASE)
).returning(_J.id)


def _progress(key: str):
    """The annotator's progress in one statement: the project (NULL: none by that `key`), their judgments in it
    (all, since midnight) and the open tasks already theirs.

    Both counts start from the annotator's own rows, so they cost O(their history), not O(the project's tasks):
    `+t.project_id` is no index term for SQLite (unary plus; the same value on PostgreSQL), which otherwise
    walked every task of the project. "Open" is `is_full = false` (labeling.store_triggers), not a count of
    live slots per task: 2 ms instead of 18 for 10,000 judgments; a lease that lapsed since the last sweep
    (at most EXPIRE_EVERY_S ago while claims come in) still counts as held here, as it does for claims."""
    project_id, overlap = (f"(SELECT {column} FROM project WHERE {key} = :key)" for column in ("id", "overlap"))
    theirs = ("(SELECT count(*) FROM assignment a JOIN task t ON t.id = a.task_id WHERE a.annotator_id = :annotator_id"
              f" AND +t.project_id = {project_id} AND t.is_full = false AND {REGULAR})")
    return _stmt(f"SELECT {project_id} AS project_id, {overlap} AS overlap, count(j.id) AS done_total, "
                 "count(CASE WHEN j.created_at >= :midnight THEN 1 END) AS done_today, "
                 f"{theirs} AS theirs FROM judgment j JOIN task t ON t.id = j.task_id "
                 f"WHERE +t.project_id = {project_id} AND j.annotator_id = :annotator_id", ("midnight",))


PROGRESS = {"name": _progress("name"), "id": _progress("id")}
OPEN_TO_ANNOTATOR = _stmt(
    "SELECT count(*) FROM task t WHERE t.project_id = :project_id AND " + REGULAR +
    " AND NOT EXISTS (SELECT 1 FROM assignment m WHERE m.task_id = t.id AND m.annotator_id = :annotator_id)"
    " AND " + LIVE_SLOTS + " < :overlap", ("at",))
OPEN_TASKS = _stmt("SELECT count(*) FROM task t WHERE t.project_id = :project_id AND " + REGULAR +
                   " AND " + LIVE_SLOTS + " < :overlap", ("at",))


def one(conn: Connection, stmt, **params):
    """The first row (attribute access by column name), or None."""
    return conn.execute(stmt, params).first()


def claim_statement(conn: Connection):
    return CLAIM["postgresql" if conn.dialect.name == "postgresql" else "sqlite"]


def as_assignment(row) -> Assignment:
    """A detached Assignment from a row of ASSIGNMENT_COLUMNS."""
    return Assignment(**{k: getattr(row, k) for k in (
        "id", "task_id", "annotator_id", "slot", "display_order", "status", "created_at", "expires_at")})


def as_judgment(row) -> Judgment:
    return Judgment(**row._mapping)
