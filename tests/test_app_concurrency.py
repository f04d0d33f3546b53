"""Load: many programmatic annotators at once through the API endpoints, for a few seconds.

Afterwards every acknowledged judgment is stored exactly once (each was also submitted
twice at the same moment, the double click), no task has more than `overlap`
annotators, and no annotator judged a task twice. On PostgreSQL two server processes
share the database and each double submit goes through both of them.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest
from sqlmodel import Session, select

from _labeling_seed import api_client, free_port, seed_project, seed_users, serve_process, start_server
from labeling.db import open_store
from labeling.models import Assignment, Judgment, Task

N_ANNOTATORS = 8
SECONDS = 3.0
MIN_JUDGMENTS = 3  # per annotator, however slow the machine
OVERLAP = 3
N_TASKS = 40


def _annotator(clients, seconds, min_judgments, log, errors, seed):
    """One simulated annotator: next task, then the same answer through two clients at once; sometimes a skip.

    Works for `seconds`, and on a busy machine on until it has `min_judgments`.
    """
    rng = random.Random(seed)
    first, second = clients
    stop, done = time.monotonic() + seconds, 0
    try:
        while time.monotonic() < stop or done < min_judgments:
            task = first.predict("load", api_name="/next_task")["task"]
            if task is None:
                return
            if rng.random() < 0.1:
                first.predict(task["assignment_id"], "simulated skip", api_name="/skip")
                continue
            args = (task["assignment_id"], task["client_request_id"], rng.choice(["a_better", "tie", "b_better"]))
            jobs = [client.submit(*args, api_name="/submit") for client in (first, second)]
            replies = [job.result(timeout=60) for job in jobs]
            assert replies[0] == replies[1], replies
            log.append((task["client_request_id"], replies[0]["judgment_id"]))
            done += 1
    except Exception as err:  # noqa: BLE001 - collected and asserted by the test
        errors.append(repr(err))


def _run_load(urls, names):
    """Each annotator gets two clients (on urls[0] and urls[-1]); all start together."""
    clients = {}
    lock = threading.Lock()

    def connect(name):
        first = api_client(urls[0], name)
        # Two clients even with one server: a gradio_client Client is not safe for two
        # jobs submitted at once from one thread (its internal queues race).
        pair = (first, api_client(urls[-1], name))
        with lock:
            clients[name] = pair

    threads = [threading.Thread(target=connect, args=(n,)) for n in names]
    [t.start() for t in threads]
    [t.join() for t in threads]
    log, errors = [], []
    workers = [threading.Thread(target=_annotator, args=(clients[n], SECONDS, MIN_JUDGMENTS, log, errors, i))
               for i, n in enumerate(names)]
    [t.start() for t in workers]
    [t.join() for t in workers]
    return log, errors


def _check(engine, log, errors):
    assert not errors, errors[:3]
    with Session(engine) as s:
        judgments = s.exec(select(Judgment)).all()
        held = s.exec(select(Assignment).where(Assignment.slot.is_not(None))).all()
        tasks = {t.id for t in s.exec(select(Task))}
    assert len(log) >= N_ANNOTATORS * MIN_JUDGMENTS
    assert Counter(j.client_request_id for j in judgments) == Counter(request for request, _ in log)
    assert sorted(j.id for j in judgments) == sorted(judgment_id for _, judgment_id in log)
    per_task = Counter(j.task_id for j in judgments)
    assert set(per_task) <= tasks and max(per_task.values()) <= OVERLAP
    assert len({(j.task_id, j.annotator_id) for j in judgments}) == len(judgments)
    assert max(Counter(a.task_id for a in held).values()) <= OVERLAP
    for j in judgments:  # the stored order is the one the annotator was shown
        assert j.display_order == next(a.display_order for a in held if a.id == j.assignment_id)


def _seed(engine):
    seed_project(engine, "load", n_tasks=N_TASKS, overlap=OVERLAP)
    return list(seed_users(engine, [f"sim{i}" for i in range(N_ANNOTATORS)]))


def test_many_api_annotators_on_sqlite(tmp_path):
    engine = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    names = _seed(engine)
    url, server = start_server(engine)
    try:
        log, errors = _run_load([url], names)
    finally:
        server.close()
    _check(engine, log, errors)
    engine.dispose()


@pytest.mark.postgres
def test_many_api_annotators_on_two_processes_sharing_postgres(pg_url, tmp_path):
    engine = open_store(pg_url)
    names = _seed(engine)
    port = free_port()
    proc = serve_process(pg_url, port, tmp_path / f"serve-{port}.log")
    url, server = start_server(engine)
    try:
        log, errors = _run_load([url, f"http://127.0.0.1:{port}/"], names)
    finally:
        server.close()
        proc.terminate()
        proc.wait(timeout=30)
    _check(engine, log, errors)
    engine.dispose()
