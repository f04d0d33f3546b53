"""The JSON API (`POST /v1/<endpoint>`, labeling.app.rest) against a real server: same login, same rules."""

from __future__ import annotations

import httpx
import pytest
from sqlmodel import Session, select

from _labeling_seed import PASSWORD, seed_project, seed_users, start_server
from labeling.client import ApiError, LabelingClient
from labeling.db import open_store, session_scope
from labeling.models import Judgment
from labeling.users import set_active


@pytest.fixture
def served(tmp_path):
    engine = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    seed_project(engine, "p", n_tasks=3, overlap=1, criteria=["helpfulness"])
    seed_users(engine, ["ann", "bob"])
    url, app = start_server(engine)
    yield engine, url
    app.close()
    engine.dispose()


def test_a_cycle_is_recorded_once_and_a_retry_returns_the_first_answer(served):
    engine, url = served
    with LabelingClient(url, "ann", PASSWORD) as client:
        reply = client.next_task("p")
        task = reply["task"]
        assert [r["label"] for r in task["responses"]] == ["A", "B"]
        assert "secret-model" not in str(reply)  # model names never reach an annotator
        assert reply["progress"]["remaining"] == 2  # 3 tasks, overlap 1, one now theirs
        assert client.next_task("p")["task"]["assignment_id"] == task["assignment_id"]  # resumed, not a second
        first = client.submit(task["assignment_id"], task["client_request_id"], choice="b_better",
                              ratings={"helpfulness": {"A": 2, "B": 5}}, rationale="B is right")
        again = client.submit(task["assignment_id"], task["client_request_id"], choice="a_better")
        assert again["judgment_id"] == first["judgment_id"]
        assert client.progress("p")["done_total"] == 1
    with Session(engine) as session:
        rows = session.exec(select(Judgment)).all()
    assert len(rows) == 1 and rows[0].choice == "b_better" and rows[0].rationale == "B is right"
    shown_b = str(rows[0].display_order[1])
    assert rows[0].ratings == {"helpfulness": {str(rows[0].display_order[0]): 2, shown_b: 5}}


JSON = {"content-type": "application/json"}


def test_refusals_are_one_line_errors(served):
    engine, url = served
    assert httpx.post(url + "v1/next_task", json={"project": "p"}).status_code == 401  # not signed in
    with pytest.raises(ApiError, match="sign-in as 'ann' refused"):
        LabelingClient(url, "ann", "wrong-password")
    with LabelingClient(url, "ann", PASSWORD) as ann, LabelingClient(url, "bob", PASSWORD) as bob:
        task = ann.next_task("p")["task"]
        with pytest.raises(ApiError, match="choice: expected one of"):
            ann.submit(task["assignment_id"], task["client_request_id"], choice="a_way_better")
        with pytest.raises(ApiError, match="not one of yours"):
            bob.submit(task["assignment_id"], "b" * 32, choice="tie")
        with pytest.raises(ApiError, match="parameters:"):
            ann.call("next_task", projekt="p")
        with pytest.raises(ApiError, match="admins only"):
            ann.call("list_projects")
        with pytest.raises(ApiError, match="does not exist"):
            ann.next_task("nope")
        assert ann.http.post("v1/next_task", content=b"[1, 2", headers=JSON).status_code == 400
        # what a cross-site form or no-preflight fetch can send, with the annotator's cookie: refused, no claim
        plain = ann.http.post("v1/next_task", content=b'{"project": "p"}', headers={"content-type": "text/plain"})
        assert plain.status_code == 415 and "application/json" in plain.json()["error"]
        assert ann.http.post("v1/no_such_thing", json={}).status_code == 404
        # a Gradio file route ending like a JSON API path is still Gradio's, and still admins-only
        assert ann.http.get("gradio_api/file/tmp/v1/export").status_code == 403
        with session_scope(engine) as session:
            set_active(session, "bob", False)
        with pytest.raises(ApiError, match="not active"):  # on the next call, not the next login
            bob.next_task("p")
    with Session(engine) as session:
        assert session.exec(select(Judgment)).all() == []


def _in_thread(fn):
    """Run fn() in a thread: (thread, {"result" or "error": ...}) once it ends."""
    import threading

    out: dict = {}

    def run():
        try:
            out["result"] = fn()
        except Exception as err:  # noqa: BLE001 - handed to the test's assertions
            out["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_calls_on_the_event_loop_wait_for_a_taken_write_lock_in_a_worker_thread(served):
    """On SQLite the annotator's calls run on the event loop (labeling.app.rest). While another thread of the
    process holds the write lock (a page event's write), a claim and a vote must wait in a worker thread, and
    the loop must keep answering others; once the lock is free both complete, each stored once."""
    engine, url = served
    # A 10 s timeout: a loop that waited for the lock (or for SQLite's 30 s busy timeout) fails the probes.
    with LabelingClient(url, "ann", PASSWORD, timeout=10) as ann, \
            LabelingClient(url, "bob", PASSWORD, timeout=10) as bob:
        task = ann.next_task("p")["task"]
        with engine.write_lock:
            vote, voted = _in_thread(lambda: ann.submit(task["assignment_id"], task["client_request_id"],
                                                        choice="tie"))
            claim, claimed = _in_thread(lambda: bob.next_task("p"))
            # The loop answers while both writes wait (a loop waiting for the lock would hang these calls).
            assert ann.progress("p")["done_total"] == 0 and bob.call("whoami")["name"] == "bob"
            assert vote.is_alive() and claim.is_alive()
        vote.join(30)
        claim.join(30)
    assert voted["result"]["recorded"] and claimed["result"]["task"]["assignment_id"] != task["assignment_id"]
    with Session(engine) as session:
        assert [j.choice for j in session.exec(select(Judgment)).all()] == ["tie"]


def test_calls_on_the_event_loop_wait_for_another_process_writing_the_store_in_a_worker_thread(served, tmp_path):
    """Another process (here a plain sqlite3 connection) holds SQLite's write lock: a call on the loop must not
    sleep in SQLite's busy handler, which would stall every other request for up to its 30 s timeout."""
    import sqlite3

    engine, url = served
    with LabelingClient(url, "ann", PASSWORD, timeout=10) as ann, \
            LabelingClient(url, "bob", PASSWORD, timeout=10) as bob:
        task = ann.next_task("p")["task"]
        other = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            vote, voted = _in_thread(lambda: ann.submit(task["assignment_id"], task["client_request_id"],
                                                        choice="a_better"))
            claim, claimed = _in_thread(lambda: bob.next_task("p"))
            assert bob.call("whoami")["name"] == "bob" and ann.progress("p")["done_total"] == 0
            assert vote.is_alive() and claim.is_alive()
        finally:
            other.rollback()
            other.close()
        vote.join(30)
        claim.join(30)
        assert voted["result"]["recorded"] and claimed["result"]["task"] is not None
        assert ann.progress("p")["done_total"] == 1


MALFORMED = [  # (endpoint, raw body, what the one-line error says): each kind of bad body issue 20 lists
    ("submit", b'{"assignment_id": 1000000000000000000000000000000, "client_request_id": "x", "choice": "tie"}',
     "assignment_id: 1000000000000000000000000000000 is out of range"),
    ("submit", b'{"assignment_id": -9223372036854775809, "client_request_id": "x"}', "out of range"),
    ("submit", b'{"assignment_id": 1' + b"0" * 5000 + b', "client_request_id": "x"}', "body: not JSON"),
    ("next_task", b"[" * 100_000 + b"]" * 100_000, "body: brackets nested over 16 deep"),
    ("next_task", b'{"project": ' * 50_000 + b'"p"' + b"}" * 50_000, "body: brackets nested over 16 deep"),
    ("next_task", b"[" * 100_000, "body: brackets nested over 16 deep, or unbalanced"),
    # the limit is exact, over brackets of both kinds: 16 levels are parsed (and then refused by type), 17 are not
    ("next_task", b'{"project": ' + b'[{"a": ' * 7 + b"[1]" + b"}]" * 7 + b"}", "project: expected a string"),
    ("next_task", b'{"project": ' + b'[{"a": ' * 8 + b"1" + b"}]" * 8 + b"}", "body: brackets nested over 16"),
    ("next_task", b'{"project": "' + b"[" * 100 + b'"}', "project '[[[[[[[[["),  # brackets in a string are text
    ("next_task", b'{"project": 7}', "project: expected a string, got 7"),
    ("next_task", b'{"project": ["p"]}', "project: expected a string, got a list"),
    ("next_task", b'{"project": null}', "project: expected a string, got None"),
    ("next_task", b'{"project": "p\\u0000"}', "project: a NUL character is not allowed"),
    ("next_task", b'{"project": "\\ud800"}', "project: not valid Unicode"),
    # a surrogate as raw bytes (not UTF-8, but json.loads decodes with surrogatepass)
    ("next_task", b'{"project": "\xed\xa0\x80"}', "project: not valid Unicode"),
    ("next_task", b'{"project": "p", "admin": true}', "parameters: unknown 'admin'; next_task takes project"),
    ("next_task", b'{}', "parameters: next_task needs project"),
    ("next_task", b'"p"', "body: expected a JSON object of next_task's parameters, got a string"),
    ("next_task", b"{'project': 'p'}", "body: not JSON"),
    ("submit", b'{"assignment_id": 1.5, "client_request_id": "x"}', "assignment_id: expected an integer, got 1.5"),
    ("submit", b'{"assignment_id": true, "client_request_id": "x"}', "assignment_id: expected an integer, got True"),
    ("submit", b'{"assignment_id": 1, "client_request_id": "x", "ms_spent": NaN}', "NaN is not a JSON number"),
    ("submit", b'{"assignment_id": 1, "client_request_id": "x", "ms_spent": 1e999}',
     "ms_spent: expected an integer, got inf"),
    ("submit", b'{"assignment_id": 1, "client_request_id": "x", "ranking": "AB"}', "ranking: expected a list"),
    ("submit", b'{"assignment_id": 1, "client_request_id": "x", "ratings": {"helpfulness": [5]}}',
     "ratings['helpfulness']: expected an object, got a list"),
    ("submit", b'{"assignment_id": 1, "client_request_id": "x", "ratings": {"helpfulness": {"A": "x"}}}',
     "ratings['helpfulness']['A']: expected an integer, got 'x'"),
    ("skip", b'{"assignment_id": 1, "reason": {"why": 1}}', "reason: expected a string, got an object"),
    ("next_task", b'{"project": "' + b"a" * (1 << 20) + b'"}', "body: Content-Length"),
]


def test_every_malformed_body_is_a_one_line_400(served):
    engine, url = served
    with LabelingClient(url, "ann", PASSWORD) as ann:
        for endpoint, body, expected in MALFORMED:
            reply = ann.http.post(f"v1/{endpoint}", content=body, headers=JSON)
            error = reply.json()["error"]
            assert reply.status_code == 400 and expected in error and "\n" not in error, (body[:80], error)
        assert ann.next_task("p")["task"] is not None  # and the server goes on serving
    with Session(engine) as session:
        assert session.exec(select(Judgment)).all() == []


def test_a_project_lease_beyond_the_calendar_is_refused(tmp_path):
    """A lease of 10**12 s was stored, and then every claim in the project raised OverflowError (a 500)."""
    engine = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    seed_users(engine, ["root"], role="admin")
    url, app = start_server(engine)
    try:
        with LabelingClient(url, "root", PASSWORD) as root:
            with pytest.raises(ApiError, match=r"lease_seconds=1000000000000: 10 seconds to 2592000"):
                root.call("create_project", name="q", lease_seconds=10**12)
            assert root.call("list_projects") == []
    finally:
        app.close()
        engine.dispose()
