"""The preference store on SQLite and PostgreSQL: schema versioning, constraints, judgments."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from sqlmodel import select

from labeling.db import open_store, session_scope
from labeling.migrations import SchemaError, schema_version
from labeling.judgments import record_judgment
from labeling.models import SCHEMA_VERSION, Candidate, Judgment, Meta, Prompt, Task
from labeling.projects import create_project
from labeling.users import authenticate, create_user
from prefloop.errors import InputError


def populate(engine, mode="pairwise", criteria=None):
    """One project, two annotators, one prompt with two candidates, one task."""
    with session_scope(engine) as s:
        project = create_project(s, "p", mode=mode, criteria=criteria, overlap=2)
        a = create_user(s, "alice", "password-a")
        b = create_user(s, "bob", "password-b")
        prompt = Prompt(project_id=project.id, messages=[{"role": "user", "content": "2+2?"}])
        s.add(prompt)
        s.flush()
        c1, c2 = Candidate(prompt_id=prompt.id, text="4", model="m1"), Candidate(prompt_id=prompt.id, text="5", model="m2")
        s.add_all([c1, c2])
        s.flush()
        task = Task(project_id=project.id, prompt_id=prompt.id, candidate_ids=[c1.id, c2.id])
        s.add(task)
        s.flush()
        return task.id, a.id, b.id, [c1.id, c2.id]


def test_new_store_has_current_schema_version(engine):
    assert schema_version(engine) == SCHEMA_VERSION


def test_newer_schema_is_refused(store_url):
    engine = open_store(store_url)
    with session_scope(engine) as s:
        s.get(Meta, "schema_version").value = str(SCHEMA_VERSION + 1)
    with pytest.raises(SchemaError, match="newer than this prefloop supports"):
        open_store(store_url)


def test_foreign_database_is_refused(sqlite_url):
    from sqlalchemy import create_engine

    with create_engine(sqlite_url).begin() as conn:
        conn.execute(text("CREATE TABLE project (id INTEGER PRIMARY KEY, name TEXT)"))
    with pytest.raises(SchemaError, match="not created by prefloop"):
        open_store(sqlite_url)


def test_older_schema_is_upgraded_by_migrations(sqlite_url, monkeypatch):
    from labeling import migrations

    engine = open_store(sqlite_url)
    with session_scope(engine) as s:
        s.get(Meta, "schema_version").value = str(SCHEMA_VERSION - 1)
    ran = []
    monkeypatch.setitem(migrations.MIGRATIONS, SCHEMA_VERSION - 1, lambda session: ran.append(True))
    assert schema_version(open_store(sqlite_url)) == SCHEMA_VERSION and ran == [True]
    # and a version with no migration path is refused, not misread
    with session_scope(engine) as s:
        s.get(Meta, "schema_version").value = str(SCHEMA_VERSION - 1)
    monkeypatch.delitem(migrations.MIGRATIONS, SCHEMA_VERSION - 1)
    with pytest.raises(SchemaError, match="cannot be upgraded"):
        open_store(sqlite_url)


def test_version_1_store_gains_the_lineage_table(sqlite_url):
    """A store written before the `artifact` table (schema 1) is upgraded by MIGRATIONS[1], its data kept."""
    from sqlalchemy import inspect

    from labeling import db, migrations
    from labeling.lineage import lineage, record

    engine = open_store(sqlite_url)
    task_id, *_ = populate(engine)
    _as_schema_2(engine)
    with engine.begin() as conn:  # what a schema-1 store looks like
        conn.execute(text("DROP TABLE artifact"))
        conn.execute(text("UPDATE prefloop_meta SET value = '1' WHERE key = 'schema_version'"))
    engine.dispose()
    old = db.make_engine(sqlite_url)
    assert "artifact" not in inspect(old).get_table_names() and schema_version(old) == 1
    migrations._upgrade(old)  # the migrations alone, without init_db's create_all
    assert "artifact" in inspect(old).get_table_names() and schema_version(old) == SCHEMA_VERSION
    old.dispose()
    upgraded = open_store(sqlite_url)
    assert schema_version(upgraded) == SCHEMA_VERSION
    with session_scope(upgraded) as s:
        assert s.get(Task, task_id) is not None
    first = record(upgraded, "p", 0, "policy", "base")
    record(upgraded, "p", 1, "policy", "runs/r1", [first])
    assert [r["parents"] for r in lineage(upgraded, "p")] == [[], [first]]


def test_sqlite_uses_wal_foreign_keys_and_busy_timeout(sqlite_url):
    engine = open_store(sqlite_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
    with pytest.raises(Exception, match="FOREIGN KEY"):
        with session_scope(engine) as s:
            s.add(Candidate(prompt_id=999, text="x", model="m"))


def test_passwords_are_hashed_and_checked(engine):
    with session_scope(engine) as s:
        user = create_user(s, "carol", "correct horse")
        assert user.password_hash.startswith("$argon2id$") and "correct" not in user.password_hash
    with session_scope(engine) as s:
        assert authenticate(s, "carol", "correct horse").name == "carol"
        assert authenticate(s, "carol", "wrong password") is None
        assert authenticate(s, "nobody", "correct horse") is None


def test_password_check_agrees_with_argon2_cffi_on_every_kind_of_hash():
    from argon2 import PasswordHasher, Type

    from labeling.users import verify_password

    # libsodium checks the Argon2id hashes argon2-cffi made (p=4, as stored); other kinds fall back.
    for hashed in (PasswordHasher().hash("correct horse"),
                   PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("correct horse"),
                   PasswordHasher(time_cost=1, memory_cost=1024, type=Type.I).hash("correct horse")):
        assert verify_password(hashed, "correct horse")
        assert not verify_password(hashed, "correct horsE")
        assert not verify_password(hashed, "correct horse\udcff")  # not UTF-8: no match, no crash
    good = PasswordHasher().hash("correct horse")
    for broken in ("", "not a hash", good[:-5], good.replace("m=65536", "m=1"), "$argon2id$v=19$garbage"):
        assert not verify_password(broken, "correct horse")


def test_judgment_roundtrip_and_resubmission_counted_once(engine):
    task_id, alice, _, (c1, c2) = populate(engine)
    kwargs = dict(task_id=task_id, annotator_id=alice, display_order=[c2, c1], choice="b_better",
                  client_request_id="req-1", rationale="4 is right", ms_spent=1234)
    first = record_judgment(engine, **kwargs)
    second = record_judgment(engine, **kwargs)
    assert first.id == second.id
    with session_scope(engine) as s:
        rows = s.exec(select(Judgment)).all()
        assert len(rows) == 1 and rows[0].display_order == [c2, c1] and rows[0].choice == "b_better"
    with pytest.raises(InputError, match="already judged"):
        record_judgment(engine, **{**kwargs, "client_request_id": "req-2"})


def test_concurrent_double_submit_is_recorded_once(engine):
    task_id, alice, _, (c1, c2) = populate(engine)
    results, errors = [], []

    def submit():
        try:
            results.append(record_judgment(engine, task_id=task_id, annotator_id=alice, display_order=[c1, c2],
                                           choice="tie", client_request_id="double-click").id)
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(results)) == 1
    with session_scope(engine) as s:
        assert len(s.exec(select(Judgment)).all()) == 1


@pytest.mark.parametrize("bad, message", [
    ({"choice": "a_way_better"}, "choice: expected one of"),
    ({"display_order": [1, 2, 3]}, "display_order must be a permutation"),
    ({"rationale": "x" * 10_001}, "rationale: 10001 characters"),
    ({"ratings": {"speed": {}}}, "unknown criterion"),
    ({"ratings": {"helpfulness": {"CAND": 9}}}, "not an integer in 1..5"),
])
def test_invalid_judgments_are_refused_and_nothing_written(memory_engine, bad, message):
    task_id, alice, _, (c1, c2) = populate(memory_engine, criteria=["helpfulness"])
    kwargs = dict(task_id=task_id, annotator_id=alice, display_order=[c1, c2], choice="a_better",
                  client_request_id="r")
    kwargs.update(bad)
    if "ratings" in bad and "CAND" in bad["ratings"].get("helpfulness", {}):
        kwargs["ratings"] = {"helpfulness": {str(c1): 9}}
    with pytest.raises(InputError, match=message):
        record_judgment(memory_engine, **kwargs)
    with session_scope(memory_engine) as s:
        assert s.exec(select(Judgment)).all() == []


def test_ranking_judgment_needs_a_full_ranking(memory_engine):
    task_id, alice, _, (c1, c2) = populate(memory_engine, mode="ranking")
    with pytest.raises(InputError, match="ranking must order all 2"):
        record_judgment(memory_engine, task_id=task_id, annotator_id=alice, display_order=[c1, c2],
                        ranking=[c1], client_request_id="r")
    j = record_judgment(memory_engine, task_id=task_id, annotator_id=alice, display_order=[c1, c2],
                        ranking=[c2, c1], client_request_id="r2")
    assert j.ranking == [c2, c1]


def _as_schema_2(engine) -> None:
    """What a schema-2 store looks like: no task.is_full, its index or its triggers."""
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        if postgres:
            conn.exec_driver_sql("DROP TRIGGER assignment_slot ON assignment")
            conn.exec_driver_sql("DROP TRIGGER project_overlap ON project")
        else:
            for name in ("assignment_slot_taken", "assignment_slot_changed", "assignment_slot_deleted",
                         "project_overlap_changed"):
                conn.exec_driver_sql(f"DROP TRIGGER {name}")
        _drop_lease_close_trigger(conn)
        conn.exec_driver_sql("DROP INDEX ix_task_open")
        conn.exec_driver_sql("ALTER TABLE task DROP COLUMN is_full")
        conn.exec_driver_sql("UPDATE prefloop_meta SET value = '2' WHERE key = 'schema_version'")


def test_version_2_store_gains_the_full_mark_kept_by_triggers(store_url):
    """MIGRATIONS[2]: task.is_full, marked for the tasks already full, then kept by the triggers; data kept."""
    from sqlalchemy import inspect

    from labeling import assign
    from labeling.models import Assignment

    engine = open_store(store_url)
    task_id, a, b, ids = populate(engine)  # overlap 2
    with session_scope(engine) as s:
        for slot, annotator in enumerate((a, b)):
            s.add(Assignment(task_id=task_id, annotator_id=annotator, slot=slot, display_order=ids))
    _as_schema_2(engine)
    engine.dispose()
    upgraded = open_store(store_url)
    assert schema_version(upgraded) == SCHEMA_VERSION
    assert "ix_task_open" in {i["name"] for i in inspect(upgraded).get_indexes("task")}
    with session_scope(upgraded) as s:
        assert s.get(Task, task_id).is_full  # both slots were held before the upgrade
        held = s.exec(select(Assignment).where(Assignment.annotator_id == b)).one()
        held.status, held.slot = "skipped", None
    with session_scope(upgraded) as s:
        assert not s.get(Task, task_id).is_full  # the trigger saw the slot given back
    with session_scope(upgraded) as s:
        carol = create_user(s, "carol", "password-c").id
    assert assign.next_assignment(upgraded, "p", carol).task_id == task_id  # the freed slot is claimed
    upgraded.dispose()


def _drop_lease_close_trigger(conn) -> None:
    on = " ON judgment" if conn.dialect.name == "postgresql" else ""
    conn.exec_driver_sql(f"DROP TRIGGER judgment_closes_lease{on}")


def _vote(engine, annotator, request_id):
    from labeling import answers, assign

    lease = assign.next_assignment(engine, "p", annotator)
    return lease, answers.submit_judgment(engine, assignment_id=lease.id, annotator_id=annotator,
                                         client_request_id=request_id, choice="a_better")


def test_a_stored_judgment_closes_its_lease_and_a_closed_lease_takes_no_vote(store_url):
    """The vote (one statement on SQLite) stores the judgment and closes the lease together; a lease that
    is no longer open (skipped here) refuses the vote and stores nothing."""
    from labeling import answers, assign
    from labeling.models import Assignment

    engine = open_store(store_url)
    task_id, a, b, ids = populate(engine)
    lease, judgment = _vote(engine, a, "req-a")
    with session_scope(engine) as s:
        assert s.get(Assignment, lease.id).status == "done"
        assert s.get(Judgment, judgment.id).assignment_id == lease.id
    other = assign.next_assignment(engine, "p", b)
    answers.skip(engine, other.id, b, "not my field")
    with pytest.raises(answers.LeaseLost, match="skipped"):
        answers.submit_judgment(engine, assignment_id=other.id, annotator_id=b, client_request_id="req-b",
                               choice="tie")
    with session_scope(engine) as s:
        assert s.exec(select(Judgment).where(Judgment.annotator_id == b)).all() == []
        assert s.get(Assignment, other.id).status == "skipped"
    engine.dispose()


def test_version_3_store_gains_the_lease_closing_trigger(store_url):
    """MIGRATIONS[3]: the trigger that closes a judgment's lease; a vote on the upgraded store closes it."""
    from labeling.models import Assignment

    engine = open_store(store_url)
    task_id, a, b, ids = populate(engine)
    with engine.begin() as conn:
        _drop_lease_close_trigger(conn)
        conn.exec_driver_sql("UPDATE prefloop_meta SET value = '3' WHERE key = 'schema_version'")
    engine.dispose()
    upgraded = open_store(store_url)
    assert schema_version(upgraded) == SCHEMA_VERSION
    lease, _ = _vote(upgraded, a, "req-a")
    with session_scope(upgraded) as s:
        assert s.get(Assignment, lease.id).status == "done"
    upgraded.dispose()
