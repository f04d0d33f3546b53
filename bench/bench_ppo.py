"""Benchmark of one `align ppo` step on SmolLM2-135M, phase by phase, against the bare compute.

    .venv/bin/python bench/bench_ppo.py                      # table printed and written to BENCHMARKS.md
    .venv/bin/python bench/bench_ppo.py --modes lora --batch-size 2 --max-new-tokens 16 --no-write

What is measured, all in one process and one run (same model, same precision):
Both LoRA and full fine-tuning (`--modes`). Per mode:
  PPO step      the on-policy loop's step with `PPO` on real prompts: rollout (sampling with the KV cache), scoring
                (a RewardScorer on a SmolLM2 backbone), reference/value passes (log pi_old, V_old,
                log pi_ref), training (num_iterations x minibatches: forward, clipped losses, backward,
                gradient clipping, AdamW), timed by the step itself.
  rollout       `generate_responses` against plain `model.generate` with the same sampling
                settings, batch and seed (so both produce the same tokens): tokens/s, target >= 0.9.
  training      `PPO.update` on a fixed rollout against a bare forward+backward
                (logits -> cross-entropy -> backward, no optimizer) of the same policy over the same
                micro-batches and epochs: tokens/s, target >= 0.8.
Times are medians of `--repeats` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ROOT, alternate, bare_lm_backward, demo_prompt_file, machine, matmul_peak_flops, n_params,
                    roofline, write_section)

sys.path.insert(0, str(ROOT))
SECTION = "## PPO"


def build_trainer(args, workdir: Path):
    from align.onpolicy.loop import OnPolicyTrainer
    from align.onpolicy.ppo_config import PPOConfig
    from align.onpolicy.ppo_trainer import PPO
    from reward_model.backbone import load_backbone
    from reward_model.scorer import RewardScorer

    prompts = demo_prompt_file(workdir / "prompts.jsonl")
    cfg = PPOConfig(model=args.model, reward_model="reward_model.testing:length_reward", prompts=str(prompts),
                    output_dir=str(workdir / "run"), batch_size=args.batch_size,
                    mini_batch_size=args.mini_batch_size, num_iterations=args.num_iterations,
                    max_new_tokens=args.max_new_tokens, temperature=0.7, lora=args.lora, max_steps=1)
    trainer = OnPolicyTrainer(cfg, PPO(cfg))
    # Scoring through a real RewardScorer on a SmolLM2-sized backbone (head untrained: the
    # cost, not the values, is what is measured here).
    rm, rm_tokenizer = load_backbone(args.model, n_heads=1)
    trainer.algo.reward_fn = RewardScorer(rm.to(trainer.acc.device).eval(), rm_tokenizer,
                                          batch_size=args.batch_size)
    return trainer


def bench_step(trainer, repeats: int) -> dict:
    """Phase times of whole PPO steps (one warm-up)."""
    runs = []
    for i in range(repeats + 1):
        stats, _ = trainer.step(i)
        if i:
            runs.append(stats)
    keys = ("time/rollout", "time/score", "time/advantages", "time/update", "tokens", "tokens_trained",
            "completions/mean_length")
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def bench_rollout(trainer, repeats: int, max_new_tokens: int) -> dict:
    """generate_responses vs plain model.generate: same prompts, batch, sampling settings and seed."""
    import torch

    from align.onpolicy.rollout import generate_responses, tokenize_prompts

    policy, tokenizer, acc = trainer.engine.unwrapped.policy, trainer.pair.tokenizer, trainer.acc
    prompts = trainer.schedule.batch(0)

    def ours() -> int:
        with torch.no_grad(), acc.autocast():
            return generate_responses(policy, tokenizer, prompts, max_new_tokens, 0.7,
                                      max_prompt_length=trainer.cfg.max_prompt_length).response_ids.numel()

    def plain() -> int:
        with torch.no_grad(), acc.autocast():
            ids, mask = tokenize_prompts(tokenizer, prompts, trainer.cfg.max_prompt_length, acc.device)
            out = policy.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.7,
                                  top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                                  pad_token_id=tokenizer.pad_token_id)
            return out[:, ids.shape[1]:].numel()

    return alternate(ours, plain, repeats, acc.device, seed=1234)


def bench_training(trainer, repeats: int) -> dict:
    """ppo_update vs bare forward+backward over the same micro-batches of one fixed rollout."""
    import torch

    from align.onpolicy.ppo_core import compute_gae, kl_penalised_rewards, masked_whiten
    from align.onpolicy.rollout import micro_batch
    from align.onpolicy.rollout import generate_responses

    cfg, acc, algorithm = trainer.cfg, trainer.acc, trainer.algo
    prompts = trainer.schedule.batch(0)
    with acc.autocast():
        rollout = generate_responses(trainer.engine.unwrapped.policy, trainer.pair.tokenizer, prompts,
                                     cfg.max_new_tokens, cfg.temperature, max_prompt_length=cfg.max_prompt_length)
        old_logprobs, old_values, _ = algorithm.policy_pass(rollout)
        ref_logprobs = trainer.pair.logprobs(rollout, cfg.temperature, reference=True,
                                              batch_size=algorithm.micro_batch_size)
    mask = rollout.response_mask.float()
    scores = torch.zeros(len(rollout), device=acc.device)
    rewards, kl = kl_penalised_rewards(scores, old_logprobs, ref_logprobs, mask, cfg.beta)
    advantages, returns = compute_gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
    advantages = masked_whiten(advantages, mask)

    policy = trainer.engine.unwrapped.policy

    def bare() -> int:
        tokens = 0
        for _ in range(cfg.num_iterations):
            for idx in torch.arange(len(rollout)).split(algorithm.micro_batch_size):
                tokens += bare_lm_backward(policy, micro_batch(rollout, idx), acc)
        policy.zero_grad(set_to_none=True)
        return tokens

    def ours() -> int:
        stats = algorithm.update({"rollout": rollout, "old_logprobs": old_logprobs, "old_values": old_values,
                                  "kl": kl, "advantages": advantages, "returns": returns, "step": 0, "stats": {}})
        return int(stats["tokens_trained"])

    return alternate(ours, bare, repeats, acc.device)


def render(args, where: str, results: dict, peak: float) -> str:
    phases = [("rollout (sampling, KV cache)", "time/rollout"), ("scoring (RewardScorer)", "time/score"),
              ("reference + value passes, advantages", "time/advantages"), ("training (PPO epochs)", "time/update")]
    modes = list(results)
    any_step = results[modes[0]]["step"]
    lines = [SECTION, "", f"`python bench/bench_ppo.py` on {where}.", "",
             f"{args.model}, batch {args.batch_size}, max {args.max_new_tokens} new tokens (mean response "
             f"{any_step['completions/mean_length']:.1f}), {args.num_iterations} PPO epochs x "
             f"{args.batch_size // args.mini_batch_size} minibatches, value head on the policy; "
             f"medians of {args.repeats} runs after one warm-up"
             f"{f'; torch threads {args.threads}' if args.threads else ''}. Roofline: achieved FLOP/s (2·N per "
             f"sampled token, 6·N per trained token, 4·N with LoRA, whose frozen weights get no gradient) as a fraction of a same-precision {peak / 1e9:.0f} GFLOP/s "
             f"matmul peak measured in this run.", "",
             "| phase of one PPO step, s (share) | " + " | ".join(modes) + " |",
             "| --- |" + " ---: |" * len(modes)]
    totals = {m: sum(results[m]["step"][k] for _, k in phases) for m in modes}
    for label, key in phases:
        lines.append(f"| {label} | " + " | ".join(
            f"{results[m]['step'][key]:.2f} ({results[m]['step'][key] / totals[m]:.0%})" for m in modes) + " |")
    lines += ["| **total** | " + " | ".join(f"{totals[m]:.2f}" for m in modes) + " |", "",
              "| comparison (same run, same batch) | mode | ours tok/s | baseline tok/s | ratio | target "
              "| roofline ours | roofline baseline |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for m in modes:
        r, t, n = results[m]["rollout"], results[m]["training"], results[m]["n_params"]
        passes = 4.0 if m == "lora" else 6.0  # LoRA's backward: activation gradients only (plus the tiny adapters)
        lines.append(f"| rollout vs plain `model.generate` | {m} | {r['ours_tps']:.1f} | {r['base_tps']:.1f} "
                     f"| {r['ratio']:.2f} | >= 0.9 | {roofline(n, r['ours_tps'], 1, peak, 2):.1%} "
                     f"| {roofline(n, r['base_tps'], 1, peak, 2):.1%} |")
        lines.append(f"| training vs bare forward+backward | {m} | {t['ours_tps']:.1f} | {t['base_tps']:.1f} "
                     f"| {t['ratio']:.2f} | >= 0.8 | {roofline(n, t['ours_tps'], 1, peak, passes):.1%} "
                     f"| {roofline(n, t['base_tps'], 1, peak, passes):.1%} |")
    lines += ["", "Ratios are medians of back-to-back pairs (the baseline, then ours, on the same inputs). "
              "Training can beat the bare pass: PPO applies the LM head only at response positions, while the "
              "bare causal-LM loss computes logits at every position (the head is a quarter of SmolLM2's "
              "FLOPs per token). The LoRA rollout baseline is the same PeftModel's `generate`: the adapter's "
              "extra small matmuls per layer are what makes LoRA sampling slower than full-weight sampling "
              "on a CPU.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=4, help="episodes per PPO step (and generate batch)")
    parser.add_argument("--mini-batch-size", type=int, default=4)
    parser.add_argument("--num-iterations", type=int, default=2, help="PPO epochs over each rollout")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--modes", default="lora,full", help="comma-separated: lora, full (fine-tuning)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 steadies timings on a shared, busy CPU)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    where = machine()
    peak = matmul_peak_flops()
    results = {}
    for mode in args.modes.split(","):
        args.lora = mode == "lora"
        with tempfile.TemporaryDirectory() as tmp:
            trainer = build_trainer(args, Path(tmp))
            print(f"[{mode}] PPO steps ...", flush=True)
            step = bench_step(trainer, args.repeats)
            print(f"[{mode}] rollout vs generate ...", flush=True)
            rollout = bench_rollout(trainer, args.repeats, args.max_new_tokens)
            print(f"[{mode}] training vs bare forward+backward ...", flush=True)
            training = bench_training(trainer, args.repeats)
            results[mode] = {"step": step, "rollout": rollout, "training": training,
                             "n_params": n_params(trainer.engine.unwrapped.policy)}
            del trainer
    peak = max(peak, matmul_peak_flops())  # measured before and after: the least disturbed is kept
    table = render(args, where, results, peak)
    print(table)
    print(json.dumps(results))
    if not args.no_write:
        write_section(SECTION, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
