"""Assignment: priority, overlap, leases, gold rate, skips, shown order, idempotent submits, races."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from _labeling_seed import seed_project, seed_users
from labeling import answers, assign
from labeling.db import open_store, session_scope
from labeling.models import Assignment, Judgment, Project, Task, utcnow
from labeling.projects import set_open
from prefloop.errors import InputError


def _answer(engine, assignment, annotator_id, choice="a_better"):
    return answers.submit_judgment(engine, assignment_id=assignment.id, annotator_id=annotator_id,
                                  client_request_id=uuid.uuid4().hex, choice=choice)


def _drain(engine, project, annotator_id, rng=None):
    """Answer tasks until none is left; the task ids in the order served."""
    served = []
    while (a := assign.next_assignment(engine, project, annotator_id, rng=rng)) is not None:
        served.append(a.task_id)
        _answer(engine, a, annotator_id)
    return served


def test_highest_priority_first_and_set_priorities_reorders(memory_engine):
    tasks = seed_project(memory_engine, n_tasks=4, overlap=2)
    users = seed_users(memory_engine, ["ann", "bob"])
    assign.set_priorities(memory_engine, {tasks[2]: 5.0, tasks[0]: 1.0})
    assert _drain(memory_engine, "p", users["ann"]) == [tasks[2], tasks[0], tasks[1], tasks[3]]
    # Active learning raises a late task to the front for the next annotator.
    assert assign.set_priorities(memory_engine, {tasks[3]: 9.0}) == 1
    assert assign.next_assignment(memory_engine, "p", users["bob"]).task_id == tasks[3]


def test_set_priorities_rejects_unknown_tasks_and_nan(memory_engine):
    tasks = seed_project(memory_engine, n_tasks=1)
    with pytest.raises(InputError, match="no such task"):
        assign.set_priorities(memory_engine, {tasks[0]: 1.0, 999: 2.0})
    with pytest.raises(InputError, match="not a number"):
        assign.set_priorities(memory_engine, {tasks[0]: float("nan")})
    with Session(memory_engine) as s:
        assert s.get(Task, tasks[0]).priority == 0.0  # all-or-nothing


def test_overlap_distinct_annotators_and_never_twice(memory_engine):
    tasks = seed_project(memory_engine, n_tasks=3, overlap=2)
    users = seed_users(memory_engine, ["a1", "a2", "a3"])
    served = {name: _drain(memory_engine, "p", uid) for name, uid in users.items()}
    assert sorted(served["a1"]) == sorted(tasks) and sorted(served["a2"]) == sorted(tasks)
    assert served["a3"] == []  # every task already has its two annotators
    for got in served.values():
        assert len(got) == len(set(got))
    with Session(memory_engine) as s:
        per_task = Counter(j.task_id for j in s.exec(select(Judgment)))
    assert per_task == {t: 2 for t in tasks}


def test_a_claim_takes_the_lowest_free_slot_also_between_taken_ones(memory_engine):
    # Skips free slots out of order: the claim statement computes the lowest free one in SQL.
    tasks = seed_project(memory_engine, n_tasks=1, overlap=3)
    users = seed_users(memory_engine, ["a0", "a1", "a2", "b0", "b1"])
    held = [assign.next_assignment(memory_engine, "p", users[name]) for name in ("a0", "a1", "a2")]
    assert [a.slot for a in held] == [0, 1, 2]
    answers.skip(memory_engine, held[1].id, users["a1"], "unsure")  # slots {0, 2} held
    assert assign.next_assignment(memory_engine, "p", users["b0"]).slot == 1
    answers.skip(memory_engine, held[0].id, users["a0"], "unsure")  # slots {1, 2} held
    again = assign.next_assignment(memory_engine, "p", users["b1"])
    assert (again.task_id, again.slot) == (tasks[0], 0)


def test_open_lease_is_resumed_not_duplicated(memory_engine):
    seed_project(memory_engine, n_tasks=3)
    uid = seed_users(memory_engine, ["ann"])["ann"]
    first = assign.next_assignment(memory_engine, "p", uid)
    again = assign.next_assignment(memory_engine, "p", uid)
    assert again.id == first.id and again.display_order == first.display_order


def test_expired_lease_returns_slot_and_late_submit_is_refused(memory_engine):
    tasks = seed_project(memory_engine, n_tasks=1, lease_seconds=60)
    users = seed_users(memory_engine, ["slow", "fast"])
    lease = assign.next_assignment(memory_engine, "p", users["slow"])
    assert assign.next_assignment(memory_engine, "p", users["fast"]) is None  # overlap 1, slot taken
    later = utcnow() + timedelta(seconds=61)
    taken = assign.next_assignment(memory_engine, "p", users["fast"], now=later)
    assert taken.task_id == tasks[0] and taken.slot == 0
    with pytest.raises(answers.LeaseLost, match="expired"):
        _answer(memory_engine, lease, users["slow"])
    assert assign.next_assignment(memory_engine, "p", users["slow"], now=later) is None  # never the same task twice
    _answer(memory_engine, taken, users["fast"])
    with Session(memory_engine) as s:
        assert s.get(Assignment, lease.id).status == "expired" and s.get(Assignment, lease.id).slot is None
        assert len(s.exec(select(Judgment)).all()) == 1


def test_unreaped_late_submit_is_accepted_and_renews(memory_engine):
    seed_project(memory_engine, n_tasks=1, lease_seconds=60)
    uid = seed_users(memory_engine, ["ann"])["ann"]
    lease = assign.next_assignment(memory_engine, "p", uid)
    later = utcnow() + timedelta(seconds=120)  # past expiry, but nobody took the slot
    judgment = answers.submit_judgment(memory_engine, assignment_id=lease.id, annotator_id=uid,
                                      client_request_id="r1", choice="tie", now=later)
    assert judgment.choice == "tie" and 119_000 <= judgment.ms_spent <= 125_000


def test_skip_needs_reason_frees_slot_and_is_not_served_again(memory_engine):
    tasks = seed_project(memory_engine, n_tasks=2)
    users = seed_users(memory_engine, ["a1", "a2"])
    lease = assign.next_assignment(memory_engine, "p", users["a1"])
    with pytest.raises(InputError, match="reason"):
        answers.skip(memory_engine, lease.id, users["a1"], "  ")
    skipped = answers.skip(memory_engine, lease.id, users["a1"], "I cannot judge maths")
    assert (skipped.status, skipped.slot, skipped.skip_reason) == ("skipped", None, "I cannot judge maths")
    assert assign.next_assignment(memory_engine, "p", users["a2"]).task_id == lease.task_id  # slot is free again
    rest = _drain(memory_engine, "p", users["a1"])
    assert lease.task_id not in rest and rest == [t for t in tasks if t != lease.task_id]
    with pytest.raises(answers.LeaseLost):
        answers.skip(memory_engine, lease.id, users["a1"], "again")


def test_someone_elses_assignment_is_refused(memory_engine):
    seed_project(memory_engine, n_tasks=1)
    users = seed_users(memory_engine, ["a1", "a2"])
    lease = assign.next_assignment(memory_engine, "p", users["a1"])
    with pytest.raises(InputError, match="not one of yours"):
        _answer(memory_engine, lease, users["a2"])
    with pytest.raises(InputError, match="not one of yours"):
        answers.skip(memory_engine, lease.id, users["a2"], "mine now")


def test_double_submit_is_recorded_once(memory_engine):
    seed_project(memory_engine, n_tasks=2)
    uid = seed_users(memory_engine, ["ann"])["ann"]
    lease = assign.next_assignment(memory_engine, "p", uid)
    kwargs = dict(assignment_id=lease.id, annotator_id=uid, client_request_id="click-1", choice="b_better")
    first = answers.submit_judgment(memory_engine, **kwargs)
    second = answers.submit_judgment(memory_engine, **kwargs)
    assert first.id == second.id
    with Session(memory_engine) as s:
        assert len(s.exec(select(Judgment)).all()) == 1
        assert s.get(Assignment, lease.id).status == "done"
    # The shown order is the stored one, whatever the client believes it saw.
    assert first.display_order == lease.display_order


def test_shown_order_is_random_per_assignment_and_stored(memory_engine):
    tasks = seed_project(memory_engine, n_tasks=40)
    uid = seed_users(memory_engine, ["ann"])["ann"]
    rng = random.Random(0)
    flipped = 0
    with Session(memory_engine) as s:
        originals = {t.id: t.candidate_ids for t in s.exec(select(Task))}
    for _ in tasks:
        lease = assign.next_assignment(memory_engine, "p", uid, rng=rng)
        assert sorted(lease.display_order) == sorted(originals[lease.task_id])
        flipped += lease.display_order != originals[lease.task_id]
        _answer(memory_engine, lease, uid)
    assert 10 <= flipped <= 30  # both orders occur, about half each (seeded)


def test_gold_tasks_mixed_in_at_rate_and_free_of_overlap(memory_engine):
    tasks = seed_project(memory_engine, n_tasks=60, n_gold=40, gold_rate=0.25)
    gold = set(tasks[60:])
    users = seed_users(memory_engine, ["a1", "a2"])
    rng = random.Random(1)
    served = []
    for _ in range(60):
        lease = assign.next_assignment(memory_engine, "p", users["a1"], rng=rng)
        served.append(lease.task_id)
        _answer(memory_engine, lease, users["a1"])
    share = sum(t in gold for t in served) / len(served)
    assert 0.12 <= share <= 0.40, share  # binomial(60, 0.25): mean 0.25, sd 0.056
    # Gold tasks take no slot: the second annotator still gets gold tasks the first one did.
    second = _drain(memory_engine, "p", users["a2"], rng=random.Random(2))
    assert gold & set(served) & set(second)


def test_progress_counts_today_total_and_remaining(memory_engine):
    seed_project(memory_engine, n_tasks=5, overlap=1)
    users = seed_users(memory_engine, ["a1", "a2"])
    for _ in range(2):
        _answer(memory_engine, assign.next_assignment(memory_engine, "p", users["a1"]), users["a1"])
    open_lease = assign.next_assignment(memory_engine, "p", users["a1"])
    assert assign.progress(memory_engine, "p", users["a1"]) == assign.Progress(2, 2, 2)
    assert assign.progress(memory_engine, "p", users["a2"]).remaining == 2  # a1's live lease holds one
    tomorrow = utcnow() + timedelta(days=1)
    assert assign.progress(memory_engine, "p", users["a1"], now=tomorrow).done_today == 0
    # Once the lease lapses (lease_seconds 1800 < a day) its task counts as open again for a2.
    assert assign.progress(memory_engine, "p", users["a2"], now=tomorrow).remaining == 3
    assert open_lease.status == "open"


def test_remaining_from_the_kept_project_count_matches_the_exact_one(engine):
    """The app's progress subtracts the annotator's own open tasks from the project's kept count (`theirs`,
    read from `task.is_full`); it must agree with counting the tasks open to them directly, on both stores."""
    seed_project(engine, n_tasks=6, overlap=2)
    users = seed_users(engine, ["a1", "a2", "a3"])
    for name, n in (("a1", 4), ("a2", 2)):
        for _ in range(n):
            _answer(engine, assign.next_assignment(engine, "p", users[name]), users[name])
    assign.next_assignment(engine, "p", users["a3"])  # a live lease holds a slot too
    open_tasks = assign.open_task_count(engine, "p")
    assert open_tasks == 3  # a1 took tasks 1-4, a2 tasks 1-2, a3 task 3: tasks 4, 5 and 6 have a free slot
    for name, uid in users.items():
        exact = assign.progress(engine, "p", uid)
        assert assign.progress(engine, "p", uid, open_tasks=open_tasks) == exact, name
    assert [assign.progress(engine, "p", users[n]).remaining for n in ("a1", "a2", "a3")] == [2, 3, 3]


def test_closed_project_serves_nothing(memory_engine):
    seed_project(memory_engine, n_tasks=1)
    uid = seed_users(memory_engine, ["ann"])["ann"]
    with session_scope(memory_engine) as s:
        set_open(s, s.exec(select(Project)).one(), False)
    with pytest.raises(InputError, match="closed"):
        assign.next_assignment(memory_engine, "p", uid)


def _hammer(engine, user_ids, seconds, errors):
    """Each thread claims and answers (with a double submit) as fast as it can."""
    submitted = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def work(uid):
        try:
            while time.monotonic() < stop:
                lease = assign.next_assignment(engine, "p", uid)
                if lease is None:
                    return
                request = uuid.uuid4().hex
                for _ in range(2):  # the double click
                    answers.submit_judgment(engine, assignment_id=lease.id, annotator_id=uid,
                                           client_request_id=request, choice="tie")
                with lock:
                    submitted[request] += 1
        except Exception as err:  # noqa: BLE001 - reported by the test
            errors.append(repr(err))

    threads = [threading.Thread(target=work, args=(uid,)) for uid in user_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return submitted


def test_concurrent_claims_never_collide_on_a_slot(store_url):
    """A claim reads the slots of its task after it holds the task (SQLite: the write lock; PostgreSQL:
    the row lock), so concurrent claimers never try the same slot; a stale read there made claims
    lose that race over and over under load (and exhaust their retries)."""
    from sqlalchemy import event

    engine = open_store(store_url)
    collisions = []
    event.listen(engine, "handle_error", lambda ctx: collisions.append(str(ctx.original_exception))
                 if "uq_assignment_task_slot" in str(ctx.original_exception)
                 or "assignment.task_id, assignment.slot" in str(ctx.original_exception) else None)
    try:
        seed_project(engine, n_tasks=40, overlap=3)
        users = seed_users(engine, [f"u{i}" for i in range(12)])
        errors: list[str] = []
        submitted = _hammer(engine, list(users.values()), seconds=2.0, errors=errors)
        assert not errors and len(submitted) >= 12
        assert collisions == []
    finally:
        engine.dispose()


def test_concurrent_claims_respect_overlap(store_url):
    engine = open_store(store_url)
    try:
        tasks = seed_project(engine, n_tasks=30, overlap=2)
        users = seed_users(engine, [f"u{i}" for i in range(6)])
        errors: list[str] = []
        submitted = _hammer(engine, list(users.values()), seconds=2.0, errors=errors)
        assert not errors
        with Session(engine) as s:
            judgments = s.exec(select(Judgment)).all()
            live_slots = s.exec(select(Assignment).where(Assignment.slot.is_not(None))).all()
        assert sorted(j.client_request_id for j in judgments) == sorted(submitted)  # each exactly once
        per_task = Counter(j.task_id for j in judgments)
        assert max(per_task.values()) <= 2 and set(per_task) <= set(tasks)
        assert len({(j.task_id, j.annotator_id) for j in judgments}) == len(judgments)
        assert max(Counter(a.task_id for a in live_slots).values()) <= 2
        assert len(judgments) >= 10  # the threads really did work in parallel
    finally:
        engine.dispose()


def _full_marks(engine, task_ids) -> list[bool]:
    with Session(engine) as s:
        return [s.get(Task, t).is_full for t in task_ids]


def test_the_full_mark_follows_every_change_of_a_tasks_slots(store_url):
    """task.is_full (kept by the database's triggers, labeling.store_triggers) after a claim, an answer, a skip,
    a lapsed lease, a deleted assignment and a changed overlap: always 'all overlap slots held'."""
    engine = open_store(store_url)
    tasks = seed_project(engine, n_tasks=2, overlap=2, lease_seconds=60)
    users = seed_users(engine, ["ann", "bob", "cat", "dan"])
    now = utcnow()
    a = assign.next_assignment(engine, "p", users["ann"], now=now)
    assert a.task_id == tasks[0] and _full_marks(engine, tasks) == [False, False]
    b = assign.next_assignment(engine, "p", users["bob"], now=now)
    assert b.task_id == tasks[0] and _full_marks(engine, tasks) == [True, False]
    _answer(engine, a, users["ann"])  # answered: the slot stays held
    assert _full_marks(engine, tasks) == [True, False]
    # the next claim skips the full task in the index and takes the other
    assert assign.next_assignment(engine, "p", users["cat"], now=now).task_id == tasks[1]
    answers.skip(engine, b.id, users["bob"], "unsure")  # the slot goes back
    assert _full_marks(engine, tasks) == [False, False]
    c = assign.next_assignment(engine, "p", users["cat"], now=now)  # cat's lease on tasks[1] is resumed
    assert c.task_id == tasks[1]
    d = assign.next_assignment(engine, "p", users["bob"], now=now)
    assert d.task_id == tasks[1] and _full_marks(engine, tasks) == [False, True]
    assert assign.expire_leases(engine, now=now + timedelta(seconds=61)) == 2  # both leases on tasks[1] lapse
    assert _full_marks(engine, tasks) == [False, False]
    with session_scope(engine) as s:  # overlap 1: tasks[0] (ann's answer) is full; back to 2: not
        s.exec(select(Project)).one().overlap = 1
    assert _full_marks(engine, tasks) == [True, False]
    with session_scope(engine) as s:
        s.exec(select(Project)).one().overlap = 2
    assert _full_marks(engine, tasks) == [False, False]
    e = assign.next_assignment(engine, "p", users["dan"], now=now + timedelta(seconds=62))
    assert e.task_id == tasks[0] and _full_marks(engine, tasks) == [True, False]
    with session_scope(engine) as s:  # an assignment removed by hand (an admin's cleanup) gives its slot back
        s.delete(s.get(Assignment, e.id))
    assert _full_marks(engine, tasks) == [False, False]
    engine.dispose()


def test_a_write_on_the_event_loop_never_waits_and_leaves_no_trace(tmp_path):
    """labeling.event_loop.on_event_loop: a claim that would wait for SQLite's lock (held by another process) raises
    WouldWait at once, writes nothing, and leaves every pooled connection with its busy timeout for the
    worker threads' writes; an ORM write transaction is refused there outright."""
    import sqlite3

    from sqlalchemy import event

    from labeling.event_loop import SQLITE_BUSY_TIMEOUT_MS, WouldWait, on_event_loop

    path = tmp_path / "store.db"
    engine = open_store(f"sqlite:///{path}")
    seed_project(engine, n_tasks=2)
    ann = seed_users(engine, ["ann"])["ann"]
    returned = []
    event.listen(engine, "checkin", lambda dbapi_conn, _record: returned.append(dbapi_conn))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with on_event_loop():
            with pytest.raises(WouldWait):  # within SQLite's 30 s busy timeout: the test would hang for it
                assign.next_assignment(engine, "p", ann)
            with pytest.raises(WouldWait):
                with session_scope(engine):
                    pass
    finally:
        other.rollback()
        other.close()
    assert returned and {c.execute("PRAGMA busy_timeout").fetchone()[0] for c in returned} == {SQLITE_BUSY_TIMEOUT_MS}
    with Session(engine) as session:
        assert session.exec(select(Assignment)).all() == []
    with on_event_loop():  # nothing in the way: the claim runs there
        assert assign.next_assignment(engine, "p", ann) is not None
    engine.dispose()


def test_the_count_of_open_tasks_is_kept_and_recounted_in_the_background(memory_engine):
    """The progress line's project-wide count (labeling.app.service.OpenTasks) scans every task of the
    project. The first count is made by its caller (on the event loop: WouldWait, so that a worker thread
    makes it); once one is kept, a due recount runs in a background thread and callers get the kept one."""
    from labeling.app.service import OpenTasks
    from labeling.event_loop import WouldWait, on_event_loop

    tasks = seed_project(memory_engine, n_tasks=3)
    ann = seed_users(memory_engine, ["ann"])["ann"]
    open_tasks = OpenTasks(ttl=60)
    assert open_tasks.kept(memory_engine, "p") is None
    with on_event_loop(), pytest.raises(WouldWait):
        open_tasks.count(memory_engine, "p")
    assert open_tasks.count(memory_engine, "p") == 3  # off the loop it counts, and keeps the count
    assert assign.next_assignment(memory_engine, "p", ann).task_id in tasks  # overlap 1: 2 tasks still open
    with on_event_loop():
        assert open_tasks.count(memory_engine, "p") == open_tasks.kept(memory_engine, "p") == 3  # kept, fresh
    open_tasks.ttl = 0.0  # due: this call still gets the kept count, and a recount starts
    with on_event_loop():
        assert open_tasks.kept(memory_engine, "p") == 3
    open_tasks.ttl = 60
    deadline = time.monotonic() + 30
    while open_tasks.kept(memory_engine, "p") != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert open_tasks.kept(memory_engine, "p") == 2


def test_event_loop_rule_is_code(memory_engine):
    """labeling.event_loop: a second write in one call on the loop, or a wait point reached after the call's
    write, raises LoopRuleBroken (a rerun of that call in a worker thread could store its write twice);
    off the loop both are allowed."""
    from labeling.app.service import OpenTasks
    from labeling.connections import write_connection
    from labeling.event_loop import LoopRuleBroken, WouldWait, on_event_loop

    def write():
        with write_connection(memory_engine) as conn:
            conn.exec_driver_sql("SELECT 1")

    with on_event_loop():
        write()
        with pytest.raises(LoopRuleBroken, match="second write"):
            write()
    with on_event_loop():
        write()  # then a count that would raise WouldWait: too late, the call has written
        with pytest.raises(LoopRuleBroken, match="already written"):
            OpenTasks().count(memory_engine, "p")
    with on_event_loop():
        with pytest.raises(WouldWait):  # the same point before any write: WouldWait, and the call reruns
            OpenTasks().count(memory_engine, "p")
    write(), write()  # a worker thread may write as often as it needs
