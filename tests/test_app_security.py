"""What issue 9's security review found, each as a test against a real server over HTTP.

- failed sign-ins back off and lock out, per account and per address, without burning Argon2 CPU;
- a disabled account's open session no longer reaches Gradio's own routes;
- uploads are refused (the app has no upload component);
- a dashboard export is served to admins only and is owner-only on disk;
- SIGTERM stops a server with open event streams cleanly, in a few seconds.
"""

from __future__ import annotations

import logging
import signal
import stat
import threading
import time
from pathlib import Path

import httpx
import pytest

from _labeling_seed import (PASSWORD, api_client, free_port, run_event, seed_project, seed_users, serve_process,
                            start_server)
from labeling.app.login import ThrottlePolicy
from labeling.db import open_store, session_scope
from labeling.users import set_active


@pytest.fixture
def store(tmp_path):
    engine = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    seed_project(engine, "p", n_tasks=4)
    seed_users(engine, ["ann", "bob", "quitter"])
    seed_users(engine, ["root"], role="admin")
    yield engine
    engine.dispose()


@pytest.fixture
def server(store, request, tmp_path):
    """A server whose lock-out policy the test picks with `@pytest.mark.parametrize("server", [policy], indirect=True)`."""
    policy = getattr(request, "param", None) or ThrottlePolicy()
    (tmp_path / "exports").mkdir()
    url, app = start_server(store, login_policy=policy, export_dir=tmp_path / "exports")
    yield url
    app.close()


def _login(url, name, password=PASSWORD):
    return httpx.post(url + "login", data={"username": name, "password": password}, timeout=30)


SHORT_LOCK = ThrottlePolicy(free_failures=3, base_lock_s=3.0, address_free_failures=1000)


@pytest.mark.parametrize("server", [SHORT_LOCK], indirect=True)
def test_wrong_passwords_lock_the_account_until_the_lock_ends(server, caplog):
    caplog.set_level(logging.WARNING, logger="labeling.login")
    assert [_login(server, "ann", "wrong-password").status_code for _ in range(3)] == [400, 400, 400]
    locked = _login(server, "ann")  # the right password, while locked
    assert locked.status_code == 429 and "try again in" in locked.json()["detail"]
    assert int(locked.headers["Retry-After"]) >= 1
    assert _login(server, "bob").status_code == 200  # other accounts are unaffected
    assert any("account:ann" in r.getMessage() for r in caplog.records)  # the lock is logged
    time.sleep(3.2)
    assert _login(server, "ann").status_code == 200


@pytest.mark.parametrize("server", [ThrottlePolicy(free_failures=2, base_lock_s=60.0)], indirect=True)
def test_a_locked_flood_costs_no_argon2_and_others_keep_working(server):
    from argon2 import PasswordHasher

    hasher = PasswordHasher()
    hashed = hasher.hash(PASSWORD)
    start = time.process_time()
    hasher.verify(hashed, PASSWORD)
    one_verify = time.process_time() - start
    bob = api_client(server, "bob")
    assert [_login(server, "ann", "nope-nope").status_code for _ in range(2)] == [400, 400]

    codes = []

    def flood():
        with httpx.Client(base_url=server, timeout=30) as http:  # one connection each: the client stays cheap
            codes.extend(http.post("login", data={"username": "ann", "password": "nope-nope"}).status_code
                         for _ in range(5))

    cpu = time.process_time()  # this process runs the server: its CPU includes every Argon2 check
    threads = [threading.Thread(target=flood) for _ in range(8)]
    [t.start() for t in threads]
    assert bob.predict("p", api_name="/next_task")["task"] is not None  # served during the flood
    [t.join() for t in threads]
    spent = time.process_time() - cpu
    assert codes == [429] * 40
    # Checking 40 passwords would cost 40 Argon2 checks; refusing them, a small fraction of that.
    assert spent < 8 * one_verify, f"40 locked attempts used {spent:.2f} CPU s (one Argon2 check: {one_verify:.2f})"


@pytest.mark.parametrize("server", [ThrottlePolicy(free_failures=100, address_free_failures=4, base_lock_s=60.0)],
                         indirect=True)
def test_many_names_from_one_address_lock_the_address(server):
    assert [_login(server, f"guess{i}", "wrong-password").status_code for i in range(4)] == [400] * 4
    assert _login(server, "ann").status_code == 429  # a real account, but from the guessing address


def test_a_disabled_account_loses_gradio_routes_at_once(server, store):
    with httpx.Client(base_url=server, timeout=20) as http:
        assert http.post("login", data={"username": "quitter", "password": PASSWORD}).status_code == 200
        assert http.get("config").status_code == 200 and http.get("gradio_api/info").status_code == 200
        with session_scope(store) as session:
            set_active(session, "quitter", False)
        assert http.get("config").status_code == 401
        assert http.get("gradio_api/info").status_code == 401
        assert http.post("gradio_api/upload", files={"files": ("a.txt", b"x")}).status_code in (401, 403)
        assert http.get("config").status_code == 401  # the session itself is gone
    assert _login(server, "quitter").status_code == 400


def test_uploads_are_refused(server, tmp_path):
    with httpx.Client(base_url=server, timeout=60) as http:
        assert http.post("login", data={"username": "ann", "password": PASSWORD}).status_code == 200
        reply = http.post("gradio_api/upload", files={"files": ("big.bin", b"\0" * (8 << 20))})
        assert reply.status_code == 403 and "no uploads" in reply.json()["detail"]
        assert http.post("gradio_api/upload", files={"files": ("a.txt", b"hello")}).status_code == 403


def test_dashboard_export_is_for_admins_only_and_owner_only_on_disk(server, tmp_path):
    with httpx.Client(base_url=server, timeout=60) as admin, httpx.Client(base_url=server, timeout=60) as ann:
        assert admin.post("login", data={"username": "root", "password": PASSWORD}).status_code == 200
        assert ann.post("login", data={"username": "ann", "password": PASSWORD}).status_code == 200
        done = run_event(admin, "pl-dash-export", ["p", "raw"], "export1", load_page=True)
        assert done["success"], done
        exported = done["output"]["data"][0]
        url = exported["url"].split("/gradio_api/", 1)[1]
        assert admin.get("gradio_api/" + url).status_code == 200
        refused = ann.get("gradio_api/" + url)
        assert refused.status_code == 403 and "admins only" in refused.json()["detail"]
    served = Path(exported["path"])
    assert stat.S_IMODE(served.stat().st_mode) & 0o077 == 0  # the copy Gradio serves
    originals = list((tmp_path / "exports").glob("export-*/p-raw.jsonl"))
    assert originals and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in originals)


def test_sigterm_stops_a_server_with_open_streams_within_seconds(store, tmp_path):
    port = free_port()
    proc = serve_process(str(store.url), port, tmp_path / "serve.log")
    base = f"http://127.0.0.1:{port}/"
    client = api_client(base, "ann")
    assert client.predict("p", api_name="/next_task")["task"] is not None
    http = httpx.Client(base_url=base, timeout=30)
    assert http.post("login", data={"username": "bob", "password": PASSWORD}).status_code == 200
    opened = threading.Event()

    def hold_stream():  # what an open browser tab keeps: a heartbeat event stream
        try:
            with http.stream("GET", "gradio_api/heartbeat/tab1") as stream:
                opened.set()
                for _ in stream.iter_lines():
                    pass
        except httpx.HTTPError:
            pass

    threading.Thread(target=hold_stream, daemon=True).start()
    assert opened.wait(10)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=6)
    finally:
        proc.kill()
        http.close()
    assert code == 0, (tmp_path / "serve.log").read_text()[-2000:]
    print(f"stopped {time.monotonic() - started:.1f} s after SIGTERM")
