"""Training data for `align dpo` and `align sft`: an export file, or the store read directly.

Rows are validated up front (one line naming the file, the row and the field) and normalised to
TRL's conversational format, so a bad file stops the run before any model is loaded:

    pairwise: {"prompt": [messages], "chosen": [assistant msg], "rejected": [assistant msg], "margin": float}
    sft:      {"prompt": [messages], "completion": [assistant msg]}
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prefloop.data import split_by_key
from prefloop.errors import InputError


@dataclass
class Loaded:
    rows: list[dict]
    source: dict  # what the model's metadata records: the file, or the store snapshot
    skipped: dict[str, int] = field(default_factory=dict)


def load_pairwise(cfg) -> Loaded:
    """Preference pairs; tie rows carry no preference direction for DPO and are skipped (counted)."""
    raw, source, where = _raw_records(cfg, "pairwise")
    rows, ties = [], 0
    for number, record in raw:
        if record.get("tie"):
            ties += 1
            continue
        rows.append(_pair_row(record, f"{where}: row {number}"))
    _require_rows(rows, where, "preference pairs" + (f" ({ties} tie rows skipped)" if ties else ""))
    return Loaded(rows, source, {"ties": ties})


def load_sft(cfg) -> Loaded:
    raw, source, where = _raw_records(cfg, "sft")
    rows = [_sft_row(record, f"{where}: row {number}") for number, record in raw]
    _require_rows(rows, where, "examples")
    return Loaded(rows, source)


def load_eval_file(path: str, kind: str) -> list[dict]:
    from prefloop.data import iter_records

    to_row = _pair_row if kind == "pairwise" else _sft_row
    rows = [to_row(record, f"{path}: row {number}") for number, record in iter_records(path)
            if not (kind == "pairwise" and record.get("tie"))]
    _require_rows(rows, path, "held-out examples")
    return rows


def train_eval_rows(rows: list[dict], cfg, kind: str) -> tuple[list[dict], list[dict]]:
    """(train, held-out): `cfg.eval_data` when given, else `cfg.eval_fraction` of the prompts split off."""
    if cfg.eval_data:
        return rows, load_eval_file(cfg.eval_data, kind)
    return split_by_prompt(rows, cfg.eval_fraction, cfg.seed)


def split_by_prompt(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out whole prompts (never one pair of a prompt in train and another in eval)."""
    return split_by_key(rows, _prompt_key, fraction, seed, at_least_one=True)


def _raw_records(cfg, fmt: str):
    """(numbered records, source metadata, name for error messages)."""
    if cfg.store:
        records, snapshot = export_from_store(cfg.store, cfg.project, fmt)
        return list(enumerate(records, start=1)), snapshot, f"store project {cfg.project!r}"
    if not cfg.data:
        raise InputError("no training data: give --data FILE (an export) or --store URL --project NAME")
    from prefloop.data import iter_records

    return list(iter_records(cfg.data)), {"kind": "file", "path": str(cfg.data), "read_at": time.time()}, cfg.data


def export_from_store(url: str, project: str, fmt: str) -> tuple[list[dict], dict]:
    """Export straight from the store; the snapshot (project, judgments, max judgment id, time) is the one
    the export itself read, in one transaction, so later judgments are provably not in this model's data."""
    from labeling.db import open_store
    from labeling.export import export_dataset

    engine = open_store(url, create=False)  # a reader: a mistyped --store creates nothing
    try:
        splits, card = export_dataset(engine, project, fmt)
    finally:
        engine.dispose()
    records = [row for rows in splits.values() for row in rows]
    return records, {"kind": "store", "project": project, "format": fmt, **card["snapshot"],
                     "taken_at": card["created_at"], "records": len(records)}


def _pair_row(record: dict, where: str) -> dict:
    for name in ("prompt", "chosen", "rejected"):
        if record.get(name) in (None, "", []):
            raise InputError(f"{where}: missing field '{name}'")
    margin = record.get("margin")
    try:
        margin = float(margin) if margin not in (None, "") else 0.0
    except (TypeError, ValueError):
        raise InputError(f"{where}: field 'margin': expected a number, got {margin!r}") from None
    return {"prompt": _conversation(record["prompt"], f"{where}: field 'prompt'", "user"),
            "chosen": _response(record["chosen"], f"{where}: field 'chosen'"),
            "rejected": _response(record["rejected"], f"{where}: field 'rejected'"),
            "margin": margin}


def _sft_row(record: dict, where: str) -> dict:
    if record.get("messages") not in (None, "", []):
        messages = _conversation(record["messages"], f"{where}: field 'messages'", "assistant")
        if len(messages) < 2:
            raise InputError(f"{where}: field 'messages': need a prompt and an assistant reply")
        return {"prompt": messages[:-1], "completion": messages[-1:]}
    for name in ("prompt", "completion"):
        if record.get(name) in (None, "", []):
            raise InputError(f"{where}: missing field 'messages' (or 'prompt' and 'completion')")
    return {"prompt": _conversation(record["prompt"], f"{where}: field 'prompt'", "user"),
            "completion": _response(record["completion"], f"{where}: field 'completion'")}


def _conversation(value, where: str, last_role: str) -> list[dict]:
    from labeling.importer import validate_conversation

    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    try:
        messages = validate_conversation(value, "x")
    except InputError as err:
        raise InputError(f"{where}: {str(err).split(': ', 1)[-1]}") from None
    if messages[-1]["role"] != last_role:
        raise InputError(f"{where}: the last message must be from the {last_role}, got {messages[-1]['role']!r}")
    return messages


def _response(value, where: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    messages = _conversation(value, where, "assistant")
    if any(m["role"] != "assistant" for m in messages):
        raise InputError(f"{where}: expected assistant messages only (the prompt goes in 'prompt')")
    return messages


def _prompt_key(row: dict) -> str:
    return repr(row["prompt"])


def _require_rows(rows: list, where: str, what: str) -> None:
    if not rows:
        raise InputError(f"{where}: no usable {what}")
