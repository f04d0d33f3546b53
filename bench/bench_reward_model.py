"""Reward-model benchmark: training throughput and peak memory against TRL's RewardTrainer, and
held-out accuracy against the Bayes-optimal ceiling on synthetic Bradley-Terry comparisons.

    python bench/bench_reward_model.py                 # SmolLM2-135M, writes the "Reward model" section
    python bench/bench_reward_model.py --quick         # tiny model, smoke run (nothing written)

Part 1 (throughput): the same model, the same pairwise export rows and the same batch size, trained
for a few steps by (a) `reward-model train` (ours), (b) TRL's RewardTrainer with its default
settings, (c) TRL's RewardTrainer "tuned" with our hardware settings. Each runs in its own process
so that its peak memory is its own; the first step (warm-up) is not timed.
Part 2 (ceiling): ours trained on synthetic comparisons drawn from a known reward with Bradley-Terry
noise; held-out accuracy next to the best accuracy that noise allows, E[σ(|Δ*|)].
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, matmul_peak_flops, peak_rss_gib, step_timer, write_section

SECTION = "## Reward model"
VARIANTS = ("ours", "trl_default", "trl_tuned")


# ----------------------------------------------------------------------------- one variant (child process)

def run_variant(variant: str, model: str, data: Path, batch: int, steps: int, out: Path) -> dict:
    import torch

    timer = step_timer()
    if variant == "ours":
        from reward_model.reward_config import RewardModelConfig
        from reward_model.reward_trainer import train

        cfg = RewardModelConfig(data=str(data), model=model, output_dir=str(out), per_device_train_batch_size=batch,
                                max_steps=steps, learning_rate=1e-4, save_steps=10**6,
                                logging_steps=steps, normalize_samples=16, resume=False, seed=0)
        train(cfg, callbacks=[timer])
    else:
        from datasets import Dataset
        from trl import RewardConfig, RewardTrainer

        from prefloop.data import read_records
        from prefloop.hardware import trainer_precision_kwargs

        rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in read_records(data)]
        # default: TRL's own choices (bf16 and gradient checkpointing on), plus the use_cpu flag that
        # transformers demands before it runs bf16 on a CPU; tuned: the best settings for this machine
        # (the precision prefloop's hardware module picks, no gradient checkpointing).
        tuned = (trainer_precision_kwargs(gradient_checkpointing=False) if variant == "trl_tuned"
                 else {"use_cpu": not torch.cuda.is_available()})
        args = RewardConfig(output_dir=str(out), per_device_train_batch_size=batch, max_steps=steps,
                            learning_rate=1e-4, save_strategy="no", report_to=[], logging_steps=steps, seed=0,
                            **tuned)
        torch.manual_seed(0)
        RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), callbacks=[timer]).train()
        variant = f"{variant} (bf16={args.bf16}, grad ckpt={args.gradient_checkpointing})"
    timed = sum(timer.times[1:])  # steps 2..n: the first step pays one-off costs
    cpu = sum(timer.cpu[1:])  # CPU seconds: what a shared machine's load distorts least
    peak = peak_rss_gib() * 1024
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"variant": variant, "steps_timed": len(timer.times) - 1, "seconds": timed,
            "pairs_per_s": (len(timer.times) - 1) * batch / timed,
            "pairs_per_cpu_s": (len(timer.times) - 1) * batch / cpu, "peak_rss_mib": peak,
            "train_mem_mib": peak - timer.rss_at_start, "gpu_peak_mib": gpu_peak}


def flops_per_pair(model: str, data: Path) -> float:
    """Training FLOPs of one pair: 6·N·(tokens of prompt+chosen and prompt+rejected), N = the reward
    model's parameters less the input embedding (a lookup, not a matmul; a reward model has no LM head)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from prefloop.data import read_records
    from prefloop.models import load_tokenizer

    tok = load_tokenizer(model)
    rows = read_records(data)
    # transformers 5 returns a BatchEncoding (2 keys) from tokenize=True: count its input_ids
    tokens = sum(len(tok.apply_chat_template(r["prompt"] + r[side], tokenize=True, return_dict=True)["input_ids"])
                 for r in rows for side in ("chosen", "rejected")) / len(rows)
    net = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1, dtype=torch.float32)
    n = sum(p.numel() for p in net.parameters()) - net.get_input_embeddings().weight.numel()
    return 6 * n * tokens


# ----------------------------------------------------------------------------- parent

def spawn(variant: str, model: str, data: Path, batch: int, steps: int, work: Path) -> dict:
    result = work / f"{variant}.json"
    cmd = [sys.executable, __file__, "--child", variant, "--model", model, "--data", str(data),
           "--batch-size", str(batch), "--steps", str(steps), "--result", str(result)]
    print(f"[bench] {variant} ...", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads(result.read_text())


def ceiling_run(model: str, work: Path, pairs: int, epochs: float, lr: float, batch: int) -> dict:
    from prefloop.data import write_records
    from reward_model.eval_config import RewardEvalConfig
    from reward_model.evaluate import evaluate
    from reward_model.reward_config import RewardModelConfig
    from reward_model.reward_trainer import train
    from reward_model.synthetic import make_synthetic_comparisons

    from prefloop.data import split_by_key

    # the export's split (train file + its .test companion), 40% of the prompts held out
    train_rows, test_rows = split_by_key(make_synthetic_comparisons(pairs, seed=0), lambda r: r["prompt_id"], 0.4, 0)
    write_records(train_rows, work / "synthetic.train.jsonl")
    write_records(test_rows, work / "synthetic.test.jsonl")
    cfg = RewardModelConfig(data=str(work / "synthetic.train.jsonl"), model=model, output_dir=str(work / "rm-ceiling"),
                            per_device_train_batch_size=batch, num_train_epochs=epochs, learning_rate=lr,
                            eval_steps=10**6, save_steps=10**6, logging_steps=10,
                            resume=False, seed=0)
    start = time.perf_counter()
    out = train(cfg)
    seconds = time.perf_counter() - start
    result = evaluate(RewardEvalConfig(model=str(out)))
    return {"train_pairs": json.loads((out / "reward_model.json").read_text())["data"]["n_train"],
            "eval_pairs": result["pairs"], "accuracy": result["accuracy"], "bayes": result["bayes_ceiling"],
            "true_order": result["true_order_accuracy"], "ece": result["ece"], "seconds": seconds}


def table(rows: list[dict], ceiling: dict | None, model_name: str, batch: int, info: str, repeats: int,
          flops_pair: float, peak: float) -> str:
    ours = rows[0]["pairs_per_cpu_s"]
    lines = [SECTION, "", f"`python bench/bench_reward_model.py` — model {model_name}, batch {batch} pairs "
             f"(2·{batch} sequences), same synthetic pairwise rows for every trainer, each in its own process; "
             f"best of {repeats} interleaved runs per trainer, first step of each run not timed. The machine is shared "
             "with other jobs, so wall-clock throughput swings with their load; the comparison uses pairs per "
             "CPU-second of the training process (user + system time of all its threads). Roofline: achieved "
             f"FLOP/s (6·N·tokens per pair, {flops_pair / 1e9:.0f} GFLOP a pair) over wall time, as a fraction of a "
             f"same-precision {peak / 1e9:.0f} GFLOP/s matmul peak measured in this run.",
             f"Machine: {info}.", "",
             "| trainer | pairs per CPU-s | vs ours | pairs/s (wall) | roofline | peak RSS MiB | training memory MiB "
             "| timed steps |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['pairs_per_cpu_s']:.3f} | {r['pairs_per_cpu_s'] / ours:.2f}x | "
                     f"{r['pairs_per_s']:.2f} | {r['pairs_per_s'] * flops_pair / peak:.0%} | {r['peak_rss_mib']:.0f} "
                     f"| {r['train_mem_mib']:.0f} | {r['steps_timed']} |")
    lines += ["", WHY]
    if ceiling:
        lines += ["", f"Synthetic Bradley-Terry comparisons (reward_model.synthetic: r* = #positive − #negative words, "
                  f"labels drawn with P = σ(Δr*)), {model_name}, {ceiling['train_pairs']} training pairs (1 pass), "
                  f"{ceiling['eval_pairs']} held-out pairs on unseen prompts:", "",
                  "| held-out accuracy | Bayes-optimal ceiling E[σ(abs Δr*)] | agreement with the true order | ECE | train s (wall) |",
                  "| ---: | ---: | ---: | ---: | ---: |",
                  f"| {ceiling['accuracy']:.3f} | {ceiling['bayes']:.3f} | {ceiling['true_order']:.3f} | "
                  f"{ceiling['ece']:.3f} | {ceiling['seconds']:.0f} |"]
    return "\n".join(lines) + "\n"


WHY = ("Why: TRL's RewardConfig defaults turn on gradient checkpointing, which runs every layer's forward "
       "twice (once more during backward) to save activation memory: more compute per pair, less memory "
       "(see the memory columns; `--gradient-checkpointing true` gives ours the same trade). "
       "`reward-model train` takes precision and checkpointing from `prefloop.hardware` (checkpointing off "
       "unless asked for), so it runs like TRL tuned by hand: the same model forward and TRL's own training "
       "loop, plus length-grouped batches (less padding); the gap to TRL tuned is within this shared "
       "machine's run-to-run noise. Precision: prefloop picks bf16 only on a CPU with bf16 units "
       "(AVX512-BF16/AMX), where TRL's bf16 default costs nothing; on a CPU without them prefloop (and TRL "
       "tuned) run fp32 while TRL's default stays at bf16, which such CPUs emulate many times slower.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="backbone (default: embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step, the same for every trainer")
    parser.add_argument("--steps", type=int, default=8, help="optimiser steps per trainer (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per trainer (interleaved; the best is kept)")
    parser.add_argument("--pairs", type=int, default=600, help="synthetic pairs for the ceiling run (60%% train)")
    parser.add_argument("--epochs", type=float, default=1.0, help="epochs of the ceiling run")
    parser.add_argument("--lr", type=float, default=2e-4, help="learning rate of the ceiling run")
    parser.add_argument("--quick", action="store_true", help="tiny model, few steps, nothing written")
    parser.add_argument("--skip-ceiling", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            result = run_variant(args.child, args.model, Path(args.data), args.batch_size, args.steps, Path(tmp))
        Path(args.result).write_text(json.dumps(result))
        return 0

    from prefloop.data import write_records
    from prefloop.models import resolve_model
    from reward_model.synthetic import make_synthetic_comparisons

    info = machine()
    peak = matmul_peak_flops()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.quick:
            from prefloop.testing import build_tiny_causal_lm

            model, name = str(build_tiny_causal_lm(work / "tiny")), "tiny random Llama"
            args.pairs, args.lr, args.epochs, args.repeats = 400, 3e-3, 2.0, 1
        else:
            model, name = resolve_model(args.model), args.model or "SmolLM2-135M-Instruct"
        # the throughput data: the same synthetic rows for every trainer, enough for every step
        write_records(make_synthetic_comparisons(args.batch_size * args.steps, seed=1), work / "pairs.jsonl")
        # interleaved A B C C B A and best of the repeats: a shared machine's load drifts during the run
        order = VARIANTS + VARIANTS[::-1] if args.repeats > 1 else VARIANTS
        runs = [spawn(v, model, work / "pairs.jsonl", args.batch_size, args.steps, work) for v in order]
        rows = [max((r for r in runs if r["variant"].startswith(v)), key=lambda r: r["pairs_per_cpu_s"])
                for v in VARIANTS]
        flops_pair = flops_per_pair(model, work / "pairs.jsonl")
        ceiling = None if args.skip_ceiling else ceiling_run(model, work, args.pairs, args.epochs, args.lr,
                                                             args.batch_size)
    text = table(rows, ceiling, name, args.batch_size, info, args.repeats, flops_pair,
                 max(peak, matmul_peak_flops()))
    print("\n" + text)
    if not (args.quick or args.no_write):
        write_section(SECTION, text)
        print(f"[bench] wrote the '{SECTION}' section of BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
