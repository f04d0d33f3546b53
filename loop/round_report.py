"""The round table of the loop: per round, what was judged, how well the reward model learned it, and
whether the policy got better by the gold reward.

    round  judgments  RM accuracy (ceiling)  gold win % vs reference [95 %]  KL/seq  length (reference)

Everything is read back from the store's lineage (labeling.lineage) and the files its records name
(the reward model's run.json, the export's held-out pairs, eval.json): the table is a view, not a
second record. The ceiling is the Bayes accuracy of the simulated annotators' labels on the held-out
pairs (labeling.simulate.p_gold_winner): what a perfect reward model would score, given their noise.
"""

from __future__ import annotations

import json
from pathlib import Path

from loop.round_config import RoundConfig


def bayes_ceiling(test_pairs: Path, cfg: RoundConfig) -> float | None:
    """Mean over the held-out pairs (and the annotators) of P(label = the gold winner); None without
    simulated gold annotators or held-out pairs."""
    if cfg.judges != "simulated" or cfg.simulate.get("kind", "gold") != "gold" or not test_pairs.is_file():
        return None
    from labeling.simulate import SimulateConfig, p_gold_winner
    from prefloop.gold import load_gold

    sim = SimulateConfig(**{"url": "", "project": cfg.project, "gold": cfg.gold, **cfg.simulate})
    behaviours = sim.behaviours()
    rows = [json.loads(line) for line in test_pairs.read_text().splitlines() if line.strip()]
    if not rows:
        return None
    gold = load_gold(sim.gold)
    chosen = gold([r["prompt"] for r in rows], [r["chosen"] for r in rows])
    rejected = gold([r["prompt"] for r in rows], [r["rejected"] for r in rows])
    return sum(p_gold_winner(c - r, b) for c, r in zip(chosen, rejected) for b in behaviours) / (
        len(rows) * len(behaviours))


def round_rows(engine, cfg: RoundConfig) -> list[dict]:
    """One dict per finished round (one with an evaluation record), oldest first."""
    from labeling.lineage import lineage
    from labeling.tasks import round_progress

    records = lineage(engine, cfg.project)
    by_kind = {(r["round"], r["kind"]): r for r in records}
    rows = []
    for r in sorted({rec["round"] for rec in records if rec["kind"] == "evaluation"}):
        report = json.loads(Path(by_kind[(r, "evaluation")]["name"]).read_text())
        final = report["policies"][-1]
        rm_run = by_kind[(r, "reward_model")]["details"].get("run")
        metrics = json.loads(Path(rm_run).read_text()).get("metrics", {}) if rm_run else {}
        test_pairs = Path(by_kind[(r, "export")]["name"]).with_name("pairs.test.jsonl")
        rows.append({"round": r, "judgments": round_progress(engine, cfg.project, r)["judgments"],
                     "rm_accuracy": metrics.get("eval_accuracy"), "ceiling": bayes_ceiling(test_pairs, cfg),
                     "win_rate_gold": final.get("win_rate_gold"), "win_rate_reward": final.get("win_rate_reward"),
                     "kl_per_sequence": final.get("kl_per_sequence"), "length": final.get("length"),
                     "reference_length": report["reference_stats"].get("length"), "policy": final["path"]})
    return rows


def _num(x, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def _pct(w: dict | None) -> str:
    return "n/a" if not w else f"{100 * w['rate']:.1f} [{100 * w['lo']:.1f}, {100 * w['hi']:.1f}]"


def format_round_table(rows: list[dict]) -> str:
    judge = "gold" if any(r["win_rate_gold"] for r in rows) else "reward"
    head = (f"{'round':>5}  {'judgments':>9}  {'RM accuracy (ceiling)':>21}  {f'{judge} win % vs reference [95 %]':>33}"
            f"  {'KL/seq':>6}  {'length (reference)':>18}")
    lines = [head]
    for r in rows:
        lines.append(f"{r['round']:>5}  {r['judgments']:>9}  "
                     f"{_num(r['rm_accuracy']) + ' (' + _num(r['ceiling']) + ')':>21}  "
                     f"{_pct(r[f'win_rate_{judge}']):>33}  {_num(r['kl_per_sequence'], '.2f'):>6}  "
                     f"{_num(r['length'], '.1f') + ' (' + _num(r['reference_length'], '.1f') + ')':>18}")
    return "\n".join(lines)


def verdict(row: dict) -> str:
    """One plain line on whether the round's policy beat the reference: its win rate's whole interval lies
    above 50 % (by the gold reward where there is one, else by the reward model)."""
    judge = "gold" if row.get("win_rate_gold") else "reward-model"
    w = row.get("win_rate_gold") or row.get("win_rate_reward")
    if not w:
        return "no win rate was measured: whether the aligned model beat the reference is unknown"
    rate = f"{judge} win rate {100 * w['rate']:.1f} % [{100 * w['lo']:.1f}, {100 * w['hi']:.1f}]"
    if w["lo"] > 0.5:
        return f"the aligned model beat the reference: {rate}"
    if w["hi"] < 0.5:
        return f"the aligned model did NOT beat the reference, it is worse: {rate}"
    return f"the aligned model did NOT beat the reference: {rate} includes 50 %"
