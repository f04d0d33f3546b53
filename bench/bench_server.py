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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, write_section  # noqa: E402 - the benches' one helper module

from server_fleet import (DEFAULT_PG, OVERLAP, check, fresh_pg, process_cpu, seed,  # noqa: E402
                          serve_processes, server_errors, stop)
from server_clients import annotate, browse  # noqa: E402
from server_store_layer import compare_store, store_cycles, store_growth  # noqa: E402
from server_report import SECTION, render  # noqa: E402



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
