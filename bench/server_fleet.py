"""bench_server's store and servers: the seeded project, `labeling serve` processes, their CPU, and the check
of what was stored against what was acknowledged."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT  # noqa: E402 - the benches' one helper module

from prefloop.net import free_port  # noqa: E402



PASSWORD = "bench-password-1"


PROJECT = "load"


OVERLAP = 3


DEFAULT_PG = "postgresql+psycopg://prefloop:prefloop@127.0.0.1:5432/prefloop"


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


def serve_processes(url: str, n: int, logdir: Path, extra: list[str],
                    server_root: Path = ROOT) -> list[tuple[subprocess.Popen, str]]:
    """`n` `labeling serve` processes on one store (code from `server_root`); (process, base URL) once all answer."""
    import httpx

    servers = []
    for _ in range(n):
        port = free_port()
        log = open(logdir / f"serve-{port}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "labeling.serve", "--store", url, "--port", str(port), *extra],
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


def fresh_pg(admin_url: str) -> str:
    from sqlalchemy import create_engine, text

    name = f"bench_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name

