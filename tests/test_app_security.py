"""What issue 9's and issue 20's security reviews found, each as a test against a real server over HTTP.

- failed sign-ins are delayed per (account, address), per address and (for the addresses that failed on
  it) per account, without burning Argon2 CPU; a stranger's failures never lock out a user elsewhere;
- X-Forwarded-For counts only from a proxy named with --forwarded-allow-ips;
- FastAPI's /openapi.json, /docs and /redoc need a login;
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
from labeling.app.login import LoginThrottle, ThrottlePolicy
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


def _login(url, name, password=PASSWORD, source="127.0.0.1", headers=None):
    """POST /login from the loopback address `source` (any 127.x.y.z is this host: a distinct client address)."""
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=30) as http:
        return http.post(url + "login", data={"username": name, "password": password}, headers=headers)


SHORT_LOCK = ThrottlePolicy(free_failures=3, base_lock_s=3.0, address_free_failures=1000)


@pytest.mark.parametrize("server", [SHORT_LOCK], indirect=True)
def test_wrong_passwords_delay_that_account_from_that_address_until_the_lock_ends(server, caplog):
    caplog.set_level(logging.WARNING, logger="labeling.login")
    assert [_login(server, "ann", "wrong-password").status_code for _ in range(3)] == [400, 400, 400]
    locked = _login(server, "ann")  # the right password, from the address that failed, while delayed
    assert locked.status_code == 429 and "try again in" in locked.json()["detail"]
    assert int(locked.headers["Retry-After"]) >= 1
    assert _login(server, "bob").status_code == 200  # other accounts are unaffected
    assert any("pair count" in r.getMessage() for r in caplog.records)  # the lock is logged
    time.sleep(3.2)
    assert _login(server, "ann").status_code == 200


@pytest.mark.parametrize("server", [ThrottlePolicy(free_failures=5, base_lock_s=60.0)], indirect=True)
def test_a_stranger_failing_for_the_admin_never_locks_the_admin_out(server):
    """Issue 20: five wrong passwords for an account from anywhere used to lock it for everyone."""
    attacker, user = "127.0.0.2", "127.0.0.3"
    codes = [_login(server, "root", "guess-guess", source=attacker).status_code for _ in range(10)]
    assert codes == [400] * 5 + [429] * 5  # the attacker's own address is delayed, and Argon2 spared
    refused = _login(server, "root", source=attacker)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 30  # the right password too
    assert _login(server, "root", source=user).status_code == 200  # the real admin, elsewhere: at once


@pytest.mark.parametrize("server", [ThrottlePolicy(free_failures=100, account_free_failures=3, base_lock_s=60.0)],
                         indirect=True)
def test_guessing_spread_over_addresses_delays_every_address_that_failed_but_no_other(server):
    bots = [f"127.0.1.{i}" for i in range(1, 5)]
    assert [_login(server, "ann", "guess-guess", source=bot).status_code for bot in bots] == [400] * 4
    # The account's count is over its 3 free failures: each address that failed on it now waits ...
    assert all(_login(server, "ann", "guess-guess", source=bot).status_code == 429 for bot in bots)
    assert _login(server, "ann", source=bots[0]).status_code == 429
    # ... while an address that never failed signs in at once, and the guessers' other accounts are free.
    assert _login(server, "ann", source="127.0.2.1").status_code == 200
    assert _login(server, "bob", source=bots[0]).status_code == 200


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
    assert _login(server, "ann", source="127.0.0.2").status_code == 200  # from anywhere else: at once


ADDRESS_LOCK = ThrottlePolicy(free_failures=100, address_free_failures=3, base_lock_s=60.0)


@pytest.mark.parametrize("server", [ADDRESS_LOCK], indirect=True)
def test_a_spoofed_forwarded_for_from_an_unnamed_peer_is_ignored(server, caplog):
    """Without --forwarded-allow-ips, rotating X-Forwarded-For does not escape the lock on the socket's
    address (uvicorn's own default trusts 127.0.0.1, so this peer's header counted before)."""
    caplog.set_level(logging.WARNING, logger="labeling.login")
    codes = [_login(server, f"guess{i}", "wrong-password", headers={"X-Forwarded-For": f"10.9.0.{i}"}).status_code
             for i in range(6)]
    assert codes == [400] * 3 + [429] * 3
    warnings = [r.getMessage() for r in caplog.records if "X-Forwarded-For" in r.getMessage()]
    assert len(warnings) == 1 and "--forwarded-allow-ips" in warnings[0]  # said once, not per request


@pytest.fixture
def proxied(store):
    """A server behind a proxy at 127.0.0.5 (`--forwarded-allow-ips 127.0.0.5`)."""
    url, app = start_server(store, login_policy=ADDRESS_LOCK, forwarded_allow_ips="127.0.0.5")
    yield url
    app.close()


def test_forwarded_for_counts_from_the_named_proxy_only(proxied):
    def via_proxy(client, source="127.0.0.5", password="wrong-password"):
        return _login(proxied, "ann", password, source=source, headers={"X-Forwarded-For": client}).status_code

    assert [via_proxy("10.0.0.1") for _ in range(4)] == [400, 400, 400, 429]  # the client behind the proxy
    assert via_proxy("10.0.0.2", password=PASSWORD) == 200  # another client through the same proxy
    # From a peer that is not the proxy, the header is ignored: the peer's own address counts.
    assert [via_proxy("10.0.0.3", source="127.0.0.6") for _ in range(4)] == [400, 400, 400, 429]
    assert via_proxy("10.0.0.4", source="127.0.0.6", password=PASSWORD) == 429


def test_forwarded_allow_ips_is_checked_in_one_line():
    from labeling.serve import ServeConfig, trusted_proxies

    assert trusted_proxies(" 10.0.0.1, 10.0.0.0/8 ,::1") == "10.0.0.1,10.0.0.0/8,::1"
    assert trusted_proxies("*") == "*" and trusted_proxies(None) == ""
    with pytest.raises(ValueError, match="'proxy.local' is not an IP address or network"):
        ServeConfig(forwarded_allow_ips="10.0.0.1,proxy.local")


def test_api_schema_and_docs_need_a_login(server):
    with httpx.Client(base_url=server, timeout=30) as http:
        for path in ("openapi.json", "docs", "redoc", "docs/oauth2-redirect", "gradio_api/openapi.json"):
            refused = http.get(path)
            assert refused.status_code == 401, (path, refused.status_code)
        assert http.post("login", data={"username": "ann", "password": PASSWORD}).status_code == 200
        assert http.get("openapi.json").status_code == 200 and "paths" in http.get("openapi.json").json()
        assert http.get("gradio_api/openapi.json").status_code == 200


def test_the_delays_grow_per_count_and_end_with_the_observation_window():
    """The throttle alone, on a hand-driven clock: which count delays whom, and for how long."""
    now = [0.0]
    throttle = LoginThrottle(ThrottlePolicy(free_failures=2, address_free_failures=4, account_free_failures=5,
                                            base_lock_s=10.0, max_lock_s=35.0, forget_after_s=100.0),
                             clock=lambda: now[0])
    locks = [{key[0]: lock for key, lock in throttle.failed("ann", "a1")} for _ in range(5)]
    assert locks == [{}, {"pair": 10.0}, {"pair": 20.0}, {"pair": 35.0, "address": 10.0},  # doubling, capped
                     {"pair": 35.0, "address": 20.0, "account": 10.0}]
    assert throttle.locked_for("ann", "a1") == (35.0, "pair")
    assert throttle.locked_for("ann", "a2") == (0.0, "")  # another address has not failed: free
    assert throttle.locked_for("bob", "a1") == (20.0, "address")  # a1 tried 5 times, 4 are free
    throttle.failed("ann", "a2")  # the account's 6th failure: over its 5 free ones ...
    assert throttle.locked_for("ann", "a2")[1] == "account"  # ... delays a2, which failed on it ...
    assert throttle.locked_for("ann", "a3") == (0.0, "")  # ... and no address that did not
    throttle.succeeded("ann", "a2")  # a success clears its own (account, address) count only
    assert throttle.locked_for("ann", "a2") == (0.0, "") and throttle.locked_for("ann", "a1")[0] > 0
    now[0] = 100.5  # past the observation window: every count starts over
    assert throttle.locked_for("ann", "a1") == (0.0, "") and throttle.failed("ann", "a1") == []


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
