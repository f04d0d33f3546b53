"""`labeling stats`: progress, agreement, position bias, the model leaderboard (`labeling.leaderboard`)
and the loop's lineage (`labeling.lineage`).

`project_stats` is also what the admin dashboard draws; its keys are a contract:
tasks, tasks_complete, judgments, prompts, candidates, models, median_ms, left_choice_rate,
tie_rate, per_hour, annotators, agreement. Shares that are undefined (no data) are None.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from statistics import median

from sqlalchemy.engine import Engine

from labeling.agreement import agreement_summary
from labeling.snapshot import Vote, agreement_triples, as_utc, gold_accuracy, load_snapshot, to_vote
from labeling.leaderboard import format_leaderboard, leaderboard
from prefloop.fields import store_field


def _share(hits: int, total: int) -> float | None:
    return hits / total if total else None


def position_rates(votes: list[Vote], mode: str) -> dict:
    """left_rate: among decisive judgments, share won by the response shown first (position bias);
    tie_rate / both_bad_rate: share of pairwise judgments (None for ranking projects: no ties)."""
    decisive = [v for v in votes if v.ranking]
    left = sum(v.ranking[0] == v.judgment.display_order[0] for v in decisive)
    if mode == "ranking":
        return {"left_rate": _share(left, len(decisive)), "tie_rate": None, "both_bad_rate": None}
    return {"left_rate": _share(left, len(decisive)),
            "tie_rate": _share(sum(v.outcome == "tie" for v in votes), len(votes)),
            "both_bad_rate": _share(sum(v.outcome == "both_bad" for v in votes), len(votes))}


def _median_ms(votes: list[Vote]) -> float | None:
    ms = [v.judgment.ms_spent for v in votes if v.judgment.ms_spent is not None]
    return float(median(ms)) if ms else None


def project_stats(engine: Engine, project_name: str) -> dict:
    snap = load_snapshot(engine, project_name)
    mode = snap.project.mode
    votes = [v for v in (to_vote(j, mode) for j in snap.judgments) if v is not None]
    judged_by: dict[int, set[int]] = defaultdict(set)
    for j in snap.judgments:
        judged_by[j.task_id].add(j.annotator_id)
    hours = Counter(as_utc(j.created_at).replace(minute=0, second=0, microsecond=0).isoformat()
                    for j in snap.judgments)
    rates = position_rates(votes, mode)
    summary = agreement_summary(agreement_triples(snap, votes))
    for pair in summary["cohen_kappa_pairs"]:
        pair["a"], pair["b"] = snap.annotators[pair["a"]], snap.annotators[pair["b"]]
    return {
        "project": snap.project.name, "mode": mode, "overlap": snap.project.overlap,
        "tasks": len(snap.tasks),
        "tasks_complete": sum(len(judged_by[t]) >= snap.project.overlap for t in snap.tasks),
        "gold_tasks": sum(1 for t in snap.tasks.values() if t.gold),
        "judgments": len(snap.judgments),
        "prompts": len(snap.prompts),
        "candidates": len(snap.candidates),
        "models": dict(sorted(Counter(c.model for c in snap.candidates.values()).items())),
        "median_ms": _median_ms(votes),
        "left_choice_rate": rates["left_rate"],
        "tie_rate": rates["tie_rate"],
        "both_bad_rate": rates["both_bad_rate"],
        "per_hour": [[hour, count] for hour, count in sorted(hours.items())],
        "annotators": _annotator_rows(snap, votes, mode),
        "agreement": summary,
        "max_judgment_id": snap.max_judgment_id,
    }


def _annotator_rows(snap, votes: list[Vote], mode: str) -> list[dict]:
    accuracy = gold_accuracy(snap)
    by_annotator: dict[int, list[Vote]] = defaultdict(list)
    for v in votes:
        by_annotator[v.judgment.annotator_id].append(v)
    rows = []
    for annotator_id, own in by_annotator.items():
        rates = position_rates(own, mode)
        rows.append({"name": snap.annotators[annotator_id], "judgments": len(own), "median_ms": _median_ms(own),
                     "gold_accuracy": accuracy.get(annotator_id), "left_rate": rates["left_rate"],
                     "tie_rate": rates["tie_rate"]})
    return sorted(rows, key=lambda row: row["name"])


# --- text output and commands ------------------------------------------------------

def _f(value, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec) if isinstance(value, float) else str(value)


def format_stats(stats: dict, board: list[dict] | None = None) -> str:
    agreement = stats["agreement"]
    lines = [
        f"project {stats.get('project', '?')} ({stats.get('mode', '?')}, overlap {stats.get('overlap', '?')})",
        f"  prompts {stats['prompts']}  candidates {stats['candidates']}  tasks {stats['tasks']} "
        f"(complete {stats['tasks_complete']})  judgments {stats['judgments']}",
        "  models: " + (", ".join(f"{m} ({n})" for m, n in stats["models"].items()) or "none"),
        f"  median time {_f(stats['median_ms'], '.0f')} ms  left-choice rate {_f(stats['left_choice_rate'])}  "
        f"tie rate {_f(stats['tie_rate'])}",
        f"  agreement: Fleiss kappa {_f(agreement['fleiss_kappa'])}  "
        f"Krippendorff alpha {_f(agreement['krippendorff_alpha'])}",
    ]
    lines += [f"    Cohen kappa {p['a']} / {p['b']}: {_f(p['kappa'])} (n={p['n']})"
              for p in agreement["cohen_kappa_pairs"]]
    if stats["annotators"]:
        lines.append("  annotator            judgments  median ms  gold acc  left rate  tie rate")
        lines += [f"  {a['name']:<20} {a['judgments']:>9}  {_f(a['median_ms'], '.0f'):>9}  "
                  f"{_f(a['gold_accuracy'], '.2f'):>8}  {_f(a['left_rate'], '.2f'):>9}  {_f(a['tie_rate'], '.2f'):>8}"
                  for a in stats["annotators"]]
    if board:
        lines.append(format_leaderboard(board))
    return "\n".join(lines)


@dataclass
class StatsConfig:
    """Progress, agreement, position bias and the model leaderboard of a project."""

    project: str = field(metadata={"help": "project name"})
    store: str | None = store_field()
    json: bool = field(default=False, metadata={"help": "print JSON instead of a table"})
    prior: float = field(default=0.5, metadata={
        "help": "Bradley-Terry prior: virtual wins and losses of each model p_i against a reference p = 1 "
                "(MM iteration, Hunter 2004)"})

    def __post_init__(self):
        if self.prior < 0:
            raise ValueError(f"prior={self.prior}: must be >= 0")


def _run(argv, prog: str, show) -> int:
    import json

    from labeling.db import open_store
    from prefloop.config import parse_config

    cfg = parse_config(StatsConfig, argv, prog=prog)
    engine = open_store(cfg.store, create=False)
    try:
        result = show(engine, cfg)
    finally:
        engine.dispose()
    print(json.dumps(result, indent=2) if cfg.json else result["text"])
    return 0


def main(argv: list[str] | None = None) -> int:
    from labeling.lineage import format_lineage, lineage

    def show(engine, cfg):
        stats, board = project_stats(engine, cfg.project), leaderboard(engine, cfg.project, cfg.prior)
        history = lineage(engine, cfg.project)
        if cfg.json:
            return {**stats, "leaderboard": board, "lineage": history}
        return {"text": format_stats(stats, board) + ("\n" + format_lineage(history) if history else "")}

    return _run(argv, "labeling stats", show)

