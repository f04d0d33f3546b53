"""The cost of DPO's held-out evaluation, this checkout against another (a before/after bench).

    .venv/bin/python bench/bench_dpo_eval.py --baseline DIR --data runs/loop-demo/round-1/pairs.train.jsonl
    .venv/bin/python bench/bench_dpo_eval.py --baseline DIR --data D/pairs.train.jsonl --eval-pairs 16 --no-write

`align dpo` with the demo preset's settings (SmolLM2-135M-Instruct, LoRA r 16, batches of 8 pairs, length 160)
runs one training step from each checkout's command line, so its held-out set (pairs.test.jsonl beside --data,
its first --eval-pairs pairs) is evaluated twice: before the step and after it. Each evaluation computes the
loss, the implicit-reward margins and the exact KL against the reference; the rows give the evaluation's
seconds per held-out pair (`eval_runtime`, median over both evaluations of every repeat) and what it
measured after the step, which both checkouts should agree on. Runs alternate between the checkouts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, child_env, machine, publish

SECTION = "## DPO's held-out evaluation before and after (bench_dpo_eval)"
FLAGS = ["--model", "smollm2-135m-instruct", "--lora", "--lora-r", "16", "--lora-alpha", "32", "--max-length", "160",
         "--per-device-train-batch-size", "8", "--learning-rate", "5e-4", "--max-steps", "1", "--save-steps", "1000",
         "--eval-steps", "1000", "--seed", "0"]


def run_dpo(checkout: Path, data: Path, pairs: int, out: Path, precision: str, threads: int) -> dict:
    """One `align dpo` from `checkout` on `data` (`pairs` held out beside it); -> seconds per held-out pair of
    each evaluation, and the last one."""
    cmd = [sys.executable, "-m", "align.cli", "dpo", "--data", str(data), "--output-dir", str(out), *FLAGS]
    proc = subprocess.run(cmd, env=child_env(checkout, threads=threads, precision=precision), cwd=checkout,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{checkout}: align dpo failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "eval_runtime" in line]
    return {"per_pair": [e["eval_runtime"] / pairs for e in evals], "after": evals[-1]}


def held_out_copy(data: Path, n: int | None, work: Path) -> tuple[Path, int]:
    """--data and the first `n` pairs of its pairs.test.jsonl, side by side in `work`: -> (the training file,
    the held-out pairs)."""
    test = data.with_name("pairs.test.jsonl")
    if not data.is_file():
        sys.exit(f"{data}: not found; give a round's pairs.train.jsonl")
    if not test.is_file():
        sys.exit(f"{test}: not found; --data must sit beside the held-out pairs `labeling export` writes")
    lines = [line for line in test.read_text().splitlines() if line.strip()][:n]
    if not lines:
        sys.exit(f"{test}: no held-out pairs to evaluate")
    (work / "pairs.train.jsonl").write_text(data.read_text())
    (work / "pairs.test.jsonl").write_text("\n".join(lines) + "\n")
    return work / "pairs.train.jsonl", len(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="another checkout of prefloop (a git worktree)")
    parser.add_argument("--data", required=True, help="a round's pairs.train.jsonl (pairs.test.jsonl beside it)")
    parser.add_argument("--eval-pairs", type=int, default=None, help="evaluate the first N held-out pairs only")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per checkout")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every run")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    if args.eval_pairs is not None and args.eval_pairs < 1:
        parser.error(f"--eval-pairs {args.eval_pairs}: evaluate at least one pair")
    baseline = Path(args.baseline).resolve()
    if not (baseline / "align" / "cli.py").is_file():
        parser.error(f"--baseline {baseline} is not a prefloop checkout (no align/cli.py)")
    sides = {"baseline": baseline, "this": ROOT}  # by name: --baseline may be this checkout (a noise check)
    runs = {side: [] for side in sides}
    with tempfile.TemporaryDirectory(prefix="bench-dpo-eval-") as tmp:
        data, pairs = held_out_copy(Path(args.data).resolve(), args.eval_pairs, Path(tmp))
        for i in range(args.repeats):
            for side in ("baseline", "this") if i % 2 == 0 else ("this", "baseline"):
                runs[side].append(run_dpo(sides[side], data, pairs, Path(tmp) / f"run-{i}-{side}", args.precision,
                                          args.threads))
                print(f"[bench_dpo_eval] {side} ({sides[side]}): {runs[side][-1]['per_pair']} s/pair",
                      file=sys.stderr, flush=True)
    lines = ["| checkout | s per held-out pair | KL after | margin after | loss after |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for side, checkout in sides.items():
        per_pair = statistics.median(x for run in runs[side] for x in run["per_pair"])
        after = runs[side][-1]["after"]
        lines.append(f"| {side} ({checkout.name}) | {per_pair:.2f} | {after.get('eval_kl', float('nan')):.4f} "
                     f"| {after['eval_rewards/margins']:.4f} | {after['eval_loss']:.4f} |")
    header = (f"`python bench/bench_dpo_eval.py --baseline {baseline.name} --eval-pairs {pairs} --precision "
              f"{args.precision}` on {machine()}; OMP_NUM_THREADS={args.threads}, {args.repeats} runs per checkout.")
    publish(SECTION, f"{header}\n\n" + "\n".join(lines), not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
