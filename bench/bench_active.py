"""Active-learning benchmark: reward-model held-out accuracy against the number of labels, when the
labels are asked for in uncertainty-first order (what `reward-model prioritize` serves) or in random order.

    python bench/bench_active.py                 # 3 seeds, writes the "Active learning" section of BENCHMARKS.md
    python bench/bench_active.py --quick         # one seed, two budgets, nothing written

The setup, small enough for a 2-core CPU:
  pool       unlabeled comparisons: prompts "Tell me about <topic> (i)." with two responses of 8 words drawn
             from reward_model.synthetic's word lists (positive, negative, neutral); a held-out set of
             comparisons on other prompts
  gold       r* = `positive_words` (prefloop.gold): #positive − #negative words
  annotator  labeling.simulate's gold annotator choice, Bradley-Terry with temperature T: P(A ≻ B) =
             σ((r*_A − r*_B) / T). Each pool pair's label is drawn once per seed, so both orders hear the
             same answer when they ask about the same pair
  model      `reward-model train` on a tiny random 2-layer Llama (prefloop.testing; an ensemble of
             `--heads` heads), retrained from the backbone at every budget on all labels so far
  orders     random: the next labels are a uniform draw from the unlabeled pool;
             uncertainty-first: the unlabeled pairs with the highest `reward_model.active.task_priorities`
             under the model trained on the labels so far (1 − |2p̄ − 1| + 2·std_h p_h: margin plus
             ensemble disagreement), the order `reward-model prioritize` writes and the app serves.
             Both start from the same random first batch.
  metric     held-out accuracy against the gold order (pairs whose r* differ; r* ties are left out)

Each seed draws its own pool, held-out set, labels and backbone. The table gives mean ± sd over seeds,
and the paired difference (uncertainty − random) per seed, mean ± sd.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section

SECTION = "## Active learning"
ORDERS = ("random", "uncertainty")


# ----------------------------------------------------------------------------- data

def make_pool(n_pairs: int, seed: int, first_prompt: int) -> list[dict]:
    """Comparisons {prompt, a, b, delta = r*(a) − r*(b)} on prompts first_prompt, first_prompt + 1, ..."""
    from prefloop.gold import positive_words
    from reward_model.synthetic import TOPICS, synthetic_response

    rng = random.Random(seed)
    pool = []
    for i in range(n_pairs):
        k = first_prompt + i
        a, b = synthetic_response(rng, 8), synthetic_response(rng, 8)
        pool.append({"prompt": [{"role": "user", "content": f"Tell me about {TOPICS[k % len(TOPICS)]} ({k})."}],
                     "a": a, "b": b, "delta": positive_words(a) - positive_words(b)})
    return pool


def draw_labels(pool: list[dict], temperature: float, seed: int) -> list[bool]:
    """True where the simulated annotator prefers a (labeling.simulate.pairwise_choice, Bradley-Terry)."""
    from labeling.simulate import Behaviour, pairwise_choice

    rng, behaviour = random.Random(seed), Behaviour(temperature=temperature)
    return [pairwise_choice([p["delta"], 0.0], behaviour, rng).startswith("a_") for p in pool]


def write_labels(pool: list[dict], labels: list[bool], picked: list[int], path: Path) -> Path:
    from prefloop.data import write_records

    def msg(text):
        return [{"role": "assistant", "content": text}]

    rows = [{"prompt": pool[i]["prompt"], "chosen": msg(pool[i]["a"] if labels[i] else pool[i]["b"]),
             "rejected": msg(pool[i]["b"] if labels[i] else pool[i]["a"])} for i in picked]
    return write_records(rows, path)


# ----------------------------------------------------------------------------- model

def train_reward(backbone: str, data: Path, out: Path, args, seed: int) -> str:
    from reward_model.reward_config import RewardModelConfig
    from reward_model.reward_trainer import train

    cfg = RewardModelConfig(data=str(data), model=backbone, output_dir=str(out), n_heads=args.heads,
                            per_device_train_batch_size=8, max_steps=args.steps, learning_rate=args.lr,
                            normalize_samples=32, logging_steps=10**6, eval_steps=10**6, save_steps=10**6,
                            seed=seed)
    return str(train(cfg))


def held_out_accuracy(scorer, held_out: list[dict]) -> float:
    """Share of held-out pairs with a gold difference that the model orders as r* does."""
    decisive = [p for p in held_out if p["delta"] != 0]
    scores = scorer.score([p["prompt"] for p in decisive for _ in "ab"], [p[s] for p in decisive for s in "ab"])
    return sum((scores[2 * i] > scores[2 * i + 1]) == (p["delta"] > 0) for i, p in enumerate(decisive)) / len(decisive)


def next_batch(order: str, scorer, pool: list[dict], labeled: list[int], size: int, rng: random.Random) -> list[int]:
    from reward_model.active import task_priorities

    unlabeled = sorted(set(range(len(pool))) - set(labeled))
    if order == "random":
        return rng.sample(unlabeled, size)
    priorities = task_priorities(scorer, [{"task_id": i, "prompt": pool[i]["prompt"],
                                           "responses": [pool[i]["a"], pool[i]["b"]]} for i in unlabeled])
    return sorted(unlabeled, key=lambda i: -priorities[i])[:size]  # what the app serves first


# ----------------------------------------------------------------------------- one seed

def run_seed(seed: int, args, work: Path) -> dict:
    """{order: accuracy at each budget, "tie_share": {order: share of its labels on pairs whose r* tie},
    "pool_tie_share": that share in the whole pool}."""
    from prefloop.testing import build_tiny_causal_lm
    from reward_model.scorer import RewardScorer

    backbone = str(build_tiny_causal_lm(work / f"backbone-{seed}", seed=seed))
    pool = make_pool(args.pool, seed, first_prompt=0)
    held_out = make_pool(args.held_out, seed + 1000, first_prompt=args.pool)  # prompts the pool never has
    labels = draw_labels(pool, args.temperature, seed)
    first = random.Random(seed).sample(range(len(pool)), args.budgets[0])
    curves, ties = {}, {}
    for order in ORDERS:
        rng, labeled, accuracy = random.Random(seed + 1), list(first), []
        for k, budget in enumerate(args.budgets):
            name = f"{seed}-{order}-{budget}"
            if k == 0 and curves:  # the first batch is the same for both orders: train it once
                accuracy.append(curves[ORDERS[0]][0])
                scorer = RewardScorer.from_pretrained(work / f"rm-{seed}-{ORDERS[0]}-{budget}" / "final")
            else:
                model = train_reward(backbone, write_labels(pool, labels, labeled, work / f"{name}.jsonl"),
                                     work / f"rm-{name}", args, seed)
                scorer = RewardScorer.from_pretrained(model)
                accuracy.append(held_out_accuracy(scorer, held_out))
            print(f"[bench] seed {seed} {order:<11} {budget:>4} labels: held-out accuracy {accuracy[-1]:.3f}",
                  flush=True)
            if k + 1 < len(args.budgets):
                labeled += next_batch(order, scorer, pool, labeled, args.budgets[k + 1] - budget, rng)
        curves[order] = accuracy
        ties[order] = sum(pool[i]["delta"] == 0 for i in labeled) / len(labeled)
    return {**curves, "tie_share": ties, "pool_tie_share": sum(p["delta"] == 0 for p in pool) / len(pool)}


# ----------------------------------------------------------------------------- table

def _ms(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def verdict(results: dict[int, dict], budgets: list[int]) -> str:
    """Budgets where the paired difference is more than two standard errors from zero, in one sentence."""
    seeds = sorted(results)
    if len(seeds) < 2:
        return "One seed: no verdict."
    apart = []
    for k, budget in enumerate(budgets[1:], 1):  # the first batch is the same random draw for both orders
        diffs = [results[s]["uncertainty"][k] - results[s]["random"][k] for s in seeds]
        mean, se = statistics.mean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5
        if abs(mean) > 2 * se:
            apart.append(f"{budget} labels ({'uncertainty-first' if mean > 0 else 'random'} ahead by {abs(mean):.3f})")
    return ("Reading: " + ("the orders differ by more than two standard errors of the paired difference at "
                           + ", ".join(apart) if apart else
                           "at no budget do the orders differ by more than two standard errors of the paired "
                           "difference: on this setup uncertainty-first order does not measurably beat random order")
            + ".")


def table(results: dict[int, dict], args, info: str, seconds: float) -> str:
    seeds = sorted(results)
    lines = [SECTION, "",
             f"`python bench/bench_active.py` — held-out accuracy of the reward model against the number of labels, "
             f"labels asked for in random order or uncertainty-first (`reward_model.active.task_priorities`, the "
             f"order `reward-model prioritize` writes and the app serves). Pool: {args.pool} unlabeled comparisons "
             f"of two 8-word responses (reward_model.synthetic's word lists) on {args.pool} prompts; gold r* = "
             f"`positive_words`; simulated annotator: Bradley-Terry with T = {args.temperature} "
             f"(labeling.simulate); reward model: tiny random 2-layer Llama backbone (hidden 64), {args.heads} "
             f"ensemble heads, retrained from the backbone at every budget ({args.steps} steps of 8 pairs, "
             f"lr {args.lr}, one torch thread); held-out: {args.held_out} comparisons on unseen prompts, "
             f"accuracy against the gold order on the pairs whose r* differ. Mean ± sd over {len(seeds)} seeds "
             f"(each its own pool, labels and backbone); the difference is paired by seed. {seconds / 60:.0f} min in all.",
             f"Machine: {info}.", "",
             "| labels | random order | uncertainty-first | uncertainty − random |",
             "| ---: | ---: | ---: | ---: |"]
    for k, budget in enumerate(args.budgets):
        rand = [results[s]["random"][k] for s in seeds]
        unc = [results[s]["uncertainty"][k] for s in seeds]
        lines.append(f"| {budget} | {_ms(rand)} | {_ms(unc)} | {_ms([u - r for u, r in zip(unc, rand)])} |")
    lines += ["", verdict(results, args.budgets)]
    share = {order: _ms([results[s]["tie_share"][order] for s in seeds]) for order in ORDERS}
    lines += ["", f"Share of the {args.budgets[-1]} labels spent on pairs whose gold rewards tie (r*_A = r*_B: the "
              f"annotator flips a coin, the label teaches nothing): random order {share['random']}, "
              f"uncertainty-first {share['uncertainty']}; in the pool "
              f"{_ms([results[s]['pool_tie_share'] for s in seeds])}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="independent repetitions (pool, labels, backbone)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[24, 48, 96, 192], help="label counts measured")
    parser.add_argument("--pool", type=int, default=480, help="unlabeled comparisons to choose from")
    parser.add_argument("--held-out", type=int, default=300, help="held-out comparisons on unseen prompts")
    parser.add_argument("--temperature", type=float, default=1.0, help="T of the annotator's Bradley-Terry noise")
    parser.add_argument("--heads", type=int, default=4, help="reward-model ensemble heads (the disagreement term)")
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps per training")
    parser.add_argument("--lr", type=float, default=3e-3, help="learning rate of the reward model")
    parser.add_argument("--quick", action="store_true", help="one seed, two budgets, nothing written")
    parser.add_argument("--json", help="also write the per-seed curves here")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.budgets, args.steps = 1, args.budgets[:2], 20
    if args.budgets != sorted(set(args.budgets)) or args.budgets[-1] > args.pool:
        parser.error("--budgets must increase and stay within --pool")

    from prefloop.testing import tiny_cpu_settings

    info, start = machine(), time.perf_counter()
    with tiny_cpu_settings(), tempfile.TemporaryDirectory() as tmp:  # fp32, one thread: a tiny model
        results = {seed: run_seed(seed, args, Path(tmp)) for seed in range(args.seeds)}
    text = table(results, args, info, time.perf_counter() - start)
    print("\n" + text)
    if args.json:
        Path(args.json).write_text(json.dumps({str(s): r for s, r in results.items()}, indent=2))
    if not args.quick:
        from common import BENCHMARKS

        write_section(SECTION, text)
        print(f"[bench] wrote the '{SECTION}' section of {BENCHMARKS.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
