"""The database's own bookkeeping of `task.is_full` (all of the project's `overlap` slots held).

A claim walks the queue (labeling.assign) for the first task with a free slot. Without a mark it
walked past every full task, about 1 us each inside the write lock, so claims slowed as a project
filled. The mark is kept by triggers, not by the Python paths that take and give back slots
(claim, lease expiry, skip, and any later one), so no path can forget it: after any change of an
assignment's slot, and of a project's overlap, the task's slots are counted again.

The claim still counts the slots itself; `is_full` only lets it skip full tasks in the index. A
stale `false` would cost time, never correctness. A stale `true` would hide a free slot: it cannot
arise on SQLite (one writer at a time), and on PostgreSQL the only writer of `true` is a claim,
which holds the task's row lock; a slot given back concurrently recounts after it, under that lock.

Schema 4 adds one more: a judgment stored for an assignment closes that assignment's lease (open ->
done). On SQLite that makes the vote one statement (labeling.answers.submit_judgment): under load every
statement inside the process's write lock cost a wait for the GIL, and the lock was the ceiling.
Every other path that stores a judgment for an assignment closes it itself too, so the trigger
finds the lease already done there (and on PostgreSQL, whose vote keeps its two statements).
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

# the slots held of task `tid`, set against its project's overlap
_FULL = ("(SELECT count(*) FROM assignment s WHERE s.task_id = {tid} AND s.slot IS NOT NULL)"
         " >= (SELECT p.overlap FROM project p WHERE p.id = task.project_id)")

SQLITE = [
    "CREATE TRIGGER IF NOT EXISTS assignment_slot_taken AFTER INSERT ON assignment WHEN NEW.slot IS NOT NULL "
    f"BEGIN UPDATE task SET is_full = {_FULL.format(tid='NEW.task_id')} WHERE id = NEW.task_id; END",
    "CREATE TRIGGER IF NOT EXISTS assignment_slot_changed AFTER UPDATE OF slot ON assignment "
    "WHEN OLD.slot IS NOT NEW.slot "
    f"BEGIN UPDATE task SET is_full = {_FULL.format(tid='NEW.task_id')} WHERE id = NEW.task_id; END",
    "CREATE TRIGGER IF NOT EXISTS assignment_slot_deleted AFTER DELETE ON assignment WHEN OLD.slot IS NOT NULL "
    f"BEGIN UPDATE task SET is_full = {_FULL.format(tid='OLD.task_id')} WHERE id = OLD.task_id; END",
    "CREATE TRIGGER IF NOT EXISTS project_overlap_changed AFTER UPDATE OF overlap ON project "
    f"BEGIN UPDATE task SET is_full = {_FULL.format(tid='task.id')} WHERE project_id = NEW.id; END",
]

POSTGRESQL = [
    "CREATE OR REPLACE FUNCTION prefloop_assignment_slot() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "DECLARE tid integer;\n"
    "BEGIN\n"
    "  IF TG_OP = 'INSERT' AND NEW.slot IS NULL THEN RETURN NULL; END IF;\n"
    "  IF TG_OP = 'UPDATE' AND OLD.slot IS NOT DISTINCT FROM NEW.slot THEN RETURN NULL; END IF;\n"
    "  IF TG_OP = 'DELETE' THEN IF OLD.slot IS NULL THEN RETURN NULL; END IF; tid := OLD.task_id;\n"
    "  ELSE tid := NEW.task_id; END IF;\n"
    f"  UPDATE task SET is_full = {_FULL.format(tid='tid')} WHERE id = tid;\n"
    "  RETURN NULL;\n"
    "END $$",
    "CREATE OR REPLACE FUNCTION prefloop_project_overlap() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    f"  UPDATE task SET is_full = {_FULL.format(tid='task.id')} WHERE project_id = NEW.id;\n"
    "  RETURN NULL;\n"
    "END $$",
    "DROP TRIGGER IF EXISTS assignment_slot ON assignment",
    "CREATE TRIGGER assignment_slot AFTER INSERT OR DELETE OR UPDATE OF slot ON assignment "
    "FOR EACH ROW EXECUTE FUNCTION prefloop_assignment_slot()",
    "DROP TRIGGER IF EXISTS project_overlap ON project",
    "CREATE TRIGGER project_overlap AFTER UPDATE OF overlap ON project "
    "FOR EACH ROW WHEN (OLD.overlap IS DISTINCT FROM NEW.overlap) EXECUTE FUNCTION prefloop_project_overlap()",
]


# schema 4: a judgment closes its assignment's lease (a lease already closed is left as it is)
_CLOSE = "UPDATE assignment SET status = 'done' WHERE id = NEW.assignment_id AND status = 'open'"
LEASE_SQLITE = [
    "CREATE TRIGGER IF NOT EXISTS judgment_closes_lease AFTER INSERT ON judgment "
    f"WHEN NEW.assignment_id IS NOT NULL BEGIN {_CLOSE}; END",
]
LEASE_POSTGRESQL = [
    "CREATE OR REPLACE FUNCTION prefloop_judgment_closes_lease() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    f"BEGIN {_CLOSE}; RETURN NULL; END $$",
    "DROP TRIGGER IF EXISTS judgment_closes_lease ON judgment",
    "CREATE TRIGGER judgment_closes_lease AFTER INSERT ON judgment FOR EACH ROW "
    "WHEN (NEW.assignment_id IS NOT NULL) EXECUTE FUNCTION prefloop_judgment_closes_lease()",
]


def install(conn: Connection) -> None:
    """Every trigger, on a new store."""
    install_full_mark(conn)
    install_lease_close(conn)


def install_full_mark(conn: Connection) -> None:
    """The is_full triggers (a new store, or the migration to schema 3), then mark every task as it is."""
    _run(conn, POSTGRESQL if conn.dialect.name == "postgresql" else SQLITE)
    conn.exec_driver_sql(f"UPDATE task SET is_full = {_FULL.format(tid='task.id')}")


def install_lease_close(conn: Connection) -> None:
    """The judgment's lease-closing trigger (a new store, or the migration to schema 4)."""
    _run(conn, LEASE_POSTGRESQL if conn.dialect.name == "postgresql" else LEASE_SQLITE)


def _run(conn: Connection, statements: list[str]) -> None:
    for statement in statements:
        conn.exec_driver_sql(statement)
