"""The app's API endpoints through gradio_client, as a script acting as an annotator or an admin would.

One real server (the same `serve()` as `labeling serve`) for the module.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from sqlmodel import Session, select

from _labeling_seed import PASSWORD, api_client, run_event, seed_project, seed_users, start_server
from labeling.db import open_store, session_scope
from labeling.models import Assignment, Judgment, Project
from labeling.users import set_active


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    engine = open_store(f"sqlite:///{tmp_path_factory.mktemp('app') / 'store.db'}")
    seed_project(engine, "pairs", n_tasks=6, overlap=2, criteria=["helpfulness", "honesty"])
    seed_project(engine, "rank", n_tasks=2, mode="ranking", k=3)
    seed_users(engine, ["ann", "bob", "quitter"])
    seed_users(engine, ["root"], role="admin")
    url, server = start_server(engine)
    yield url, engine
    server.close()
    engine.dispose()


@pytest.fixture(scope="module")
def ann(app):
    return api_client(app[0], "ann")


@pytest.fixture(scope="module")
def root(app):
    return api_client(app[0], "root")


def test_every_route_needs_a_login(app):
    url, _ = app
    for path in ("config", "gradio_api/info", "gradio_api/call/v2/whoami"):
        response = httpx.post(url + path, json={"data": []}) if "call" in path else httpx.get(url + path)
        assert response.status_code == 401, path
    with pytest.raises(Exception):
        api_client(url, "ann", "not-the-password")


def test_annotator_gets_labels_never_models_or_ids(ann):
    assert ann.predict(api_name="/whoami") == {"name": "ann", "role": "annotator"}
    assert ann.predict(api_name="/projects") == ["pairs", "rank"]
    reply = ann.predict("pairs", api_name="/next_task")
    task = reply["task"]
    assert [r["label"] for r in task["responses"]] == ["A", "B"]
    assert task["criteria"] == ["helpfulness", "honesty"] and task["conversation"][0]["role"] == "user"
    dumped = json.dumps(reply)
    assert "secret-model" not in dumped and "candidate" not in dumped and "gold" not in dumped
    assert reply["progress"] == {"done_today": 0, "done_total": 0, "remaining": 5}


def test_submit_maps_labels_to_the_shown_order_once(app, ann):
    _, engine = app
    task = ann.predict("pairs", api_name="/next_task")["task"]
    args = (task["assignment_id"], task["client_request_id"], "b_much_better", None,
            {"helpfulness": {"A": 2, "B": 5}}, "B explains why", "An ideal answer.")
    first = ann.predict(*args, api_name="/submit")
    again = ann.predict(*args, api_name="/submit")  # a retried request
    assert first == again and first["recorded"]
    with Session(engine) as s:
        judgment = s.get(Judgment, first["judgment_id"])
        shown = s.get(Assignment, task["assignment_id"]).display_order
        assert len(s.exec(select(Judgment).where(Judgment.assignment_id == task["assignment_id"])).all()) == 1
    assert judgment.display_order == shown and judgment.choice == "b_much_better"
    assert judgment.ratings == {"helpfulness": {str(shown[0]): 2, str(shown[1]): 5}}
    assert (judgment.rationale, judgment.edited_response) == ("B explains why", "An ideal answer.")
    assert ann.predict("pairs", api_name="/progress")["done_today"] >= 1


@pytest.mark.parametrize("args, message", [
    (("zzz",), "choice: expected one of"),
    (("tie", None, {"helpfulness": {"A": 7}}), "not an integer in 1..5"),
    (("tie", None, {"helpfulness": {"Z": 3}}), "no response 'Z'"),
    (("tie", None, {"kindness": {"A": 3}}), "unknown criterion"),
])
def test_bad_answers_are_refused_with_one_line(ann, args, message):
    task = ann.predict("pairs", api_name="/next_task")["task"]
    with pytest.raises(Exception, match=message):
        ann.predict(task["assignment_id"], uuid.uuid4().hex, *args, api_name="/submit")


def test_ranking_by_labels(app):
    url, engine = app
    bob = api_client(url, "bob")
    task = bob.predict("rank", api_name="/next_task")["task"]
    assert [r["label"] for r in task["responses"]] == ["A", "B", "C"]
    with pytest.raises(Exception, match="order all of A, B, C"):
        bob.predict(task["assignment_id"], "r0", None, ["A", "A", "B"], api_name="/submit")
    done = bob.predict(task["assignment_id"], "r1", None, ["C", "A", "B"], api_name="/submit")
    with Session(engine) as s:
        judgment = s.get(Judgment, done["judgment_id"])
    assert judgment.ranking == [judgment.display_order[2], judgment.display_order[0], judgment.display_order[1]]


def test_skip_and_foreign_assignments(app, ann):
    url, _ = app
    task = ann.predict("pairs", api_name="/next_task")["task"]
    with pytest.raises(Exception, match="not one of yours"):
        api_client(url, "bob").predict(task["assignment_id"], "x1", "tie", api_name="/submit")
    with pytest.raises(Exception, match="reason is required"):
        ann.predict(task["assignment_id"], " ", api_name="/skip")
    assert ann.predict(task["assignment_id"], "not my field", api_name="/skip")["skipped"]
    assert ann.predict("pairs", api_name="/next_task")["task"]["assignment_id"] != task["assignment_id"]


def test_admin_endpoints_refuse_annotators(ann):
    for endpoint, args in [("/stats", ["pairs"]), ("/export", ["pairs"]), ("/list_projects", []),
                           ("/create_project", ["mine"]), ("/set_project_open", ["pairs", False])]:
        with pytest.raises(Exception, match="admins only"):
            ann.predict(*args, api_name=endpoint)


def test_dashboard_handlers_refuse_annotators_even_when_called_directly(app):
    """The page's own (private) "create project" event, posted to the queue with an annotator's cookie."""
    url, engine = app
    with httpx.Client(base_url=url, timeout=20) as http:
        assert http.post("login", data={"username": "ann", "password": PASSWORD}).status_code == 200
        form = [None, "probe", "pairwise", 2, 1, "", 0, 1800, ""]  # project, then the new-project fields
        done = run_event(http, "pl-new-create", form, "probe1")
    assert done["success"] is False and "admins only" in json.dumps(done)
    with Session(engine) as s:
        assert s.exec(select(Project).where(Project.name == "probe")).first() is None


def test_admin_creates_closes_reopens_and_exports(app, root, ann):
    task = ann.predict("pairs", api_name="/next_task")["task"]  # a judgment of its own: the test also runs alone
    if task is not None:
        ann.predict(task["assignment_id"], task["client_request_id"], "a_better", api_name="/submit")
    created = root.predict("fresh", "pairwise", 2, 3, ["helpfulness"], api_name="/create_project")
    assert created == {"name": "fresh", "mode": "pairwise", "k": 2, "overlap": 3, "open": True}
    with pytest.raises(Exception, match="already exists"):
        root.predict("fresh", api_name="/create_project")
    assert root.predict("pairs", False, api_name="/set_project_open") == {"name": "pairs", "open": False}
    assert "pairs" not in ann.predict(api_name="/projects")
    with pytest.raises(Exception, match="closed"):
        ann.predict("pairs", api_name="/next_task")
    root.predict("pairs", True, api_name="/set_project_open")
    rows = {r["name"]: r for r in root.predict(api_name="/list_projects")}
    assert rows["pairs"]["judgments"] >= 1 and rows["fresh"]["overlap"] == 3
    stats = root.predict("pairs", api_name="/stats")
    assert stats["judgments"] == rows["pairs"]["judgments"] and stats["annotators"]
    records = root.predict("pairs", "pairwise", api_name="/export")
    assert records and {"prompt", "chosen", "rejected"} <= set(records[0])
    with pytest.raises(Exception, match="export format"):
        root.predict("pairs", "xml", api_name="/export")


def test_deactivated_account_is_refused_at_once(app):
    url, engine = app
    quitter = api_client(url, "quitter")
    assert quitter.predict(api_name="/whoami")["name"] == "quitter"
    with session_scope(engine) as s:
        set_active(s, "quitter", False)
    with pytest.raises(Exception, match="not active"):
        quitter.predict("pairs", api_name="/next_task")


def test_serve_config_rejects_bad_values_in_one_line():
    from labeling.serve import ServeConfig
    from prefloop.config import ConfigError, parse_config

    assert parse_config(ServeConfig, ["--port", "8080", "--project", "chat"]).port == 8080
    with pytest.raises(ConfigError, match="port 70000"):
        parse_config(ServeConfig, ["--port", "70000"])
    with pytest.raises(ConfigError, match="at least 1"):
        parse_config(ServeConfig, ["--concurrency", "0"])
