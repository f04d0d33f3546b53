"""`bench_grpo.py --grading`: answers graded per second, as the GRPO step grades them (GraderMix over batches of
prompts x G answers), for this checkout and, with `--baseline DIR`, another checkout side by side.

Each measurement runs in a fresh child process (`--grading-child --code DIR`, DIR first on sys.path), the two
codes alternating `--repeats` times; the table gives the best answers/s of each (on a shared, busy CPU the
best run is the least disturbed one, as timeit advises) and their ratio. The
answers are normal ones (right, wrong and unparseable, as a policy writes them), so the ratio is the budget's
overhead on ordinary grading. The operator's `python` grader is a one-line function here: what it
measures is the worker round trip, the most the budget can cost.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTION = "## GRPO grading"


def half(prompt, response, reference):
    """The operator's python grader of the bench: trivial, so the number is the cost of running it at all."""
    return 0.5


def workloads(n: int, db: str) -> dict[str, tuple]:
    """grader -> (spec, prompts, answers, references): n normal answers each."""
    from bench_grpo import task_rows

    rows = task_rows(64)
    gp_answers = [f"Values: {r['reference']['values']}.\nAnswer: " + (" + ".join(map(str, r["reference"]["values"]))
                                                                      if i % 3 else "I am not sure")
                  for i, r in enumerate(rows)]
    maths = [(f"Step 1: {i} + {i} = {2 * i}.\nThe answer is {2 * i + i % 2}.", f"{i} + {i} = {2 * i}\n#### {2 * i}")
             for i in range(64)]
    regex = [(f"Order #{10000 + i * 7} shipped on day {i}", r"#\d{5}\b") for i in range(64)]
    fields = [(json.dumps({"name": f"item {i}", "price": i + 0.5, "qty": i % 4}),
               {"name": f"Item {i}", "price": i + 0.5, "qty": 1}) for i in range(64)]
    sql = [("SELECT name FROM item WHERE price > 5" if i % 2 else "SELECT * FROM item", "SELECT name FROM item "
            "WHERE price > 5") for i in range(64)]

    def take(pairs):
        pairs = [pairs[i % len(pairs)] for i in range(n)]
        return ["q"] * n, [a for a, _ in pairs], [r for _, r in pairs]

    return {
        "generalpoints": ("generalpoints", [r["prompt"] for r in rows][:1] * n,
                          [gp_answers[i % 64] for i in range(n)], [rows[i % 64]["reference"] for i in range(n)]),
        "math": ("math", *take(maths)),
        "string_check regex": ({"name": "string_check", "mode": "regex"}, *take(regex)),
        "json_fields": ({"name": "json_fields", "fields": {"price": "numeric"}}, *take(fields)),
        "sql": ({"name": "sql", "db": db}, *take(sql)),
        "python (operator's)": ({"name": "python", "function": "grading_throughput:half"}, *take(regex)),
    }


def child(code: str, batch: int, answers: int) -> dict[str, float]:
    """Answers/s per grader with the `align` package of `code`."""
    sys.path.insert(0, code)
    import align
    from align.graders.mix import GraderMix

    assert Path(align.__file__).resolve().is_relative_to(Path(code).resolve()), (align.__file__, code)

    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "shop.db")
        conn = sqlite3.connect(db)
        conn.executescript("CREATE TABLE item (name TEXT, price REAL);"
                           + "".join(f"INSERT INTO item VALUES ('i{i}', {i});" for i in range(50)))
        conn.commit()
        conn.close()
        out = {}
        for name, (spec, prompts, responses, references) in workloads(answers, db).items():
            mix = GraderMix(spec)
            mix(prompts[:batch], responses[:batch], references[:batch])  # warm-up: caches, a worker started
            start = time.perf_counter()
            for i in range(0, answers, batch):
                mix(prompts[i:i + batch], responses[i:i + batch], references[i:i + batch])
            out[name] = answers / (time.perf_counter() - start)
    return out


def side_by_side(args, root: Path) -> str:
    codes = {"ours": str(root)} | ({"baseline": args.baseline} if args.baseline else {})
    runs: dict[str, list[dict]] = {k: [] for k in codes}
    for _ in range(args.repeats):
        for key, code in codes.items():  # alternating, so a busy spell hurts both alike
            cmd = [sys.executable, str(HERE / "bench_grpo.py"), "--grading-child", "--code", code,
                   "--batch", str(args.batch), "--answers", str(args.answers)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=_env())
            runs[key].append(json.loads(done.stdout.strip().splitlines()[-1]))
    names = list(runs["ours"][0])
    from common import machine

    lines = [SECTION, "", f"`{args.command}` on {machine()}, load average {os.getloadavg()[0]:.0f} at the end. "
             f"Answers graded per second through GraderMix in batches of "
             f"{args.batch} (prompts x G), {args.answers} normal answers per grader, the best of {args.repeats} "
             f"alternating runs, each in a fresh process" + (f"; baseline: the code in {args.baseline}" if
                                                             args.baseline else "") + ".", "",
             "| grader | ours answers/s | baseline answers/s | ours / baseline |", "| --- | ---: | ---: | ---: |"]
    for name in names:
        ours = max(r[name] for r in runs["ours"])
        base = max(r[name] for r in runs["baseline"]) if args.baseline else float("nan")
        lines.append(f"| {name} | {ours:,.0f} | {base:,.0f} | {ours / base:.2f} |")
    return "\n".join(lines) + "\n"


def _env() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # --code decides which align is imported
    return env


if __name__ == "__main__":  # the same as `bench_grpo.py --grading ...`
    sys.path.insert(0, str(HERE))
    from bench_grpo import main

    sys.exit(main(["--grading", *sys.argv[1:]]))
