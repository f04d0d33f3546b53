"""Per-step cost of the four on-policy trainers, this checkout against another one (a before/after bench).

    .venv/bin/python bench/bench_onpolicy.py --baseline /path/to/older/checkout
    .venv/bin/python bench/bench_onpolicy.py --baseline DIR --trainers grpo ppo --precisions fp32 --no-write

Each trainer runs through its own checkout's command line (`python -m align.cli TRAINER`, so the baseline needs
no code from this one) on SmolLM2-135M-Instruct with the same flags: LoRA, 4 prompts a step, 16 new tokens,
the test reward `reward_model.testing:length_reward` (scoring costs nothing, so the rows time the trainer),
once with --max-steps 1 and once with --max-steps 1+K. The difference over K is the cost of a step after the
first: model loading, the warm-up step and the final save cancel out. Costs are the child's CPU seconds
(user + system, one torch thread), less sensitive than wall time to other jobs on a shared machine; wall
seconds beside them. Runs alternate between the checkouts; the table gives the median over repeats.
Flags both checkouts accept are used: an old name still works in the new one (prints a deprecation line).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, child_env, demo_prompt_file, machine, publish

FLAGS = {  # besides the shared ones: group sizes of 2 (8 sequences a step), a grader the old GRPO needs
    "ppo": [],
    "grpo": ["--num-generations", "2", "--graders", "length"],
    "rloo": ["--num-generations", "2", "--graders", "length"],
    "online-dpo": ["--num-generations", "2"],
}


def run_cli(checkout: Path, trainer: str, steps: int, precision: str, threads: int, prompts: Path,
            out: Path) -> tuple[float, float]:
    """(CPU s, wall s) of one run of `align TRAINER` from `checkout`; raises with its last lines on failure."""
    env = child_env(checkout, threads=threads, precision=precision)
    cmd = [sys.executable, "-m", "align.cli", trainer, "--prompts", str(prompts), "--output-dir", str(out),
           "--reward-model", "reward_model.testing:length_reward", "--seed", "0", "--max-steps", str(steps),
           "--batch-size", "4", "--max-new-tokens", "16", "--lora", *FLAGS[trainer]]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=checkout, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{checkout} {trainer}: " + " | ".join((proc.stderr or proc.stdout).splitlines()[-3:]))
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall


def step_cost(checkout: Path, trainer: str, precision: str, args, prompts: Path, work: Path) -> tuple[float, float]:
    """(CPU s, wall s) of one step after the first: (run of 1+K steps − run of 1 step) / K."""
    tag = f"{checkout.name}-{trainer}-{precision}-{time.monotonic_ns()}"
    one = run_cli(checkout, trainer, 1, precision, args.threads, prompts, work / f"{tag}-1")
    many = run_cli(checkout, trainer, 1 + args.steps, precision, args.threads, prompts, work / f"{tag}-k")
    return (many[0] - one[0]) / args.steps, (many[1] - one[1]) / args.steps


def table(rows: list[dict]) -> str:
    lines = ["| trainer | precision | baseline CPU s/step | this CPU s/step | this / baseline (CPU) "
             "| baseline wall s/step | this wall s/step | repeats |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['trainer']} | {r['precision']} | {r['base_cpu']:.2f} | {r['ours_cpu']:.2f} "
                     f"| {r['ours_cpu'] / r['base_cpu']:.3f} | {r['base_wall']:.2f} | {r['ours_wall']:.2f} "
                     f"| {r['repeats']} |")
    return "\n".join(lines)


def measure(trainer: str, precision: str, args, prompts: Path, work: Path) -> dict:
    """Medians over repeats of alternating runs (baseline first on even repeats, this checkout first on odd)."""
    ours, base = [], []
    for i in range(args.repeats):
        order = [(args.baseline, base), (ROOT, ours)]
        for checkout, into in order if i % 2 == 0 else order[::-1]:
            into.append(step_cost(checkout, trainer, precision, args, prompts, work))
            print(f"[bench_onpolicy] {trainer} {precision} {checkout}: {into[-1][0]:.2f} CPU s/step",
                  file=sys.stderr, flush=True)
    med = lambda xs, k: statistics.median(x[k] for x in xs)
    return {"trainer": trainer, "precision": precision, "base_cpu": med(base, 0), "ours_cpu": med(ours, 0),
            "base_wall": med(base, 1), "ours_wall": med(ours, 1), "repeats": args.repeats}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="another checkout of prefloop (a git worktree)")
    parser.add_argument("--trainers", nargs="+", choices=list(FLAGS), default=list(FLAGS))
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32"])
    parser.add_argument("--steps", type=int, default=3, help="K: timed steps after the first")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per checkout")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every run")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    args.baseline = Path(args.baseline).resolve()
    if not (args.baseline / "align" / "cli.py").is_file():
        parser.error(f"--baseline {args.baseline} is not a prefloop checkout (no align/cli.py)")
    header = (f"`python bench/bench_onpolicy.py --baseline {args.baseline.name}` on {machine()}; every run with "
              f"OMP_NUM_THREADS={args.threads} in the row's precision (PREFLOOP_CPU_BF16), K = {args.steps}.")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # GRPO and RLOO read a reference answer field (no grader uses it here)
        prompts = demo_prompt_file(work / "prompts.jsonl", reference="-")
        rows = [measure(t, p, args, prompts, work) for p in args.precisions for t in args.trainers]
    text = f"{header}\n\n{table(rows)}"
    publish("## On-policy trainers before and after (bench_onpolicy)", text, not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
