"""SIGKILL of the server mid-load: every acknowledged judgment is stored exactly once.

API annotators (gradio_client, or the JSON API's LabelingClient) cycle next_task -> submit
against a real `labeling serve` process; it is killed with SIGKILL while they work, restarted
on the same store and port, and the annotators sign in again and go on, first re-sending the submit that was in flight at the kill under the same
request id (what a careful client does). Afterwards the store is compared with what was
acknowledged: acknowledged / found / doubled, printed for the record.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import pytest
from sqlmodel import Session, select

from _labeling_seed import PASSWORD, api_client, free_port, seed_project, seed_users, serve_process
from labeling.client import LabelingClient
from labeling.db import open_store
from labeling.models import Assignment, Judgment

N_ANNOTATORS = 6
OVERLAP = 3


def _annotator(name, base, stop, acks, errors, via):
    """Cycle until `stop`; on any failure sign in again (the server may be gone) and re-send the last submit."""
    client, pending = None, None
    while not stop.is_set():
        try:
            client = client or (api_client(base, name) if via == "gradio_client" else LabelingClient(base, name, PASSWORD))
            if pending is None:
                task = _call(client, "next_task", "p")["task"]
                if task is None:
                    return
                pending = (task["assignment_id"], task["client_request_id"], "a_better")
            reply = _call(client, "submit", *pending)
            acks.append((pending[1], reply["judgment_id"]))
            pending = None
        except Exception as err:  # noqa: BLE001 - the server was killed: reconnect and retry
            errors.append(type(err).__name__)
            client = None
            time.sleep(0.2)


def _call(client, endpoint, *args):
    if isinstance(client, LabelingClient):
        names = {"next_task": ["project"], "submit": ["assignment_id", "client_request_id", "choice"]}[endpoint]
        return client.call(endpoint, **dict(zip(names, args)))
    return client.predict(*args, api_name=f"/{endpoint}")


@pytest.mark.parametrize("via", ["gradio_client", "json_api"])
def test_sigkill_mid_load_loses_and_doubles_nothing(store_url, tmp_path, via):
    engine = open_store(store_url)
    seed_project(engine, "p", n_tasks=200, overlap=OVERLAP)
    names = list(seed_users(engine, [f"k{i}" for i in range(N_ANNOTATORS)]))
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    url = store_url
    proc = serve_process(url, port, tmp_path / "serve-1.log")
    stop, acks, errors = threading.Event(), [], []
    workers = [threading.Thread(target=_annotator, args=(n, base, stop, acks, errors, via)) for n in names]
    [w.start() for w in workers]
    try:
        deadline = time.monotonic() + 60
        while len(acks) < 20 and time.monotonic() < deadline:  # mid-load: judgments are flowing
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        before_kill = len(acks)
        proc = serve_process(url, port, tmp_path / "serve-2.log")
        deadline = time.monotonic() + 60
        while len(acks) < before_kill + 20 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        [w.join(timeout=60) for w in workers]
        proc.terminate()
        proc.wait(timeout=30)
    with Session(engine) as s:
        stored = s.exec(select(Judgment)).all()
        held = s.exec(select(Assignment).where(Assignment.slot.is_not(None))).all()
    engine.dispose()
    by_request = Counter(j.client_request_id for j in stored)
    acked = dict(acks)
    found = sum(1 for request, jid in acked.items() if by_request[request] == 1
                and any(j.id == jid for j in stored if j.client_request_id == request))
    doubled = sum(n - 1 for n in by_request.values()) + len(stored) - len({(j.task_id, j.annotator_id)
                                                                            for j in stored})
    print(f"SIGKILL mid-load ({store_url.split(':')[0]}, {via}): acknowledged {len(acked)}, found {found}, "
          f"doubled {doubled}; {len(stored)} stored, {len(errors)} client errors around the kill")
    assert before_kill >= 20 and len(acked) > before_kill, "judgments flowed before and after the kill"
    assert found == len(acked) and doubled == 0
    assert len(acks) == len(acked)  # no request id was acknowledged twice with different answers
    assert max(Counter(a.task_id for a in held).values()) <= OVERLAP
