"""The GeneralPoints study (Chu et al. 2025, "SFT Memorizes, RL Generalizes") on the embedded SmolLM2-135M.

    .venv/bin/python bench/bench_generalpoints.py                 # base, SFT, RFT; prints the table
    .venv/bin/python bench/bench_generalpoints.py --sft-model runs/generalpoints/sft/final   # RFT again only

The defaults take ~35 min on a quiet 2-core CPU (one torch thread; SFT ~15, RFT ~16, evaluation ~5):
SFT 24 steps x 8 worked solutions, GRPO 30 steps x 2 prompts x G = 8 answers at lr 2e-6, 96 ID and
96 OOD test deals. A shorter, harsher RL budget (4 steps at lr 3e-5) lowered success on both sets:
AdamW's first steps move every weight by about the learning rate (BENCHMARKS.md, "GeneralPoints").

One run, three models, two test sets:
  base  SmolLM2-135M-Instruct as shipped
  SFT   `align sft` (TRL SFTTrainer) on worked solutions of in-distribution tasks
  RFT   GRPO with the GeneralPoints grader, starting from the SFT model (the usual SFT-then-RL recipe)
  ID    unseen deals under the training rule (J, Q, K count as 10)
  OOD   unseen deals under the other rule (J = 11, Q = 12, K = 13), stated in the prompt
Every test deal holds a face card, so the rule matters for each one. Success is the share of
test tasks whose greedy answer scores 1 (valid expression, exactly the cards, the target); the
mean partial-credit score is given beside it. Difficulty is scaled for a 135M model on a CPU:
two cards, targets drawn from what the cards can reach (at most --max-target).

The paper found RL improves out-of-distribution success while SFT degrades it. This prints what
we measure, whichever way it goes. SFT is `align sft`, RFT is `align grpo` (both
called in-process); the output directory must not hold an earlier run (pass another --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tasks(args) -> dict[str, list[dict]]:
    from align.graders.generalpoints import generate_tasks

    common = dict(n_cards=args.n_cards, target=None, max_target=args.max_target)
    train = generate_tasks(args.n_train, rule="face10", seed=args.seed, **common)
    seen = {r["prompt"] for r in train}
    test_id = [r for r in generate_tasks(6 * args.n_test, rule="face10", seed=args.seed + 1, require_face=True,
                                         **common) if r["prompt"] not in seen][:args.n_test]
    test_ood = generate_tasks(args.n_test, rule="ordinal", seed=args.seed + 1, require_face=True, **common)
    return {"train": train, "ID": test_id, "OOD": test_ood}


def evaluate(model, tokenizer, rows: list[dict], max_new_tokens: int, batch_size: int = 32) -> tuple[float, float]:
    """(success rate, mean score) of greedy answers."""
    import torch

    from align.graders import grade
    from prefloop.generation import tokenize_prompts

    scores = []
    model.eval()
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        ids, mask = tokenize_prompts(tokenizer, [[{"role": "user", "content": r["prompt"]}] for r in batch],
                                     device=model.device)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
        scores += [float(grade("generalpoints", r["prompt"], t, r["reference"])) for r, t in zip(batch, texts)]
    return sum(s == 1.0 for s in scores) / len(scores), sum(scores) / len(scores)


def run_sft(args, train: list[dict], out: Path) -> Path:
    from align.offline.sft_config import SFTConfig
    from align.offline.sft_trainer import train_sft
    from prefloop.data import write_records

    rows = [{"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["solution"]}]}
            for r in train]
    data = write_records(rows, out / "sft.jsonl")
    cfg = SFTConfig(model=args.model, data=str(data), output_dir=str(out / "sft"), max_steps=args.sft_steps,
                    learning_rate=args.sft_lr, per_device_train_batch_size=8, save_steps=10_000, logging_steps=10,
                    seed=args.seed)
    return train_sft(cfg)


def run_rft(args, model_dir: Path, train: list[dict], out: Path) -> Path:
    """`align grpo` from the SFT model, beta = 0 (TRL's default), the GeneralPoints grader."""
    from align.onpolicy.grpo_config import GRPOConfig
    from align.onpolicy.grpo_trainer import train_group_relative
    from prefloop.data import write_records

    data = write_records(train, out / "rft.jsonl")  # rows carry their grader: generalpoints
    cfg = GRPOConfig(model=str(model_dir), prompts=str(data), output_dir=str(out / "rft"), max_steps=args.rft_steps,
                     batch_size=args.prompts_per_step, num_generations=args.num_generations,
                     max_new_tokens=args.max_new_tokens, temperature=1.0, learning_rate=args.rft_lr,
                     # one optimizer step per rollout: the update's own forward gives log pi_old (no extra pass)
                     mini_batch_size=args.prompts_per_step * args.num_generations, beta=0.0, seed=args.seed,
                     sample_every=max(args.rft_steps // 3, 1), save_steps=10_000)
    return train_group_relative(cfg)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--out", default=str(ROOT / "runs" / "generalpoints"))
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--n-test", type=int, default=96)
    parser.add_argument("--n-cards", type=int, default=2)
    parser.add_argument("--max-target", type=int, default=20)
    parser.add_argument("--sft-steps", type=int, default=24)
    parser.add_argument("--sft-lr", type=float, default=1.5e-4)
    parser.add_argument("--sft-model", metavar="DIR",
                        help="skip SFT and start RFT from this `align sft` model (an earlier run's OUT/sft/final "
                             "with the same --seed, --n-train, --n-cards and --max-target: the same tasks)")
    parser.add_argument("--rft-steps", type=int, default=30)
    parser.add_argument("--rft-lr", type=float, default=2e-6)
    parser.add_argument("--prompts-per-step", type=int, default=2)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=24, help="a worked solution is ~16 tokens")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on a shared, busy 2-core machine two threads spin against "
                             "other jobs and sample ~4x slower)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from prefloop.hardware import detect
    from prefloop.models import load_causal_lm, resolve_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = tasks(args)
    start, load = time.time(), os.getloadavg()[0]
    models = {"base": Path(resolve_model(args.model))}
    models["SFT"] = Path(args.sft_model) if args.sft_model else run_sft(args, sets["train"], out)
    phases = {"SFT": time.time() - start}
    models["RFT (GRPO from SFT)"] = run_rft(args, models["SFT"], sets["train"], out)
    phases["RFT"] = time.time() - start - phases["SFT"]
    results = {}
    for name, path in models.items():
        model, tokenizer = load_causal_lm(str(path))
        results[name] = {split: evaluate(model, tokenizer, sets[split], args.max_new_tokens) for split in ("ID", "OOD")}
    minutes = (time.time() - start) / 60
    phases["evaluation"] = time.time() - start - phases["SFT"] - phases["RFT"]
    lines = ["| model | ID success | OOD success | ID mean score | OOD mean score |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {r['ID'][0]:.1%} | {r['OOD'][0]:.1%} | {r['ID'][1]:.3f} | {r['OOD'][1]:.3f} |"
              for name, r in results.items()]
    table = "\n".join(lines) + (
        f"\n\n{len(sets['ID'])} ID / {len(sets['OOD'])} OOD test tasks ({args.n_cards} cards, targets <= "
        f"{args.max_target}, every deal with a face card), {len(sets['train'])} training tasks; SFT {args.sft_steps} "
        f"steps (lr {args.sft_lr:g}{', trained earlier: ' + args.sft_model if args.sft_model else ''}), GRPO {args.rft_steps} steps x {args.prompts_per_step} prompts x "
        f"{args.num_generations} answers (lr {args.rft_lr:g}, beta 0, one optimizer step per rollout, at most "
        f"{args.max_new_tokens} new tokens); {minutes:.0f} min ("
        + ", ".join(f"{k} {v / 60:.0f}" for k, v in phases.items())
        + f") on {platform.processor() or platform.machine()}, {detect().describe()}, torch threads "
        f"{args.threads or 'default'}, load average {load:.1f} at start and {os.getloadavg()[0]:.1f} at the end.")
    print(table)
    (out / "table.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
