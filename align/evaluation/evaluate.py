"""`align eval`: did alignment make the policy better, and at what KL cost?

    align eval --policies runs/dpo runs/ppo/final --reference smollm2-135m-instruct \\
        --prompts data/heldout.jsonl --reward-model runs/rm --gold concise --best-of 1 2 4 8 16

For every policy π (a model, a checkpoint, or a run directory: each checkpoints/checkpoint-N that
holds a model, in order, then final/) and held-out prompt x, a response y ~ π(·|x) is compared with an independent
sample y_ref ~ π_ref(·|x):

  win rate     P(r(x, y) > r(x, y_ref)), ties half, by the reward model r_φ and by the gold
               reward r* when one exists, with a Wilson score interval (ties counted half
               make the interval slightly conservative)
  reward       mean r_φ(x, y) and mean r*(x, y)
  KL           KL(π || π_ref) from the samples, the k1 estimator of `ppo_core.KL_ESTIMATORS`:
               per sequence E[Σ_t log π(y_t|·) − log π_ref(y_t|·)], and per token (÷ mean length)
  length       mean response tokens

The baseline an RL run must beat at equal KL is best-of-N sampling from π_ref, picked by r_φ,
whose KL is analytic: KL(best-of-N || π_ref) = log N − (N − 1)/N (Stiennon et al. 2020, app. G;
Gao et al. 2022 eq. 1). The plot puts mean reward against √KL as Gao et al. 2022
("Scaling Laws for Reward Model Overoptimization") do: the proxy r_φ keeps rising with KL while
the gold r* turns over once the policy over-optimises the proxy.

Output: a table on stdout, `eval.json`, `samples.jsonl` and `reward_vs_kl.png` in the output directory.
`samples.jsonl` holds everything `eval.json`'s numbers are computed from, one sample a line:

  {"kind": "reference", "sample": i, "prompt", "response", "tokens", "reward", "gold"}        y_ref ~ π_ref
  {"kind": "policy", "policy", "step", "sample": i, "prompt", "response", "tokens", "reward", "gold",
   "logprob": Σ_t log π(y_t|·), "reference_logprob": Σ_t log π_ref(y_t|·), "reference_response"}  y ~ π
  {"kind": "best_of_n", "sample": i, "draw": k, "prompt", "response", "tokens", "reward", "gold"}  k < max N

(`reward` / `gold` are null without that judge.) Sample i's policy answer is compared with reference
sample i; the k1 KL of a sequence is logprob − reference_logprob; best-of-N picks, for each sample i,
the first of draws 0..N−1 with the highest reward.
The numbers also go to `metrics.jsonl` and the `--report-to` trackers (align/evaluation/eval_metrics.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist

from align.evaluation.eval_config import EvalConfig
from prefloop.errors import InputError

# --- statistics ------------------------------------------------------------------------

def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson (1927) score interval for a binomial proportion; `successes` may hold half ties."""
    if n == 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def win_rate(scores: list[float], baseline: list[float], confidence: float = 0.95) -> dict:
    """Share of pairs where scores[i] beats baseline[i] (a tie counts half), with its interval."""
    wins = sum(s > b for s, b in zip(scores, baseline))
    ties = sum(s == b for s, b in zip(scores, baseline))
    n = len(scores)
    lo, hi = wilson_interval(wins + ties / 2, n, confidence)
    return {"rate": (wins + ties / 2) / n if n else None, "lo": lo, "hi": hi, "n": n, "wins": wins, "ties": ties}


def best_of_n_kl(n: int) -> float:
    """KL(best-of-N || π_ref) = log N − (N − 1)/N, in nats per sequence."""
    return math.log(n) - (n - 1) / n


def _mean(xs) -> float | None:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


# --- which models ----------------------------------------------------------------------------

def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").exists() or (path / "adapter_config.json").exists()


def expand_policies(specs: list[str]) -> list[tuple[str, str, int | None]]:
    """(label, path, step) per policy. A run directory (prefloop.run: OUT/checkpoints/checkpoint-N/, OUT/final/)
    becomes its checkpoints that hold a model (SFT and DPO's; PPO and online DPO's hold optimizer state) by
    step, then final/; a checkpoint, final/ or any model directory stands for itself."""
    from prefloop.run import CHECKPOINT_PATTERN, checkpoint_step, list_checkpoints, run_dir_of

    out = []
    for spec in specs:
        path = Path(spec)
        run = path if (path / "final").is_dir() or (path / "checkpoints").is_dir() else None
        if run is not None:
            steps = [p for p in list_checkpoints(run / "checkpoints") if _is_model_dir(p)]
            out += [(f"{run.name}@{checkpoint_step(p)}", str(p), checkpoint_step(p)) for p in steps]
            if _is_model_dir(run / "final"):
                out.append((run.name, str(run / "final"), None))
            if not steps and not _is_model_dir(run / "final"):
                raise InputError(f"{spec}: a run directory without a model yet (no final/ and no model checkpoint)")
            continue
        step = checkpoint_step(path) if CHECKPOINT_PATTERN.match(path.name) else None
        owner = run_dir_of(path.parent if step is not None else path)  # runs/x for runs/x/final or a checkpoint
        name = (owner.name if owner is not None else path.parent.name) if path.name == "final" else path.name
        out.append((f"{owner.name}@{step}" if owner is not None and step is not None else (name or spec), spec, step))
    return out


# --- sampling, scoring, KL ---------------------------------------------------------------------

def sample(model, tokenizer, prompts: list, cfg: EvalConfig, seed: int) -> list:
    """Rollouts (batches of `cfg.batch_size`) of one response per prompt, seeded."""
    import torch

    from align.onpolicy.rollout import generate_responses

    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    starts = range(0, len(prompts), cfg.batch_size)
    return [generate_responses(model, tokenizer, prompts[i:i + cfg.batch_size], cfg.max_new_tokens, cfg.temperature)
            for i in tqdm(starts, desc=f"sample {len(prompts)}", unit="batch", leave=False)]


def texts_of(rollouts: list) -> list[str]:
    return [t for r in rollouts for t in r.texts]


def sequence_logprobs(policy, reference, rollouts: list, temperature: float) -> tuple[list, list, list]:
    """(Σ_t log π(y_t|·), Σ_t log π_ref(y_t|·), response length) per sequence, for samples drawn from `policy`.

    The k1 KL of a sequence is their difference (`ppo_core.KL_ESTIMATORS["k1"]` is linear, so it sums)."""
    import torch

    from align.onpolicy.rollout import response_logprobs

    logprobs, ref_logprobs, lengths = [], [], []
    with torch.no_grad():
        for r in rollouts:
            logprobs += response_logprobs(policy, r, temperature).sum(1).tolist()  # (B,), padding is 0
            ref_logprobs += response_logprobs(reference, r, temperature).sum(1).tolist()
            lengths += r.response_lengths.tolist()
    return logprobs, ref_logprobs, lengths


def sample_records(kind: str, conversations: list, texts: list[str], lengths: list[int], scores: dict,
                   **columns) -> list[dict]:
    """One samples.jsonl record per sample; `columns` are more per-sample lists (or one value for all),
    `sample=` among them replaces the sample index."""
    n = len(texts)
    per_sample = {k: v if isinstance(v, list) else [v] * n for k, v in columns.items()}
    return [{"kind": kind, "sample": i, "prompt": conversations[i], "response": texts[i], "tokens": int(lengths[i]),
             **{judge: scores[judge][i] if judge in scores else None for judge in ("reward", "gold")},
             **{k: v[i] for k, v in per_sample.items()}} for i in range(n)]


class Judges:
    """The reward model r_φ and the gold reward r*, either of which may be absent."""

    def __init__(self, cfg: EvalConfig):
        from prefloop.gold import load_gold
        from reward_model.scorer import load_reward

        self.reward = load_reward(cfg.reward_model) if cfg.reward_model else None
        self.gold = load_gold(cfg.gold) if cfg.gold else None

    def score(self, conversations: list, texts: list[str]) -> dict[str, list[float]]:
        return {name: [float(s) for s in fn(conversations, texts)]
                for name, fn in (("reward", self.reward), ("gold", self.gold)) if fn is not None}


def compare(scores: dict, baseline: dict, confidence: float) -> dict:
    """Win rates against the baseline and mean scores, per judge."""
    out = {}
    for name, values in scores.items():
        out[f"win_rate_{name}"] = win_rate(values, baseline[name], confidence)
        out[f"mean_{name}"] = _mean(values)
    return out


# --- the evaluation --------------------------------------------------------------------------

def evaluate_policy(label: str, step: int | None, path: str, reference, ref_tokenizer, prompts: list,
                    conversations: list, baseline: dict, base_texts: list[str], judges: Judges,
                    cfg: EvalConfig) -> tuple[dict, list[dict]]:
    """One policy against the reference samples: (its eval.json row, its samples.jsonl records)."""
    from align.onpolicy.ppo_core import KL_ESTIMATORS
    from prefloop.models import load_causal_lm

    policy, tokenizer = load_causal_lm(path)
    policy.eval()
    if len(tokenizer) != len(ref_tokenizer):
        raise InputError(f"{path}: its vocabulary ({len(tokenizer)}) differs from the reference's "
                         f"({len(ref_tokenizer)}); KL needs the same tokenizer")
    rollouts = sample(policy, tokenizer, prompts, cfg, cfg.seed + 1)
    logprobs, ref_logprobs, lengths = sequence_logprobs(policy, reference, rollouts, cfg.temperature)
    del policy
    kl = [KL_ESTIMATORS["k1"](lp, ref) for lp, ref in zip(logprobs, ref_logprobs)]  # per sequence
    texts = texts_of(rollouts)
    scores = judges.score(conversations, texts)
    row = compare(scores, baseline, cfg.confidence)
    row.update(kl_per_sequence=_mean(kl), kl_per_token=sum(kl) / max(1, sum(lengths)), length=_mean(lengths),
               example=texts[0] if texts else None)
    records = sample_records("policy", conversations, texts, lengths, scores, policy=label, step=step,
                             logprob=logprobs, reference_logprob=ref_logprobs, reference_response=base_texts)
    return row, records


def best_of_n(reference, tokenizer, prompts: list, conversations: list, baseline: dict, judges: Judges,
              cfg: EvalConfig) -> tuple[list[dict], list[dict]]:
    """Best-of-N from π_ref, picked by r_φ, for every N in cfg.best_of (one draw of max N serves all).
    -> (eval.json rows, samples.jsonl records of every draw)."""
    if not cfg.best_of or judges.reward is None:
        return [], []
    n_max = max(cfg.best_of)
    rollouts = sample(reference, tokenizer, [p for p in prompts for _ in range(n_max)], cfg, cfg.seed + 2)
    texts = texts_of(rollouts)
    lengths = [n for r in rollouts for n in r.response_lengths.tolist()]
    scores = judges.score([c for c in conversations for _ in range(n_max)], texts)
    rows = []
    for n in sorted(set(cfg.best_of)):
        picked = [i * n_max + max(range(n), key=lambda k: scores["reward"][i * n_max + k])
                  for i in range(len(prompts))]
        row = compare({name: [values[j] for j in picked] for name, values in scores.items()}, baseline,
                      cfg.confidence)
        length = _mean(lengths[j] for j in picked)
        rows.append({"n": n, "kl_per_sequence": best_of_n_kl(n), "kl_per_token": best_of_n_kl(n) / max(length, 1),
                     **row, "length": length})
    draws = list(range(n_max)) * len(prompts)
    records = sample_records("best_of_n", [c for c in conversations for _ in range(n_max)], texts, lengths, scores,
                             sample=[i for i in range(len(prompts)) for _ in range(n_max)], draw=draws)
    return rows, records


def evaluate(cfg: EvalConfig, progress: bool = True) -> tuple[dict, list[dict]]:
    """Every policy and the best-of-N baseline against the same reference samples;
    -> (the report, the samples.jsonl records it is computed from)."""
    from tqdm.auto import tqdm

    from align.prompts import as_conversation, load_prompts
    from prefloop.models import check_model, load_causal_lm

    held_out, source = load_prompts(cfg.prompts, store=cfg.store, project=cfg.project, limit=cfg.max_prompts)
    prompts = [p for p in held_out for _ in range(cfg.num_generations)]
    conversations = [as_conversation(p) for p in prompts]
    judges = Judges(cfg)
    policies = expand_policies(cfg.policies)
    for path in [cfg.reference, *(path for _, path, _ in policies)]:
        check_model(path)  # a mistyped policy is refused now, not after the reference was sampled
    reference, tokenizer = load_causal_lm(cfg.reference)
    reference.eval()
    base = sample(reference, tokenizer, prompts, cfg, cfg.seed)
    base_texts = texts_of(base)
    baseline = judges.score(conversations, base_texts)
    lengths = [n for r in base for n in r.response_lengths.tolist()]
    records = sample_records("reference", conversations, base_texts, lengths, baseline)
    report = {"reference": cfg.reference or "embedded", "prompts": source, "samples": len(prompts),
              "temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens, "confidence": cfg.confidence,
              "reference_stats": {**{f"mean_{k}": _mean(v) for k, v in baseline.items()}, "length": _mean(lengths)},
              "policies": []}
    for label, path, step in tqdm(policies, desc="align eval", disable=not progress):
        row, policy_records = evaluate_policy(label, step, path, reference, tokenizer, prompts, conversations,
                                              baseline, base_texts, judges, cfg)
        report["policies"].append({"policy": label, "path": path, "step": step, **row})
        records += policy_records
    report["best_of_n"], draws = best_of_n(reference, tokenizer, prompts, conversations, baseline, judges, cfg)
    return report, records + draws


def evaluate_to_dir(cfg: EvalConfig, progress: bool = True) -> dict:
    """`evaluate`, then eval.json, samples.jsonl and reward_vs_kl.png in cfg.output_dir; -> the report."""
    from prefloop.hardware import detect

    report, records = evaluate(cfg, progress)
    report["precision"] = f"{detect().precision} weights"  # generation and evaluation load models in it
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report, indent=2, default=str))
    with (out / "samples.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    plot_reward_vs_kl(report, out / "reward_vs_kl.png")
    return report


# --- output ---------------------------------------------------------------------------------

def _pct(w: dict | None) -> str:
    return "n/a" if not w else f"{100 * w['rate']:.1f} [{100 * w['lo']:.1f}, {100 * w['hi']:.1f}]"


def _num(x, spec=".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def format_report(report: dict) -> str:
    head = (f"{'policy':<28} {'win % (reward model)':>22} {'win % (gold)':>22} {'reward':>7} {'gold':>7} "
            f"{'KL/seq':>7} {'KL/tok':>7} {'length':>6}")
    lines = [f"against {report['reference']} on {report['samples']} samples (T = {report['temperature']}), "
             f"{100 * report['confidence']:.0f} % Wilson intervals", head]
    rows = [(r["policy"], r) for r in report["policies"]] + [(f"best-of-{r['n']} (π_ref)", r)
                                                             for r in report["best_of_n"]]
    for name, r in rows:
        lines.append(f"{name[:28]:<28} {_pct(r.get('win_rate_reward')):>22} {_pct(r.get('win_rate_gold')):>22} "
                     f"{_num(r.get('mean_reward')):>7} {_num(r.get('mean_gold')):>7} "
                     f"{_num(r['kl_per_sequence']):>7} {_num(r.get('kl_per_token')):>7} {_num(r['length'], '.1f'):>6}")
    return "\n".join(lines)


def plot_reward_vs_kl(report: dict, path: Path) -> Path:
    """Mean reward against √KL: policies (in order, so checkpoints trace a path) and the best-of-N curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for judge, colour in (("gold", "tab:green"), ("reward", "tab:blue")):
        key = f"mean_{judge}"
        name = "gold r*" if judge == "gold" else "reward model r_φ"
        for rows, style, label in ((report["policies"], "o-", "policies"), (report["best_of_n"], "s--", "best-of-N")):
            points = [(math.sqrt(max(r["kl_per_sequence"], 0.0)), r[key]) for r in rows if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), style, color=colour, label=f"{name}, {label}", alpha=0.9)
            if points and label == "policies":  # name each policy / checkpoint beside its point
                for (x, y), r in zip(points, rows):
                    ax.annotate(r["policy"], (x, y), fontsize=7, textcoords="offset points", xytext=(4, 4))
        ref = report["reference_stats"].get(key)
        if ref is not None:
            ax.axhline(ref, color=colour, lw=0.8, ls=":")
    ax.set_xlabel("√KL(π ‖ π_ref)  (nats per sequence, square root)")
    ax.set_ylabel("mean reward (dotted: π_ref)")
    ax.set_title("Reward versus KL (Gao et al. 2022)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    from align.evaluation.eval_metrics import log_report
    from prefloop.config import parse_config, to_dict
    from prefloop.metrics import check_report_to

    from prefloop.outputs import check_output_dir

    cfg = parse_config(EvalConfig, argv, prog="align eval")
    check_output_dir(cfg.output_dir, "--output-dir", ours=True)  # a file there: one line now, not after sampling
    check_report_to(cfg.report_to)  # a tracker that is not installed: one line before any sampling
    report = evaluate_to_dir(cfg)
    out = Path(cfg.output_dir)
    log_report(report, out, cfg.report_to, to_dict(cfg))  # metrics.jsonl and the --report-to trackers
    print(format_report(report))
    print(f"[prefloop] {out / 'eval.json'}, {out / 'samples.jsonl'} (what it is computed from), "
          f"{out / 'reward_vs_kl.png'}")
    return 0
