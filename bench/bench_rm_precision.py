"""Does reward-model training learn the same in bf16 autocast as in fp32? The tiny-model run of
tests/test_reward_train.py (600 synthetic Bradley-Terry comparisons, 40 % held out by prompt), over model
seeds, in each precision, each run in its own process.

    .venv/bin/python bench/bench_rm_precision.py --seeds 9

Per seed and precision: the held-out accuracy against the noisy labels (its ceiling is ~0.78) and the
true-order agreement (ranking by the synthetic true reward); then the paired differences bf16 − fp32.

What it showed (AMD EPYC with AVX512-BF16, seeds 0-8): held-out accuracy 0.764 (bf16) vs 0.763 (fp32), but
true-order agreement 0.889 vs 0.927, lower in bf16 in 8 of 9 seeds (one tie). Making the head, the attention
or the MLP fp32, or scoring in fp32, each closed part of the gap on some seeds and none on others: the loss is
spread over the backbone's bf16 matmuls, forward and backward.
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
from common import ROOT, child_env, machine

CHILD = """
import json, sys
from pathlib import Path
from prefloop.data import split_by_key, write_records
from prefloop.testing import build_tiny_causal_lm
from reward_model.cli import main as cli
from reward_model.synthetic import make_synthetic_comparisons
root, seed = Path(sys.argv[1]), int(sys.argv[2])
model = str(build_tiny_causal_lm(root / "tiny", seed=seed))
train, test = split_by_key(make_synthetic_comparisons(600, seed=0), lambda r: r["prompt_id"], 0.4, seed=42)
write_records(train, root / "pairs.train.jsonl"); write_records(test, root / "pairs.test.jsonl")
flags = ["--learning-rate", "3e-3", "--per-device-train-batch-size", "16", "--num-train-epochs", "2",
         "--eval-steps", "25", "--logging-steps", "5", "--save-steps", "1000", "--seed", str(seed)]
assert cli(["train", "--data", str(root / "pairs.train.jsonl"), "--model", model, "--output-dir", str(root / "rm"), *flags]) == 0
assert cli(["eval", "--model", str(root / "rm")]) == 0
print("RESULT " + (root / "rm" / "eval" / "metrics.json").read_text().replace("\\n", " "))
"""


def run(seed: int, precision: str, tmp: Path) -> dict:
    out = tmp / f"{precision}-{seed}"
    out.mkdir()
    env = child_env(precision=precision)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(out), str(seed)], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"seed {seed} {precision} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    metrics = json.loads(line.removeprefix("RESULT "))
    return {"accuracy": metrics["accuracy"], "true_order": metrics["true_order_accuracy"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=9, help="model seeds 0 .. N-1")
    args = parser.parse_args()
    from prefloop.hardware import _cpu_flags_bf16

    if not _cpu_flags_bf16():
        sys.exit("this CPU has no bf16 units: there is no bf16 run to compare")
    print(f"[bench_rm_precision] {machine()}", flush=True)
    print("| seed | accuracy fp32 | accuracy bf16 | true order fp32 | true order bf16 |\n| --- | ---: | ---: | ---: | ---: |")
    rows = []
    with tempfile.TemporaryDirectory(prefix="rm-precision-") as tmp:
        for seed in range(args.seeds):
            r = {p: run(seed, p, Path(tmp)) for p in ("fp32", "bf16")}
            rows.append(r)
            print(f"| {seed} | {r['fp32']['accuracy']:.3f} | {r['bf16']['accuracy']:.3f} | {r['fp32']['true_order']:.3f} "
                  f"| {r['bf16']['true_order']:.3f} |", flush=True)
    for key in ("accuracy", "true_order"):
        gaps = [r["bf16"][key] - r["fp32"][key] for r in rows]
        print(f"{key}: fp32 {statistics.mean(r['fp32'][key] for r in rows):.3f}, bf16 "
              f"{statistics.mean(r['bf16'][key] for r in rows):.3f}; bf16 − fp32 mean {statistics.mean(gaps):+.3f}, "
              f"lower in bf16 in {sum(g < 0 for g in gaps)} of {len(gaps)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
