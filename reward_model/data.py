"""Comparison data: export rows (pairwise or ranking) -> comparison groups, validated.

A *group* is one judged comparison, best response first:
    {"prompt": [messages], "responses": [[messages], ...], "margin": float, "tie": bool,
     "prompt_key": str, "annotators": int | None, "agreement": float | None, "row": <the export row>}
A pairwise row gives a group of 2 (a tie row keeps its two responses, tie=True); a ranking
row gives a group of K.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefloop.errors import InputError
from reward_model.encoding import as_conversation, as_messages, response_text


def parse_row(row: dict, where: str) -> dict:
    """One export row -> one group; `where` ("file: row N") prefixes every error."""
    if "prompt" not in row:
        raise InputError(f"{where}: missing field 'prompt'")
    if "responses" in row:
        responses = row["responses"]
        if not isinstance(responses, list) or len(responses) < 2:
            raise InputError(f"{where}: field 'responses' must list at least 2 responses, best first")
        tie = False
    elif "chosen" in row and "rejected" in row:
        responses, tie = [row["chosen"], row["rejected"]], bool(row.get("tie") or False)
    else:
        raise InputError(f"{where}: expected fields 'chosen' and 'rejected' (pairwise) or 'responses' (ranking)")
    try:
        prompt = as_conversation(row["prompt"])
        responses = [as_messages(r) for r in responses]
    except ValueError as err:
        raise InputError(f"{where}: {err}") from err
    margin = row.get("margin")
    if margin is not None and not isinstance(margin, (int, float)):
        raise InputError(f"{where}: field 'margin' must be a number, got {margin!r}")
    return {"prompt": prompt, "responses": responses, "margin": float(margin or 0.0), "tie": tie,
            "prompt_key": str(row.get("prompt_id", json.dumps(prompt, sort_keys=True))),
            "annotators": row.get("annotators"), "agreement": row.get("agreement"), "row": row}


def load_groups(path: str | Path) -> list[dict]:
    from prefloop.data import iter_records

    return [parse_row(row, f"{path}: row {n}") for n, row in iter_records(path)]


def groups_from_records(records: list[dict], source: str) -> list[dict]:
    return [parse_row(row, f"{source}: record {i}") for i, row in enumerate(records, start=1)]


def check_trainable(groups: list[dict], source: str) -> None:
    """Refuse data a Bradley-Terry model cannot learn from, with one line saying why."""
    if not groups:
        raise InputError(f"{source}: no comparisons (empty dataset)")
    strict = [g for g in groups if not g["tie"] and len({response_text(r) for r in g["responses"]}) > 1]
    if not strict:
        raise InputError(f"{source}: one-class data: all {len(groups)} comparisons are ties or compare a "
                         "response with itself; a Bradley-Terry model needs at least one strict preference")
