"""`align eval`'s numbers as metrics: OUT/metrics.jsonl and the `--report-to` trackers (prefloop.metrics).

Step i is the i-th policy of eval.json (a run's checkpoints in order, then final/), so a tracker plots
reward, win rate and KL across a run's checkpoints. Keys, each row:

  eval/mean_reward, eval/mean_gold, eval/win_rate_reward (+ _lo, _hi), eval/win_rate_gold (+ _lo, _hi),
  eval/kl_per_sequence, eval/kl_per_token, eval/length, eval/policy_step (the checkpoint's step, if any)

and in the last row best_of_N/... with the same names for every N of the best-of-N baseline, and
reference/mean_reward, reference/mean_gold, reference/length.
"""

from __future__ import annotations

from pathlib import Path

_SCALARS = ("mean_reward", "mean_gold", "kl_per_sequence", "kl_per_token", "length")


def row_metrics(row: dict, prefix: str) -> dict[str, float]:
    """The numbers of one eval.json row (a policy or best-of-N), flattened under `prefix/`."""
    out = {f"{prefix}/{k}": row[k] for k in _SCALARS if row.get(k) is not None}
    for judge in ("reward", "gold"):
        rate = row.get(f"win_rate_{judge}")
        if rate and rate.get("rate") is not None:
            out.update({f"{prefix}/win_rate_{judge}": rate["rate"], f"{prefix}/win_rate_{judge}_lo": rate["lo"],
                        f"{prefix}/win_rate_{judge}_hi": rate["hi"]})
    return out


def report_rows(report: dict) -> list[dict[str, float]]:
    """One metrics row per policy (step = its position), the baselines in the last."""
    rows = []
    for policy in report["policies"]:
        row = row_metrics(policy, "eval")
        if policy.get("step") is not None:
            row["eval/policy_step"] = policy["step"]
        rows.append(row)
    rows = rows or [{}]
    for bon in report.get("best_of_n", []):
        rows[-1].update(row_metrics(bon, f"best_of_{bon['n']}"))
    rows[-1].update({f"reference/{k}": v for k, v in report.get("reference_stats", {}).items() if v is not None})
    return rows


def log_report(report: dict, out: Path, report_to, config: dict) -> None:
    """Write the rows to OUT/metrics.jsonl (this evaluation's alone, as eval.json is) and the trackers."""
    from prefloop.metrics import MetricsLogger

    # keep_through=-1 keeps no earlier row: a second evaluation into OUT replaces the first one's, like eval.json
    with MetricsLogger(out, keep_through=-1, report_to=report_to, config={"command": "align eval", **config},
                       run_name=Path(out).resolve().name) as logger:
        for step, row in enumerate(report_rows(report)):
            logger.log(step, row)
