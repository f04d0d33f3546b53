"""`reward-model eval`: held-out accuracy, calibration, reward distribution, accuracy vs training pairs.

Every comparison becomes pairs (a ranking of K gives its C(K,2) pairs) with Δ = r(better) − r(worse).
Accuracy counts strict pairs with Δ > 0 (Δ = 0 counts ½). Calibration compares the Bradley-Terry
probability σ(Δ_raw), on the model's own (unnormalised) scale, with the observed preference rate:
each pair enters in both orientations, (σ(Δ), 1) and (σ(−Δ), 0), and a tie as (σ(Δ), ½) and
(σ(−Δ), ½), so the reliability diagram is symmetric about ½ (Guo et al. 2017 for ECE).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from prefloop.config import parse_config
from prefloop.errors import InputError
from reward_model.eval_config import RewardEvalConfig


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def level_of(group: dict) -> str:
    """The annotator-agreement level of a comparison: its agreement rate, else its annotator count."""
    if group.get("agreement") is not None:
        return f"agreement {float(group['agreement']):.2f}"
    if group.get("annotators") is not None:
        return f"{int(group['annotators'])} annotator(s)"
    return "unknown"


def comparison_pairs(groups: list[dict], raw, normalised) -> list[dict]:
    """One record per pair (i better than j) with Δ on both scales; raw/normalised are per response, flat."""
    pairs, start = [], 0
    for g in groups:
        k = len(g["responses"])
        for i in range(k):
            for j in range(i + 1, k):
                true = g["row"].get("true_margin") if k == 2 else None
                pairs.append({"delta_raw": raw[start + i] - raw[start + j],
                              "delta": normalised[start + i] - normalised[start + j],
                              "tie": g["tie"], "level": level_of(g), "true_margin": true})
        start += k
    return pairs


def accuracy(pairs: list[dict]) -> float | None:
    strict = [p for p in pairs if not p["tie"]]
    if not strict:
        return None
    return sum((p["delta"] > 0) + 0.5 * (p["delta"] == 0) for p in strict) / len(strict)


def expected_calibration_error(probs: list[float], labels: list[float], bins: int = 10) -> tuple[float, list[dict]]:
    """ECE = Σ_b (n_b / N) |mean(y)_b − mean(p)_b| over equal-width bins of p, and the bin table."""
    table = [{"lo": b / bins, "hi": (b + 1) / bins, "n": 0, "p": 0.0, "y": 0.0} for b in range(bins)]
    for p, y in zip(probs, labels):
        row = table[min(int(p * bins), bins - 1)]
        row["n"] += 1
        row["p"] += p
        row["y"] += y
    for row in table:
        if row["n"]:
            row["p"] /= row["n"]
            row["y"] /= row["n"]
    total = sum(row["n"] for row in table)
    ece = sum(row["n"] / total * abs(row["y"] - row["p"]) for row in table) if total else 0.0
    return ece, table


def calibration_points(pairs: list[dict]) -> tuple[list[float], list[float]]:
    """(σ(Δ), observed) for each pair in both orientations; a tie is observed as ½."""
    probs, labels = [], []
    for p in pairs:
        y = 0.5 if p["tie"] else 1.0
        probs += [_sigmoid(p["delta_raw"]), _sigmoid(-p["delta_raw"])]
        labels += [y, 1.0 - y]
    return probs, labels


def summarise(pairs: list[dict], bins: int) -> dict:
    ties = [p for p in pairs if p["tie"]]
    by_level = defaultdict(list)
    for p in pairs:
        by_level[p["level"]].append(p)
    ece, table = expected_calibration_error(*calibration_points(pairs), bins=bins)
    result = {
        "pairs": len(pairs), "strict_pairs": len(pairs) - len(ties), "tie_pairs": len(ties),
        "accuracy": accuracy(pairs),
        "accuracy_by_level": {k: {"accuracy": accuracy(v), "pairs": len(v)} for k, v in sorted(by_level.items())},
        # A tie is "right" when the model sees little difference: mean |σ(Δ) − ½| (0 = perfectly undecided).
        "by_tie": {"strict": {"accuracy": accuracy(pairs), "pairs": len(pairs) - len(ties)},
                   "tie": {"pairs": len(ties), "mean_abs_p_minus_half":
                           (sum(abs(_sigmoid(p["delta_raw"]) - 0.5) for p in ties) / len(ties)) if ties else None}},
        "ece": ece, "reliability": table,
    }
    known = [p for p in pairs if p["true_margin"] is not None and not p["tie"]]
    if known:  # synthetic data with a known reward: the Bayes-optimal ceiling E[σ(|Δ*|)]
        decided = [p for p in known if p["true_margin"] != 0]
        result["bayes_ceiling"] = sum(_sigmoid(abs(p["true_margin"])) for p in known) / len(known)
        result["true_order_accuracy"] = (sum((p["delta"] > 0) == (p["true_margin"] > 0) for p in decided)
                                         / len(decided)) if decided else None
    return result


def learning_curve(run_dir: Path | None) -> list[dict]:
    """Held-out accuracy against comparisons seen, from the training run's metrics.jsonl."""
    from prefloop.metrics import read_metrics

    path = run_dir / "metrics.jsonl" if run_dir is not None else None
    if path is None or not path.exists():
        return []
    points = {}
    for row in read_metrics(path):
        if row.get("eval_accuracy") is not None and row.get("comparisons_seen") is not None:
            points[row["comparisons_seen"]] = row["eval_accuracy"]  # a resumed run overwrites its repeats
    return [{"comparisons_seen": k, "eval_accuracy": v} for k, v in sorted(points.items())]


def plot_reliability(table: list[dict], ece: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    filled = [r for r in table if r["n"]]
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.bar([(r["lo"] + r["hi"]) / 2 for r in filled], [r["y"] for r in filled], width=1 / len(table),
           edgecolor="black", alpha=0.6, label="observed preference rate")
    ax.plot([r["p"] for r in filled], [r["y"] for r in filled], "o-", color="C3", label="bin mean σ(Δ)")
    ax.set(xlabel="predicted P(preferred) = σ(Δ)", ylabel="observed", xlim=(0, 1), ylim=(0, 1),
           title=f"Reliability (ECE = {ece:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_distribution(better: list[float], worse: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(better, bins=30, alpha=0.6, label="preferred")
    ax.hist(worse, bins=30, alpha=0.6, label="other")
    ax.set(xlabel="normalised reward", ylabel="responses", title="Reward distribution")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_learning_curve(curve: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([c["comparisons_seen"] for c in curve], [c["eval_accuracy"] for c in curve], "o-")
    ax.set(xlabel="training comparisons seen", ylabel="held-out accuracy", title="Accuracy vs training pairs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(cfg: RewardEvalConfig) -> dict:
    from reward_model.data import load_groups
    from reward_model.scorer import RewardScorer

    from prefloop.run import run_dir_of

    model_dir = Path(cfg.model)
    run_dir = run_dir_of(model_dir)  # a `reward-model train` run (prefloop.run layout), or None
    data = Path(cfg.data) if cfg.data else (run_dir or model_dir) / "data" / "eval.jsonl"
    if not cfg.data and not data.exists():
        raise InputError(f"{model_dir}: no held-out split in data/eval.jsonl; pass --data FILE")
    groups = load_groups(data)
    if not groups:
        raise InputError(f"{data}: no comparisons to evaluate (empty dataset)")
    scorer = RewardScorer.from_pretrained(model_dir, batch_size=cfg.batch_size)
    # 1. score every response once
    prompts = [g["prompt"] for g in groups for _ in g["responses"]]
    responses = [r for g in groups for r in g["responses"]]
    raw = scorer.raw_scores(prompts, responses)  # (N, H)
    normalised = ((raw - scorer.offset) / scorer.scale).mean(dim=1).tolist()  # (N,)
    # 2. pairs, accuracy, calibration
    pairs = comparison_pairs(groups, raw.mean(dim=1).tolist(), normalised)
    result = {"model": str(model_dir), "data": str(data), **summarise(pairs, cfg.bins)}
    result["learning_curve"] = learning_curve(run_dir)
    # 3. plots and metrics.json
    out = Path(cfg.output_dir) if cfg.output_dir else (run_dir or model_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    plot_reliability(result["reliability"], result["ece"], out / "reliability.png")
    better, worse, start = [], [], 0
    for g in groups:
        if not g["tie"]:
            better.append(normalised[start])
            worse += normalised[start + 1:start + len(g["responses"])]
        start += len(g["responses"])
    plot_distribution(better, worse, out / "reward_distribution.png")
    if result["learning_curve"]:
        plot_learning_curve(result["learning_curve"], out / "learning_curve.png")
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    result["output_dir"] = str(out)
    return result


def format_report(result: dict) -> str:
    def pct(x):
        return "n/a" if x is None else f"{x:.3f}"

    lines = [f"held-out pairs: {result['pairs']} ({result['tie_pairs']} ties)",
             f"accuracy: {pct(result['accuracy'])}   ECE of σ(Δ): {result['ece']:.3f}"]
    if "bayes_ceiling" in result:
        lines.append(f"Bayes-optimal ceiling: {result['bayes_ceiling']:.3f}   "
                     f"agreement with the true order: {pct(result['true_order_accuracy'])}")
    for level, row in result["accuracy_by_level"].items():
        lines.append(f"  {level:<20} accuracy {pct(row['accuracy'])}  ({row['pairs']} pairs)")
    tie = result["by_tie"]["tie"]
    if tie["pairs"]:
        lines.append(f"  ties: mean |σ(Δ) − ½| = {tie['mean_abs_p_minus_half']:.3f} over {tie['pairs']} pairs")
    for point in result["learning_curve"]:
        lines.append(f"  after {point['comparisons_seen']:>6} training comparisons: accuracy {point['eval_accuracy']:.3f}")
    lines.append(f"plots and metrics.json in {result['output_dir']}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    from prefloop.outputs import check_output_dir

    cfg = parse_config(RewardEvalConfig, argv, prog="reward-model eval")
    if cfg.output_dir:
        check_output_dir(cfg.output_dir, "--output-dir", ours=True)  # a file there: one line, before scoring
    print(format_report(evaluate(cfg)))
    return 0
