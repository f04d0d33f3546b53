"""bench_server's annotators (run in child processes): API or gradio_client cycles, and page sessions."""

from __future__ import annotations

import json
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server_fleet import PASSWORD, PROJECT  # noqa: E402


def annotate(urls: list[str], names: list[str], seconds: float, start_at: float, via: str = "rest") -> dict:
    """Sign all `names` in at `start_at` (the burst), then cycle next_task -> submit until the time is up.

    via="rest": `labeling.client.LabelingClient` (POST /login, then POST /v1/next_task, /v1/submit);
    via="gradio": gradio_client (`Client(...)`, then `predict(..., api_name="/next_task")` etc.).
    """
    def sign_in(i_name, patient=False):
        i, name = i_name
        time.sleep(max(0.0, start_at - time.time()))
        t0 = time.perf_counter()
        try:  # the burst uses the clients' own timeouts; a retry waits longer
            client = _connect(via, urls[i % len(urls)], name, patient)
            return client, time.perf_counter() - t0, None
        except Exception as err:  # noqa: BLE001 - counted as a login error
            return None, time.perf_counter() - t0, repr(err)[:200]

    with ThreadPoolExecutor(len(names)) as pool:
        logins = list(pool.map(sign_in, enumerate(names)))
    # Who failed the burst signs in again, one at a time, so that the load phase has every annotator.
    clients = [c if c is not None else _retry_sign_in(sign_in, i, name)
               for (i, name), (c, _, _) in zip(enumerate(names), logins)]
    with ThreadPoolExecutor(len(clients)) as pool:  # a client's first call sets up its event stream: not timed
        list(pool.map(lambda c: _call(c, "progress", PROJECT), clients))
    print("READY", flush=True)  # the parent starts every process's cycles at the same moment
    go = float(sys.stdin.readline())
    stop_at = go + seconds

    def cycle(client):
        out = {"next": [], "submit": [], "acks": [], "errors": []}
        time.sleep(max(0.0, go - time.time()))
        while time.time() < stop_at:
            try:
                t0 = time.perf_counter()
                task = _call(client, "next_task", PROJECT)["task"]
                t1 = time.perf_counter()
                if task is None:
                    break
                reply = _call(client, "submit", task["assignment_id"], task["client_request_id"], "a_better")
                t2 = time.perf_counter()
                out["next"].append(t1 - t0)
                out["submit"].append(t2 - t1)
                out["acks"].append([task["client_request_id"], reply["judgment_id"], time.time()])
            except Exception as err:  # noqa: BLE001 - counted as an error
                out["errors"].append(repr(err)[:200])
        return out

    with ThreadPoolExecutor(max(1, len(clients))) as pool:
        results = list(pool.map(cycle, clients))
    merged = {key: [x for r in results for x in r[key]] for key in ("next", "submit", "acks", "errors")}
    merged["login_s"] = [t for _, t, _ in logins]
    merged["login_errors"] = [e for _, _, e in logins if e]
    merged["go"] = go
    return merged


def _connect(via: str, url: str, name: str, patient: bool):
    if via == "rest":
        from labeling.client import LabelingClient

        return LabelingClient(url, name, PASSWORD, timeout=120 if patient else 60)
    from gradio_client import Client

    return Client(url, auth=(name, PASSWORD), verbose=False, analytics_enabled=False, download_files=False,
                  httpx_kwargs={"timeout": 120} if patient else None)


def _call(client, endpoint: str, *args):
    """One API call, positional arguments in the endpoint's order, through either client."""
    if hasattr(client, "predict"):
        return client.predict(*args, api_name=f"/{endpoint}")
    names = {"progress": ["project"], "next_task": ["project"],
             "submit": ["assignment_id", "client_request_id", "choice"]}[endpoint]
    return client.call(endpoint, **dict(zip(names, args)))


def browse(urls: list[str], names: list[str], seconds: float) -> dict:
    """The page's own path: sessions that sign in, run the page's load events, then click Submit.

    Each click is the UI's submit event (`annotate.on_submit`: the vote, then the next task and the
    progress line), sent the way the browser sends it: join the queue, read the event stream.
    """
    sessions = [_page_session(urls[i % len(urls)], name) for i, name in enumerate(names)]
    print("READY", flush=True)
    go = float(sys.stdin.readline())
    stop_at = go + seconds

    def click(session):
        http, body = session
        out = {"submit": [], "acks": [], "errors": []}
        time.sleep(max(0.0, go - time.time()))
        while time.time() < stop_at:
            t0 = time.perf_counter()
            done = _event(http, body)
            saved = done.get("success") and "Saved" in json.dumps(done["output"]["data"][-1])
            (out["submit"] if saved else out["errors"]).append(time.perf_counter() - t0 if saved else str(done)[:200])
            if saved:
                out["acks"].append([None, None, time.time()])
        return out

    with ThreadPoolExecutor(len(sessions)) as pool:
        results = list(pool.map(click, sessions))
    merged = {key: [x for r in results for x in r[key]] for key in ("submit", "acks", "errors")}
    return {**merged, "next": [], "login_s": [], "login_errors": []}


def _page_session(url: str, name: str):
    import httpx

    http = httpx.Client(base_url=url, timeout=120)
    assert http.post("login", data={"username": name, "password": PASSWORD}).status_code == 200
    config = http.get("config").json()
    session = uuid.uuid4().hex
    for dep in config["dependencies"]:
        if any(list(t)[1:] == ["load"] for t in dep["targets"]):
            _event(http, {"data": [], "fn_index": dep["id"], "session_hash": session})
    button = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "pl-submit")
    fn = next(d["id"] for d in config["dependencies"] if [button, "click"] in [list(t) for t in d["targets"]])
    # inputs: state (kept by the server), choice, ranking, ratings, rationale, edited response, project
    ratings = {"headers": ["criterion", "A", "B"], "data": []}  # the grid as the page sends it (no criteria)
    return http, {"data": [None, "a_better", "", ratings, "", "", PROJECT], "fn_index": fn, "trigger_id": button,
                  "session_hash": session}


def _event(http, body: dict) -> dict:
    """Join the queue with one event and read the session's stream until that event completes."""
    event_id = http.post("gradio_api/queue/join", json=body).json()["event_id"]
    with http.stream("GET", "gradio_api/queue/data", params={"session_hash": body["session_hash"]}) as events:
        for line in events.iter_lines():
            if line.startswith("data:") and event_id in line and "process_completed" in line:
                return json.loads(line[5:])
    raise RuntimeError("the event stream ended before the event completed")


def _retry_sign_in(sign_in, i: int, name: str, attempts: int = 5):
    for _ in range(attempts):
        client, _, _ = sign_in((i, name), patient=True)
        if client is not None:
            return client
    raise RuntimeError(f"{name}: could not sign in after {attempts} attempts")

