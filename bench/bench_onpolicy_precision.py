"""Do the on-policy trainers learn the same in bf16 autocast as in fp32? (issue 24)

    .venv/bin/python bench/bench_onpolicy_precision.py                 # 4 seeds, every trainer
    .venv/bin/python bench/bench_onpolicy_precision.py --seeds 2 --trainers ppo grpo

Each of `align ppo`, `grpo`, `rloo` and `online-dpo` trains a tiny letter model (tests/ppo_helpers.py, a random
2-layer Llama over 8 letters) on the task of its learning test in tests/ (PPO and online DPO: towards the letter
"a", `ppo_helpers:letter_a_reward`; GRPO and RLOO: the token_f1 grader against the reference "b b b") for
--steps steps, once per seed in each precision (PREFLOOP_CPU_BF16=1 / 0, one torch thread), from the same model
and seed. The table gives, per trainer and precision, the mean over seeds of the
reward of the first and of the last 5 steps and of the final KL to the reference, and the paired difference
bf16 − fp32 of the last-5 reward with its spread over seeds. A difference inside the spread between seeds of
one precision is noise; one beyond it is a precision bug in that trainer.
The header's precision says whether this CPU has bf16 units; without them bf16 is emulated (slower, same numbers).
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

REWARD = ["--reward-model", "ppo_helpers:letter_a_reward"]
GRADER = ["--graders", "token_f1"]  # against the rows' reference "b b b": partial credit for every b
FLAGS = {  # the settings of each trainer's learning test in tests/
    "ppo": [*REWARD, "--batch-size", "16", "--mini-batch-size", "8", "--max-new-tokens", "6", "--temperature", "1.0",
            "--learning-rate", "3e-3", "--beta", "0.1"],
    "grpo": [*GRADER, "--batch-size", "4", "--num-generations", "8", "--max-new-tokens", "3", "--mini-batch-size", "16",
             "--learning-rate", "3e-3", "--num-iterations", "2", "--beta", "0.02"],
    "rloo": [*GRADER, "--batch-size", "4", "--num-generations", "8", "--max-new-tokens", "3", "--mini-batch-size", "16",
             "--learning-rate", "3e-3", "--num-iterations", "2"],
    "online-dpo": [*REWARD, "--batch-size", "8", "--num-generations", "4", "--max-new-tokens", "4", "--learning-rate",
                   "2e-3", "--beta", "0.1", "--min-reward-gap", "0.1"],
}
# Each trainer's task as in its learning test: (build_letter_model's settings, prompt rows).
CHAT = [{"prompt": [{"role": "user", "content": " ".join(w)}]} for w in ("a b", "c d e", "f g", "h", "b c", "d")]
GRADED = [{"prompt": p, "reference": "b b b"} for p in ("a c", "c d", "e a", "d e")]
TASKS = {"ppo": ({"seed": 1, "initializer_range": 0.1}, CHAT), "online-dpo": ({"seed": 0}, CHAT),
         "grpo": ({"seed": 1}, GRADED), "rloo": ({"seed": 1}, GRADED)}


def train(trainer: str, model: Path, prompts: Path, out: Path, seed: int, precision: str, steps: int) -> dict:
    """One run in its own process; -> first-5 and last-5 mean reward and the final KL from metrics.jsonl."""
    env = child_env(threads=1, precision=precision, paths=(ROOT / "tests",))
    cmd = [sys.executable, "-m", "align.cli", trainer, "--model", str(model), "--prompts", str(prompts),
           "--output-dir", str(out), "--seed", str(seed), "--max-steps", str(steps),
           "--sample-every", "0", "--save-steps", "1000", *FLAGS[trainer]]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{trainer} seed {seed} {precision}: " + (proc.stderr or proc.stdout).strip()[-400:])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "reward" in r]
    mean = lambda part: statistics.fmean(r["reward"] for r in part)
    return {"first": mean(rows[:5]), "last": mean(rows[-5:]), "kl": rows[-1].get("kl", float("nan"))}


def summarise(trainer: str, runs: dict) -> list[str]:
    """Table rows for one trainer: runs[precision] = [result per seed]; the paired difference on the bf16 row."""
    diffs = [b["last"] - f["last"] for b, f in zip(runs["bf16"], runs["fp32"])]
    paired = {"fp32": "", "bf16": f"{statistics.fmean(diffs):+.3f} ± {statistics.stdev(diffs):.3f}"}
    lines = []
    for precision, results in runs.items():
        last = [r["last"] for r in results]
        lines.append(f"| {trainer} | {precision} | {statistics.fmean(r['first'] for r in results):.3f} "
                     f"| {statistics.fmean(last):.3f} ± {statistics.stdev(last):.3f} "
                     f"| {statistics.fmean(r['kl'] for r in results):.3f} | {paired[precision]} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="runs per trainer and precision (seeds 0, 1, ...)")
    parser.add_argument("--steps", type=int, default=30, help="--max-steps of every run")
    parser.add_argument("--trainers", nargs="+", choices=list(FLAGS), default=list(FLAGS))
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 (the spread over seeds is the noise)")
    sys.path.insert(0, str(ROOT / "tests"))
    from ppo_helpers import build_letter_model

    lines = ["| trainer | precision | reward, first 5 steps | reward, last 5 steps (mean ± sd over seeds) "
             "| final KL | bf16 − fp32, last 5 (paired) |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for trainer in args.trainers:
            settings, rows = TASKS[trainer]
            model = build_letter_model(work / f"{trainer}-lm", **settings)
            prompts = work / f"{trainer}-prompts.jsonl"
            prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
            runs = {p: [train(trainer, model, prompts, work / f"{trainer}-{p}-{s}", s, p, args.steps)
                        for s in range(args.seeds)] for p in ("fp32", "bf16")}
            lines += summarise(trainer, runs)
            print(lines[-2] + "\n" + lines[-1], file=sys.stderr, flush=True)
    text = (f"`python bench/bench_onpolicy_precision.py --seeds {args.seeds} --steps {args.steps}` on {machine()}.\n\n"
            + "\n".join(lines))
    publish("## On-policy trainers in bf16 and fp32 (bench_onpolicy_precision)", text, not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
