"""The trainers' one way into the store: export rows, split by prompt exactly as `labeling export` does.

    splits, snapshot = rows_from_store("sqlite:///prefloop.db", "demo", "pairwise", test_fraction=0.1)
    splits["train"], splits.get("test", [])

`reward-model train --store` and `align sft|dpo --store` call this (never a copy of it), so a run
from the store trains on the same rows, and holds out the same prompts, as
`labeling export --test-fraction F --seed S` writes to `X.train.jsonl` and `X.test.jsonl`.
The snapshot (project, judgments, max judgment id, time, split) goes into the run's metadata:
export again with `until_judgment_id=snapshot["max_judgment_id"]` to get the same rows.
"""

from __future__ import annotations


def rows_from_store(url: str, project: str, fmt: str | None = None, *, test_fraction: float = 0.0,
                    seed: int = 0, **options) -> tuple[dict[str, list[dict]], dict]:
    """({"train": rows[, "test": rows]}, snapshot). `fmt` None: ranking for a ranking project, else
    pairwise; `options` are labeling.export.ExportOptions fields (ties, aggregate, ...)."""
    from labeling.db import get_project, open_store, session_scope
    from labeling.export import export_dataset

    engine = open_store(url)
    try:
        if fmt is None:
            with session_scope(engine, immediate=False) as session:  # a reader: never blocks writers
                fmt = "ranking" if get_project(session, project).mode == "ranking" else "pairwise"
        splits, card = export_dataset(engine, project, fmt, test_fraction=test_fraction, seed=seed, **options)
    finally:
        engine.dispose()
    snapshot = {"kind": "store", "store": redact_url(url), "project": project, "format": fmt,
                **card["snapshot"], "rounds": card.get("rounds"), "taken_at": card["created_at"],
                "records": sum(len(rows) for rows in splits.values()),
                "split": {"by": "prompt", "test_fraction": test_fraction, "seed": seed,
                          **{name: len(rows) for name, rows in splits.items()}}}
    return splits, snapshot


def redact_url(url: str) -> str:
    """A store URL without its password, fit for a metadata file."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
