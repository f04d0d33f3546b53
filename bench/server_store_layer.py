"""bench_server's store-layer timings without HTTP: cycles against another checkout, and growth over a history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
BENCH_SERVER = Path(__file__).with_name("bench_server.py")  # its --seed and --store-child modes run these children
from common import ROOT  # noqa: E402 - the benches' one helper module

from server_fleet import OVERLAP, PROJECT, seed  # noqa: E402


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
    from labeling import answers, assign
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
            answers.submit_judgment(engine, assignment_id=lease.id, annotator_id=viewer.id,
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


def compare_store(args, where: str, rounds: int = 2, repeats: int = 3) -> str:
    """CPU per cycle of the store layer, `--compare-store DIR`'s code against this checkout's, alternating."""
    results: dict[str, list[dict]] = {}
    for _ in range(repeats):
        for name, root in (("before", args.compare_store), ("after", str(ROOT))):
            with tempfile.TemporaryDirectory() as tmp:
                url, names = f"sqlite:///{tmp}/store.db", [f"ann{i:03d}" for i in range(args.clients)]
                env = {**os.environ, "PYTHONPATH": root}
                subprocess.run([sys.executable, str(BENCH_SERVER), "--seed", json.dumps(
                    {"url": url, "tasks": args.tasks, "names": names})], check=True, cwd=ROOT, env=env)
                out = subprocess.run([sys.executable, str(BENCH_SERVER), "--store-child", json.dumps(
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

