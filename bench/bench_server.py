"""Labeling-server benchmark: N API annotators as fast as they can, a login burst, and what was stored.

    .venv/bin/python bench/bench_server.py                     # SQLite, then PostgreSQL with 1/2/4 processes
    .venv/bin/python bench/bench_server.py --backends sqlite --seconds 10 --no-write

One cycle is what an annotator script does: `next_task`, then `submit`, through the JSON API
(`labeling.client`: POST /v1/next_task, /v1/submit) or, for the `-gradio` rows, through
gradio_client (the Gradio endpoints: queue join and event stream). Each configuration gets a
fresh store (tasks with overlap 3, one account per annotator) and its own `labeling serve`
process(es). First all annotators sign in at the same moment (the login burst: POST /login each;
gradio_client's `Client(...)` also reads the app's config and API info), then they all cycle for
`--seconds`. The annotators run in `--client-procs` processes so that one
client process's GIL does not cap the load. Afterwards the store is compared with what was
acknowledged: every acknowledged judgment must be stored exactly once (lost, doubled), no task
may hold more than its overlap, and no annotator may have judged a task twice.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, write_section  # noqa: E402 - the benches' one helper module

SECTION = "## Labeling server"
PASSWORD = "bench-password-1"
PROJECT = "load"
OVERLAP = 3
DEFAULT_PG = "postgresql+psycopg://prefloop:prefloop@127.0.0.1:5432/prefloop"


# ----------------------------------------------------------------------------- store and servers

def seed(url: str, n_tasks: int, names: list[str]) -> None:
    """A pairwise project of `n_tasks` tasks (overlap 3) and one annotator account per name."""
    from argon2 import PasswordHasher

    from labeling.db import open_store, session_scope
    from labeling.models import Annotator, Candidate, Prompt, Task
    from labeling.projects import create_project

    engine = open_store(url)
    password_hash = PasswordHasher().hash(PASSWORD)  # the real Argon2id parameters, hashed once
    with session_scope(engine) as session:
        project = create_project(session, PROJECT, guidelines="Pick the better answer.", overlap=OVERLAP)
        prompts = [Prompt(project_id=project.id, messages=[{"role": "user", "content": f"Question {i}?"}])
                   for i in range(n_tasks)]
        session.add_all(prompts)
        session.flush()
        cands = [Candidate(prompt_id=p.id, text=f"Answer {j} to question {p.id}: " + "word " * 60, model=f"m{j}")
                 for p in prompts for j in range(2)]
        session.add_all(cands)
        session.flush()
        session.add_all([Task(project_id=project.id, prompt_id=p.id, candidate_ids=[cands[2 * i].id,
                                                                                   cands[2 * i + 1].id])
                         for i, p in enumerate(prompts)])
        session.add_all([Annotator(name=n, password_hash=password_hash) for n in names])
    engine.dispose()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_processes(url: str, n: int, logdir: Path, extra: list[str],
                    server_root: Path = ROOT) -> list[tuple[subprocess.Popen, str]]:
    """`n` `labeling serve` processes on one store (code from `server_root`); (process, base URL) once all answer."""
    import httpx

    servers = []
    for _ in range(n):
        port = _free_port()
        log = open(logdir / f"serve-{port}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "labeling.serve", "--db", url, "--port", str(port), *extra],
                                stdout=log, stderr=subprocess.STDOUT, cwd=server_root,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(server_root)})
        servers.append((proc, f"http://127.0.0.1:{port}/"))
    deadline = time.monotonic() + 300  # a loaded 2-core machine has taken minutes to import gradio
    for proc, base in servers:
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"labeling serve at {base} did not start; see {logdir}")
            try:
                if httpx.get(base, timeout=2).status_code in (200, 401):
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
    return servers


def process_cpu(servers) -> float:
    """CPU seconds (user + system, all threads) the processes have used so far."""
    ticks = 0
    for proc, _ in servers:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def stop(servers) -> None:
    for proc, _ in servers:
        proc.terminate()
    for proc, _ in servers:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


# ----------------------------------------------------------------------------- annotators (child process)

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


def store_cycles(url: str, names: list[str], rounds: int) -> dict:
    """The store layer alone, in this process: what one API cycle asks of `service` (next_task with
    its progress, then submit), for every annotator in turn; CPU seconds per cycle after a warm-up round."""
    from labeling.app import service
    from labeling.app.auth import viewer_for
    from labeling.db import open_store

    engine = open_store(url)
    viewers = [viewer_for(engine, name) for name in names]
    counts = service.OpenTasks() if hasattr(service, "OpenTasks") else None  # absent before the fix

    def cycle(viewer):
        view = service.next_task(engine, viewer, PROJECT)
        service.progress(engine, viewer, PROJECT, *([counts] if counts else []))
        service.submit(engine, viewer, assignment_id=view.assignment_id, client_request_id=view.client_request_id,
                       choice="a_better")

    [cycle(v) for v in viewers]
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        [cycle(v) for v in viewers]
    n = rounds * len(viewers)
    return {"cpu_ms": 1000 * (time.process_time() - cpu) / n, "wall_ms": 1000 * (time.perf_counter() - wall) / n}


def store_growth(judgments: int, n_tasks: int, clients: int, block: int = 500) -> str:
    """The claim's, the vote's and progress's cost as the queue fills: the store layer alone, one thread, a
    fresh SQLite store.

    The claim used to walk the queue in priority order past every task whose slots were all taken, so its
    cost grew with the judgments already stored; since `task.is_full` (labeling.store_triggers) it should
    not. Progress (the app's, with the project's kept count of open tasks) grows with the annotator's own
    history: with `clients` 1 one annotator makes every judgment. This prints the cost block by block.
    Run it with PYTHONPATH=TREE to time another checkout.
    """
    from labeling import assign
    from labeling.app.auth import viewer_for
    from labeling.db import open_store

    with tempfile.TemporaryDirectory() as tmp:
        url, names = f"sqlite:///{tmp}/store.db", [f"ann{i:03d}" for i in range(clients)]
        seed(url, n_tasks, names)
        engine = open_store(url)
        viewers, spent, lines = [viewer_for(engine, name) for name in names], [0.0, 0.0, 0.0], []
        for done in range(1, judgments + 1):
            viewer = viewers[done % len(viewers)]
            t0 = time.perf_counter()
            lease = assign.next_assignment(engine, PROJECT, viewer.id)
            t1 = time.perf_counter()
            assign.submit_judgment(engine, assignment_id=lease.id, annotator_id=viewer.id,
                                   client_request_id=uuid.uuid4().hex, choice="a_better")
            t2 = time.perf_counter()
            assign.progress(engine, PROJECT, viewer.id, open_tasks=n_tasks)  # the app passes its kept count
            spent = [spent[0] + t1 - t0, spent[1] + t2 - t1, spent[2] + time.perf_counter() - t2]
            if done % block == 0:
                lines.append(f"| {done} | {done // OVERLAP if clients >= OVERLAP else 0} | " + " | ".join(f"{1000 * s / block:.2f}" for s in spent) + " |")
                spent = [0.0, 0.0, 0.0]
        engine.dispose()
    return "\n".join([f"Store layer alone, one thread, {n_tasks} tasks with overlap {OVERLAP}, {clients} annotators "
                      f"in turn: wall ms per claim, per vote and per progress over each block of {block} judgments.", "",
                      "| judgments stored | tasks full (about) | ms per claim | ms per vote | ms per progress |",
                      "| ---: | ---: | ---: | ---: | ---: |", *lines, ""])


def _retry_sign_in(sign_in, i: int, name: str, attempts: int = 5):
    for _ in range(attempts):
        client, _, _ = sign_in((i, name), patient=True)
        if client is not None:
            return client
    raise RuntimeError(f"{name}: could not sign in after {attempts} attempts")


# ----------------------------------------------------------------------------- one configuration

def run_config(label: str, url: str, processes: int, args, logdir: Path, mode: str = "rest",
               server_root: str | None = None) -> dict:
    names = [f"ann{i:03d}" for i in range(args.clients)]
    # Seeded by the served code's own schema (its indexes included), in a process of its own.
    server_root = server_root or args.server_root
    subprocess.run([sys.executable, __file__, "--seed", json.dumps({"url": url, "tasks": args.tasks, "names": names})],
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": server_root})
    servers = serve_processes(url, processes, logdir, args.serve_args, Path(server_root))
    urls = [base for _, base in servers]
    try:
        chunks = [names[i::args.client_procs] for i in range(args.client_procs)]
        children = [subprocess.Popen([sys.executable, __file__, "--child", json.dumps(
            {"urls": urls, "names": chunk, "seconds": args.seconds, "mode": mode})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}) for chunk in chunks]
        if mode != "browser":  # the burst starts once every client process has done its imports
            for child in children:
                assert child.stdout.readline().strip() == "LOADED"
            start_at = time.time() + 0.5
            for child in children:
                child.stdin.write(f"{start_at}\n")
                child.stdin.flush()
        for child in children:  # every annotator signed in (the burst is over)
            assert child.stdout.readline().strip() == "READY"
        go = time.time() + 0.5
        for child in children:
            child.stdin.write(f"{go}\n")
            child.stdin.flush()
        time.sleep(max(0.0, go - time.time()))
        clients = [(child, None) for child in children]
        cpu_start, client_start, load_start = process_cpu(servers), process_cpu(clients), os.getloadavg()[0]
        time.sleep(max(0.0, go + args.seconds - time.time()))
        cpu, client_cpu = process_cpu(servers) - cpu_start, process_cpu(clients) - client_start
        parts = [json.loads(child.communicate()[0].strip().splitlines()[-1]) for child in children]
    finally:
        stop(servers)
    merged = {key: [x for p in parts for x in p[key]]
              for key in ("next", "submit", "acks", "errors", "login_s", "login_errors")}
    merged["seconds"], merged["server_cpu_s"], merged["client_cpu_s"] = args.seconds, cpu, client_cpu
    merged["load"] = (load_start, os.getloadavg()[0])
    merged.update(check(url, merged["acks"]))
    if merged["errors"]:  # what the server said about them, while its log still exists
        print(server_errors(logdir), end="", flush=True)
    return {"label": label, "processes": processes, **merged}


def server_errors(logdir: Path, limit: int = 60) -> str:
    """The tracebacks in the server logs (the first `limit` lines), for a run that reported errors."""
    lines = [line for log in sorted(logdir.glob("serve-*.log"))
             for line in log.read_text(errors="replace").splitlines(keepends=True)]
    start = next((i for i, line in enumerate(lines) if "Traceback" in line or "ERROR" in line), len(lines))
    return "".join(lines[start:start + limit]) or "".join(lines[-limit:])


def check(url: str, acks: list) -> dict:
    """Acknowledged vs stored: lost, doubled, and the overlap / one-per-annotator invariants."""
    from sqlmodel import Session, select

    from labeling.db import make_engine
    from labeling.models import Judgment

    engine = make_engine(url)
    with Session(engine) as session:
        rows = session.exec(select(Judgment.id, Judgment.client_request_id, Judgment.task_id,
                                   Judgment.annotator_id)).all()
    engine.dispose()
    stored = Counter(r[1] for r in rows)
    acked = {request: jid for request, jid, _ in acks}
    by_id = {r[0]: r[1] for r in rows}
    per_task = Counter(r[2] for r in rows)
    # The page keeps its request ids on the server: there, lost = acknowledged saves beyond the rows stored.
    lost = max(0, len(acks) - len(rows)) if acks and acks[0][0] is None else \
        sum(1 for request, jid in acked.items() if by_id.get(jid) != request)
    return {"stored": len(rows), "lost": lost,
            "doubled": sum(n - 1 for n in stored.values() if n > 1) + len(rows) - len({(r[2], r[3]) for r in rows}),
            "over_overlap": sum(1 for n in per_task.values() if n > OVERLAP)}


def compare_store(args, where: str, rounds: int = 2, repeats: int = 3) -> str:
    """CPU per cycle of the store layer, `--compare-store DIR`'s code against this checkout's, alternating."""
    results: dict[str, list[dict]] = {}
    for _ in range(repeats):
        for name, root in (("before", args.compare_store), ("after", str(ROOT))):
            with tempfile.TemporaryDirectory() as tmp:
                url, names = f"sqlite:///{tmp}/store.db", [f"ann{i:03d}" for i in range(args.clients)]
                env = {**os.environ, "PYTHONPATH": root}
                subprocess.run([sys.executable, __file__, "--seed", json.dumps(
                    {"url": url, "tasks": args.tasks, "names": names})], check=True, cwd=ROOT, env=env)
                out = subprocess.run([sys.executable, __file__, "--store-child", json.dumps(
                    {"url": url, "names": names, "rounds": rounds})], check=True, cwd=ROOT, env=env,
                    capture_output=True, text=True).stdout
                results.setdefault(name, []).append(json.loads(out.strip().splitlines()[-1]))
    cpu = {name: sorted(r["cpu_ms"] for r in runs) for name, runs in results.items()}
    lines = ["", f"Store layer alone (no HTTP, no Gradio: `service.next_task` + `progress` + `submit`, one thread, "
             f"{args.clients} annotators in turn, {args.tasks} tasks, SQLite), CPU ms per cycle, {repeats} alternating "
             f"runs each (min / median / max); before = `{args.compare_store}`:", "",
             "| code | CPU ms per cycle | cycles per CPU-second |", "| --- | ---: | ---: |"]
    for name, values in cpu.items():
        lines.append(f"| {name} | {values[0]:.1f} / {values[len(values) // 2]:.1f} / {values[-1]:.1f} "
                     f"| {1000 / values[len(values) // 2]:.0f} |")
    return "\n".join(lines + [""])


def fresh_pg(admin_url: str) -> str:
    from sqlalchemy import create_engine, text

    name = f"bench_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


# ----------------------------------------------------------------------------- report

def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def render(rows: list[dict], where: str, args) -> str:
    lines = [SECTION, "", f"`python bench/bench_server.py {' '.join(args.argv)}`".replace(" `", "`"),
             f"on {where}.", "",
             f"{args.clients} API annotators (in {args.client_procs} client processes on the same "
             f"machine), each cycling `next_task` then `submit` for {args.seconds:.0f} s over {args.tasks} "
             f"pairwise tasks with overlap {OVERLAP}, through the JSON API (`labeling.client`) or gradio_client "
             f"as the row says; the login burst is all {args.clients} sign-ins (POST /login; gradio_client's "
             "`Client(...)` also reads the config) started at the same moment. Lost = acknowledged but not "
             "stored; doubled = a request id "
             "or an (annotator, task) stored twice. Server CPU ms / judgment = CPU time of the server "
             "process(es) during the cycling window over the judgments acknowledged in it (client: the same for "
             "the annotator processes): unlike wall-clock figures it barely depends on what else the machine "
             "runs, and 1000 / it is the judgments/s one fully used core would give. Load average: the "
             "machine's 1-minute load at the start and the end of the cycling window (2 cores; other "
             "developers' jobs included).", "",
             "| server | clients | judgments/s | p95 next_task | p95 submit | p50 next / submit | errors "
             "| lost / doubled | server / client CPU ms per judgment | load average | login burst p95 (errors) |",
             "| --- | ---: | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        ms = lambda v: "–" if v != v else f"{v * 1000:.0f} ms"  # noqa: E731 - NaN: not measured
        lines.append(
            f"| {r['label']} | {args.clients} | {len(r['acks']) / r['seconds']:.1f} | {ms(pct(r['next'], .95))} "
            f"| {ms(pct(r['submit'], .95))} | {ms(pct(r['next'], .5))} / {ms(pct(r['submit'], .5))} "
            f"| {len(r['errors'])} | {r['lost']} / {r['doubled']} "
            f"| {1000 * r['server_cpu_s'] / max(1, len(r['acks'])):.1f} / "
            f"{1000 * r['client_cpu_s'] / max(1, len(r['acks'])):.1f} | {r['load'][0]:.1f} → {r['load'][1]:.1f} "
            + (f"| {pct(r['login_s'], .95):.1f} s ({len(r['login_errors'])}) |" if r["login_s"] else "| – |"))
    return "\n".join(lines + [""])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="sqlite-gradio,sqlite,browser,pg1,pg2,pg4",
                        help="comma list of sqlite, sqliteN, pg1, pg2, pg4 (the JSON API; N server processes), "
                             "sqlite-gradio, pgN-gradio "
                             "(the same endpoints through gradio_client), browser (the page's submit event on SQLite)")
    parser.add_argument("--clients", type=int, default=50, help="simultaneous API annotators")
    parser.add_argument("--seconds", type=float, default=20.0, help="cycling time per configuration")
    parser.add_argument("--tasks", type=int, default=4000, help="pairwise tasks in the project")
    parser.add_argument("--client-procs", type=int, default=2, help="processes the annotators run in")
    parser.add_argument("--pg-url", default=os.environ.get("PREFLOOP_TEST_PG_URL", DEFAULT_PG),
                        help="PostgreSQL URL allowed to CREATE DATABASE (a fresh one per configuration)")
    parser.add_argument("--serve-args", nargs=argparse.REMAINDER, default=[],
                        help="extra `labeling serve` flags (last on the line)")
    parser.add_argument("--server-root", default=str(ROOT),
                        help="run `labeling serve` (and seed its store) from this checkout instead, e.g. "
                             "`git archive <rev> | tar -x -C DIR` for a before/after comparison")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--seed", help=argparse.SUPPRESS)
    parser.add_argument("--store-child", help=argparse.SUPPRESS)
    parser.add_argument("--before", metavar="DIR", help="first run the SQLite and browser rows with the server code "
                        "of another checkout (e.g. `git archive <rev> | tar -x -C DIR`), in the same run")
    parser.add_argument("--compare-store", metavar="DIR", help="also time the store layer alone (no HTTP), this "
                        "checkout against the one in DIR, alternating, on SQLite")
    parser.add_argument("--store-growth", type=int, metavar="N", help="instead: time the store layer's claim, vote "
                        "and progress over N judgments on one thread, block by block (how they slow as tasks fill; "
                        "with --clients 1, as one annotator's history grows)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    if args.seed:
        spec = json.loads(args.seed)
        seed(spec["url"], spec["tasks"], spec["names"])
        return 0
    if args.store_growth is not None:  # 0 must not fall through to the full bench (which rewrites BENCHMARKS.md)
        most = args.tasks * min(OVERLAP, args.clients)  # each task judged by up to OVERLAP different annotators
        if not 1 <= args.store_growth <= most:
            parser.error(f"--store-growth: 1 to {most} judgments ({args.tasks} tasks, overlap {OVERLAP}, "
                         f"{args.clients} annotators)")
        print(store_growth(args.store_growth, args.tasks, args.clients, block=min(500, args.store_growth)))
        return 0
    if args.store_child:
        spec = json.loads(args.store_child)
        print(json.dumps(store_cycles(spec["url"], spec["names"], spec["rounds"])))
        return 0
    if args.child:
        spec = json.loads(args.child)
        if spec["mode"] == "browser":
            print(json.dumps(browse(spec["urls"], spec["names"], spec["seconds"])))
        else:  # imports done: the burst's moment comes from the parent, the same for every process
            from labeling.client import LabelingClient  # noqa: F401 - imported before the burst, not in it

            print("LOADED", flush=True)
            start_at = float(sys.stdin.readline())
            print(json.dumps(annotate(spec["urls"], spec["names"], spec["seconds"], start_at, spec["mode"])))
        return 0
    args.argv = argv
    where, rows = machine(), []
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        before = [("before:" + b, args.before) for b in ("sqlite-gradio", "browser") if args.before]
        for backend, root in before + [(b, None) for b in filter(None, args.backends.split(","))]:
            backend = backend.removeprefix("before:")
            mode = "browser" if backend == "browser" else "gradio" if backend.endswith("-gradio") else "rest"
            via = {"rest": "JSON API", "gradio": "gradio_client"}.get(mode)
            n = int("".join(ch for ch in backend.removesuffix("-gradio") if ch.isdigit()) or 1)
            processes = f"{n} process{'es' if n > 1 else ''}"
            if backend.startswith("sqlite") or backend == "browser":
                label, url = "prefloop, SQLite", f"sqlite:///{tmp}/{backend}{'-before' if root else ''}.db"
                label += f", {processes}" if n > 1 else ""
                if mode == "browser":
                    label += ", the page's Submit event (no burst: sessions sign in one by one)"
            else:
                label, url = f"prefloop, PostgreSQL, {processes}", fresh_pg(args.pg_url)
            label += f", {via}" if via else ""
            if root or Path(args.server_root).resolve() != ROOT:
                label = f"before: {label} (server code: {root or args.server_root})"
            print(f"running {label} ...", flush=True)
            row = run_config(label, url, n, args, Path(tmp), mode, root)
            print(f"  {len(row['acks'])} acknowledged, {row['stored']} stored, lost {row['lost']}, doubled "
                  f"{row['doubled']}, errors {len(row['errors'])} {row['errors'][:2]} login errors "
                  f"{row['login_errors'][:2]}", flush=True)
            rows.append(row)
    table = render(rows, where, args)
    if args.compare_store:
        table += compare_store(args, where)
    print(table)
    if not args.no_write:
        write_section(SECTION, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
