"""Benchmark of one `align grpo` step on SmolLM2-135M against TRL's GRPOTrainer and against the bare compute.

    .venv/bin/python bench/bench_grpo.py                      # table printed and written to BENCHMARKS.md
    .venv/bin/python bench/bench_grpo.py --repeats 1 --trl-default-steps 1 --no-write
    .venv/bin/python bench/bench_grpo.py --grading --baseline /path/to/other/checkout   # grading throughput only

All in one process and one run, on the same model (SmolLM2-135M-Instruct, the embedded default, full
fine-tuning), the same GeneralPoints prompts and grader (align/graders/generalpoints.py), group size G, prompts
per step, and completion length; every row in the precision and torch thread count of the run:
  GRPO step   ours: the on-policy loop's step with `GroupRelative` (rollout with the KV cache, grading, one
              clipped-surrogate update;
              mu = 1 and one minibatch, so log pi_old is the update's own forward, as in TRL's same case).
              TRL 1.16 GRPOTrainer, transformers generation (use_vllm=False), beta = 0 (both defaults),
              per_device_train_batch_size = prompts x G, so one generation feeds one optimizer step:
                defaults  its own config (bf16=True, gradient checkpointing on);
                tuned     the precision prefloop.hardware picks, gradient checkpointing off.
              Each timed after one warm-up step (TRL's by a step callback around its training_step).
  rollout     `generate_responses` vs plain `model.generate` with the same sampling settings, batch and
              seed (so both produce the same tokens): tokens/s, target >= 0.9.
  training    `GroupRelative.update` on one fixed rollout vs a bare forward+backward (logits at every
              position -> cross-entropy -> backward, no optimizer) over the same rows: tokens/s, target >= 0.8.
  roofline    achieved FLOP/s (2·N per sampled token, 6·N per trained token) over a same-precision matmul
              peak measured in this run (bench/common.py).
Comparison ratios are medians of back-to-back pairs after one warm-up.
`--grading` measures only the grading: answers/s per grader, this checkout against `--baseline`'s code
(bench/grading_throughput.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ROOT, alternate, bare_lm_backward, machine, matmul_peak_flops, n_params,
                    roofline, step_timer, write_section)

sys.path.insert(0, str(ROOT))
SECTION = "## GRPO"
DEFAULT_MODEL = "smollm2-135m-instruct"


def task_rows(n: int) -> list[dict]:
    """GeneralPoints tasks (two cards, a reachable target): RFT rows with their grader."""
    from align.graders.generalpoints import generate_tasks

    return generate_tasks(n, n_cards=2, target=None, max_target=20, seed=0)


# ---------------------------------------------------------------------------------------------------
# ours
# ---------------------------------------------------------------------------------------------------

def build_ours(args, workdir: Path):
    from align.onpolicy.grpo_config import GRPOConfig
    from align.onpolicy.grpo_trainer import GroupRelative
    from align.onpolicy.loop import OnPolicyTrainer
    from prefloop.data import write_records
    from prefloop.models import resolve_model

    data = write_records(task_rows(64), workdir / "tasks.jsonl")
    n = args.prompts * args.num_generations
    cfg = GRPOConfig(model=str(resolve_model(args.model)), prompts=str(data), output_dir=str(workdir / "run"),
                     batch_size=args.prompts, num_generations=args.num_generations, max_new_tokens=args.max_new_tokens,
                     temperature=1.0, mini_batch_size=n, num_iterations=1, beta=0.0, sample_every=0)
    trainer = OnPolicyTrainer(cfg, GroupRelative(cfg))
    return trainer, trainer.tasks


def bench_step(trainer, examples, args) -> dict:
    """Wall seconds of whole GRPO steps, one warm-up first; the mean answer length of the timed ones."""
    times, lengths = [], []
    trainer.schedule.batch = lambda i: examples[i * args.prompts:(i + 1) * args.prompts]  # the same prompts each run
    for i in range(args.repeats + 1):
        start = time.perf_counter()
        stats, _ = trainer.step(i)
        if i:
            times.append(time.perf_counter() - start)
            lengths.append(stats["completions/mean_length"])
    return {"times": times, "response_length": statistics.mean(lengths)}


def bench_rollout(trainer, examples, args) -> dict:
    """`PolicyPair.sample` (generate_responses) vs plain `model.generate`: same prompts, G, settings and seed."""
    import torch

    from align.onpolicy.rollout import tokenize_prompts

    pair, acc, G = trainer.pair, trainer.acc, args.num_generations
    prompts = [e.prompt for e in examples[:args.prompts]]
    repeated = [p for p in prompts for _ in range(G)]

    def ours() -> int:
        with torch.no_grad(), acc.autocast():
            return pair.sample(prompts, G, args.max_new_tokens, 1.0).response_ids.numel()

    def plain() -> int:
        with torch.no_grad(), acc.autocast():
            ids, mask = tokenize_prompts(pair.tokenizer, repeated, None, acc.device)
            out = pair.policy.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0,
                                       top_k=0, top_p=1.0, max_new_tokens=args.max_new_tokens,
                                       pad_token_id=pair.tokenizer.pad_token_id)
            return out[:, ids.shape[1]:].numel()

    return alternate(ours, plain, args.repeats, acc.device, seed=1234)


def bench_training(trainer, examples, args) -> dict:
    """`update` (one optimizer step on the whole rollout) vs a bare forward+backward of the same rows."""
    import torch

    from align.onpolicy.grpo_core import group_advantages
    from align.onpolicy.rollout import micro_batch

    acc, policy, algorithm = trainer.acc, trainer.pair.policy, trainer.algo
    torch.manual_seed(0)
    with acc.autocast():
        rollout = trainer.pair.sample([e.prompt for e in examples[:args.prompts]], args.num_generations,
                                      args.max_new_tokens, 1.0)
    # random rewards: the untrained model scores 0 on every answer, and an all-zero advantage is a real but
    # degenerate update; the cost is the same either way
    advantages = group_advantages(torch.rand(len(rollout)), args.num_generations)
    rows = torch.arange(len(rollout))
    mb = micro_batch(rollout, rows)  # the very rows and columns the update's forward sees

    def bare() -> int:
        tokens = bare_lm_backward(policy, mb, acc)
        policy.zero_grad(set_to_none=True)
        return tokens

    def ours() -> int:
        algorithm.update({"rollout": rollout, "old_logprobs": None, "ref_logprobs": None, "advantages": advantages,
                          "step": 0, "stats": {}})
        return mb["input_ids"].numel()

    return alternate(ours, bare, args.repeats, acc.device)


# ---------------------------------------------------------------------------------------------------
# TRL
# ---------------------------------------------------------------------------------------------------

def generalpoints_reward(prompts, completions, reference, **kwargs) -> list[float]:
    """Our GeneralPoints grader as a TRL reward function (conversational completions)."""
    from align.graders import grade

    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [float(grade("generalpoints", p, t, r)) for p, t, r in zip(prompts, texts, reference)]


def run_trl(args, defaults: bool, steps: int) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig as TRLGRPOConfig
    from trl import GRPOTrainer

    from prefloop.hardware import trainer_precision_kwargs
    from prefloop.models import load_tokenizer, resolve_model

    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}], "reference": r["reference"]}
            for r in task_rows(64)]
    kwargs = dict(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.prompts * args.num_generations,
                  num_generations=args.num_generations, max_completion_length=args.max_new_tokens, max_steps=steps,
                  report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, use_vllm=False)
    if not defaults:  # the best settings for this machine: the precision prefloop picks, no checkpointing
        kwargs.update(trainer_precision_kwargs(gradient_checkpointing=False))
    config = TRLGRPOConfig(**kwargs)
    timer = step_timer()
    trainer = GRPOTrainer(model=str(resolve_model(args.model)), reward_funcs=generalpoints_reward, args=config,
                          train_dataset=Dataset.from_list(rows), processing_class=load_tokenizer(args.model),
                          callbacks=[timer])
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    return {"times": timer.times[1:], "response_length": statistics.mean(lengths[1:] or lengths),
            "bf16": config.bf16, "gradient_checkpointing": bool(config.gradient_checkpointing),
            "steps_per_generation": config.steps_per_generation, "loss_type": config.loss_type}


# ---------------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------------

def render(args, where: str, results: dict, peak: float) -> str:
    ours, n = results["ours"], results["n_params"]
    base = statistics.median(ours["times"])
    lines = [SECTION, "", f"`{args.command}` on {where}.", "",
             f"{args.model}{' (the embedded default)' if args.model == DEFAULT_MODEL else ''}, full fine-tuning, "
             f"{args.prompts} GeneralPoints prompt{'s' if args.prompts > 1 else ''} x G = {args.num_generations} "
             f"answers per step, at most "
             f"{args.max_new_tokens} new tokens at temperature 1, beta = 0, one optimizer step per rollout, the "
             f"GeneralPoints grader as the reward; torch threads {args.threads or 'default'}. Step times are "
             f"medians of the timed steps after one warm-up step; mean answer length beside them (the untrained "
             f"model rarely stops early, so every row trains on nearly the same lengths). Roofline: achieved "
             f"FLOP/s (2·N per sampled token, 6·N per trained prompt+answer token, N = {n / 1e6:.1f}M) as a "
             f"fraction of a same-precision {peak / 1e9:.0f} GFLOP/s matmul peak measured in this run.", "",
             "| one GRPO step | s/step | × ours | timed steps | mean answer tokens |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for key, label in (("ours", "align grpo"), ("trl-tuned", "TRL 1.16 GRPOTrainer, prefloop's precision, "
                                                             "grad-ckpt off"),
                       ("trl-default", "TRL 1.16 GRPOTrainer, its defaults")):
        if key in results:
            r = results[key]
            t = statistics.median(r["times"])
            lines.append(f"| {label} | {t:.1f} | {t / base:.2f} | {len(r['times'])} | {r['response_length']:.1f} |")
    r, t = results["rollout"], results["training"]
    lines += ["", "| comparison (same run, same rows) | ours tok/s | baseline tok/s | ratio | target "
              "| roofline ours | roofline baseline |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
              f"| rollout vs plain `model.generate` | {r['ours_tps']:.1f} | {r['base_tps']:.1f} | {r['ratio']:.2f} "
              f"| >= 0.9 | {roofline(n, r['ours_tps'], 1, peak, 2):.1%} "
              f"| {roofline(n, r['base_tps'], 1, peak, 2):.1%} |",
              f"| training vs bare forward+backward | {t['ours_tps']:.1f} | {t['base_tps']:.1f} | {t['ratio']:.2f} "
              f"| >= 0.8 | {roofline(n, t['ours_tps'], 1, peak):.1%} | {roofline(n, t['base_tps'], 1, peak):.1%} |"]
    notes = []
    for key in ("trl-default", "trl-tuned"):
        if key in results:
            x = results[key]
            notes.append(f"{key}: bf16={x['bf16']}, gradient checkpointing={x['gradient_checkpointing']}, "
                         f"loss_type={x['loss_type']}, steps_per_generation={x['steps_per_generation']}")
    lines += ["", "Training tokens are prompt + answer tokens of the rollout's rows (left padding shared by all "
              "rows trimmed); the update includes gradient clipping and the AdamW step, the bare pass neither, "
              "but the update projects only answer positions onto the vocabulary while the bare causal-LM loss "
              "computes logits at every position. Rollout tokens/s count answer columns (rows x longest "
              "answer). TRL rows: " + "; ".join(notes) + ".", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step")
    parser.add_argument("--num-generations", type=int, default=8, help="group size G")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up")
    parser.add_argument("--trl-default-steps", type=int, default=1,
                        help="timed steps of the TRL-defaults row (after one warm-up): bf16 is emulated, and slow, "
                             "on a CPU without bf16 units")
    parser.add_argument("--skip-trl-default", action="store_true", help="leave out the TRL-defaults row")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 steadies timings on a shared, busy CPU; 0: torch's default)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    parser.add_argument("--grading", action="store_true", help="measure grading throughput only (answers/s per "
                                                               "grader), against --baseline's code side by side")
    parser.add_argument("--baseline", help="with --grading: another checkout whose align package is the baseline")
    parser.add_argument("--batch", type=int, default=16, help="with --grading: answers per GraderMix call")
    parser.add_argument("--answers", type=int, default=2048, help="with --grading: answers per grader and run")
    parser.add_argument("--grading-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.command = "python bench/bench_grpo.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])
                                                   if (argv if argv is not None else sys.argv[1:]) else "")
    if args.grading_child:
        from grading_throughput import child

        print(json.dumps(child(args.code, args.batch, args.answers)))
        return 0
    if args.grading:
        from grading_throughput import SECTION as GRADING, side_by_side

        table = side_by_side(args, ROOT)
        print(table)
        if not args.no_write:
            write_section(GRADING, table)
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    where = machine()
    peak = matmul_peak_flops()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        trainer, examples = build_ours(args, Path(tmp))
        results["n_params"] = n_params(trainer.pair.policy)
        print("ours: GRPO steps ...", flush=True)
        results["ours"] = bench_step(trainer, examples, args)
        print("ours: rollout vs generate ...", flush=True)
        results["rollout"] = bench_rollout(trainer, examples, args)
        print("ours: training vs bare forward+backward ...", flush=True)
        results["training"] = bench_training(trainer, examples, args)
        del trainer
    print("TRL tuned ...", flush=True)
    results["trl-tuned"] = run_trl(args, defaults=False, steps=args.repeats + 1)
    if not args.skip_trl_default:
        print("TRL defaults ...", flush=True)
        results["trl-default"] = run_trl(args, defaults=True, steps=args.trl_default_steps + 1)
    peak = max(peak, matmul_peak_flops())  # measured before and after: the least disturbed is kept
    table = render(args, where, results, peak)
    print(json.dumps(results, default=str))
    print(table)
    if not args.no_write:
        write_section(SECTION, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
