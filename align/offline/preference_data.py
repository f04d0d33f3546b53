"""Training data for `align dpo` and `align sft`: an export file, or the store read directly.

Rows are validated up front (one line naming the file, the row and the field) and normalised to
TRL's conversational format, so a bad file stops the run before any model is loaded:

    pairwise: {"prompt": [messages], "chosen": [assistant msg], "rejected": [assistant msg], "margin": float}
    sft:      {"prompt": [messages], "completion": [assistant msg]}
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prefloop.errors import InputError


@dataclass
class Loaded:
    rows: list[dict]  # training rows
    source: dict  # what the run's metadata records: the file, or the store snapshot, and the split
    skipped: dict[str, int] = field(default_factory=dict)
    eval_rows: list[dict] = field(default_factory=list)  # held out: the export's test split, or --eval-data


def load_pairwise(cfg) -> Loaded:
    """Preference pairs; tie rows carry no preference direction for DPO and are skipped (counted)."""
    (train, held_out), source, where = _raw_records(cfg, "pairwise")
    rows, ties = _pair_rows(train, where)
    _require_rows(rows, where, "preference pairs" + (f" ({ties} tie rows skipped)" if ties else ""))
    eval_rows = (_pair_rows(held_out, where)[0] if held_out is not None and not cfg.eval_data
                 else _eval_file(cfg, source, "pairwise"))
    return Loaded(rows, source, {"ties": ties}, eval_rows)


def load_sft(cfg) -> Loaded:
    (train, held_out), source, where = _raw_records(cfg, "sft")
    rows = [_sft_row(record, f"{where}: row {number}") for number, record in train]
    _require_rows(rows, where, "examples")
    eval_rows = ([_sft_row(record, f"{where} (test split): row {n}") for n, record in held_out]
                 if held_out is not None and not cfg.eval_data else _eval_file(cfg, source, "sft"))
    return Loaded(rows, source, eval_rows=eval_rows)


def load_eval_file(path: str, kind: str) -> list[dict]:
    from prefloop.data import iter_records

    to_row = _pair_row if kind == "pairwise" else _sft_row
    rows = [to_row(record, f"{path}: row {number}") for number, record in iter_records(path)
            if not (kind == "pairwise" and record.get("tie"))]
    _require_rows(rows, path, "held-out examples")
    return rows


def _eval_file(cfg, source: dict, kind: str) -> list[dict]:
    """Held-out rows of a file run: --eval-data, else the export's X.test.jsonl beside X.train.jsonl,
    else none. The training file is never split again (see prefloop.data.test_companion)."""
    from prefloop.data import test_companion

    path = cfg.eval_data or (test_companion(cfg.data) if cfg.data else None)
    source["eval_data"] = str(path) if path else None
    return load_eval_file(str(path), kind) if path else []


def _pair_rows(records, where: str) -> tuple[list[dict], int]:
    rows, ties = [], 0
    for number, record in records:
        if record.get("tie"):
            ties += 1
            continue
        rows.append(_pair_row(record, f"{where}: row {number}"))
    return rows, ties


def _raw_records(cfg, fmt: str):
    """((numbered training records, numbered held-out records or None), source metadata, name for errors).

    From the store the split is labeling's own (`rows_from_store`, the export's split by prompt);
    from a file the held-out records come from `_eval_file` (None here)."""
    if cfg.store:
        from labeling.store_rows import rows_from_store

        splits, snapshot = rows_from_store(cfg.store, cfg.project, fmt, test_fraction=cfg.test_fraction,
                                           seed=cfg.split_seed)
        numbered = {name: list(enumerate(rows, start=1)) for name, rows in splits.items()}
        return (numbered["train"], numbered.get("test", [])), snapshot, f"store project {cfg.project!r}"
    if not cfg.data:
        raise InputError("no training data: give --data FILE (an export) or --store URL --project NAME")
    from prefloop.data import iter_records

    source = {"kind": "file", "path": str(cfg.data), "read_at": time.time()}
    return (list(iter_records(cfg.data)), None), source, cfg.data


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


def _require_rows(rows: list, where: str, what: str) -> None:
    if not rows:
        raise InputError(f"{where}: no usable {what}")
