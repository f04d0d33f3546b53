"""bench_server's table."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server_fleet import OVERLAP  # noqa: E402

SECTION = "## Labeling server"


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

