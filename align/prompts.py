"""Prompts for on-policy training (PPO, online DPO): from a file or from the store.

A prompt is either a conversation (list of {"role", "content"}) or a string, which is one
user turn (prefloop.chat): the policy answers both through its chat template. A record supplies one
through the first of these columns it has:

    prompt     a conversation or a string (the pairwise/ranking export's column)
    messages   a conversation; trailing assistant turns are dropped (the SFT export's
               column: the policy must write that answer itself)
    text       a string

    prompts, source = load_prompts("prompts.jsonl")
    prompts, source = load_prompts(store="sqlite:///prefloop.db", project="demo")  # all its prompts

`source` describes where the prompts came from, for the trained model's metadata.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from prefloop.chat import as_conversation  # noqa: F401  (re-exported: the one prompt rule)
from prefloop.errors import InputError

COLUMNS = ("prompt", "messages", "text")


def load_prompts(path: str | Path | None = None, *, store: str | None = None, project: str | None = None,
                 limit: int | None = None, test_fraction: float = 0.0, split_seed: int = 0) -> tuple[list, dict]:
    """(prompts, source). From the store: the training side of `labeling export`'s split by prompt
    (`test_fraction`, `split_seed`; see store_prompt_splits). Raises InputError (one line: file, row,
    field) on bad input."""
    if path is not None:
        prompts, source = _file_prompts(Path(path)), {"kind": "file", "path": str(path)}
    elif store is not None and project is not None:
        prompts, _, source = store_prompt_splits(store, project, test_fraction, split_seed)
    else:
        raise InputError("no prompt source: give a prompt file, or a store URL and a project")
    if not prompts:
        raise InputError(f"{source.get('path') or project}: no prompts found")
    prompts = prompts[:limit] if limit else prompts
    return prompts, {**source, "num_prompts": len(prompts)}


def prompt_from_record(record: dict, where: str):
    """The prompt in one record; `where` ("file: row N") prefixes any error."""
    column = next((c for c in COLUMNS if record.get(c) is not None), None)
    if column is None:
        raise InputError(f"{where}: no {', '.join(repr(c) for c in COLUMNS)} field")
    value = record[column]
    if column == "text" or (column == "prompt" and isinstance(value, str)):
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{where}: field {column!r}: expected a non-empty string")
        return value
    conversation = _check_conversation(value, f"{where}: field {column!r}")
    if column == "messages":
        while conversation and conversation[-1]["role"] == "assistant":
            conversation = conversation[:-1]
        if not conversation:
            raise InputError(f"{where}: field 'messages': no turn left before the assistant's answer")
    return conversation


def _check_conversation(value, where: str) -> list[dict]:
    if hasattr(value, "tolist"):  # numpy arrays from some Parquet readers
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: expected a conversation (a non-empty list of {{role, content}}) or a string")
    for i, message in enumerate(value):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise InputError(f"{where}: message {i}: expected {{'role': str, 'content': str}}")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _file_prompts(path: Path) -> list:
    from prefloop.data import iter_records

    return [prompt_from_record(record, f"{path}: row {row}") for row, record in iter_records(path)]


def store_prompt_splits(url: str, project: str, test_fraction: float = 0.0,
                        seed: int = 0) -> tuple[list, list, dict]:
    """(training prompts, held-out prompts, source): every prompt of a project in the preference store, in
    id order, read through `labeling.export.load_snapshot` (one consistent transaction), and split by
    `labeling.export.prompt_split`, the rule `labeling export --test-fraction F --seed S` applies. The
    snapshot facts (project, time, judgments, max judgment id, split) are returned for run.json."""
    from labeling.db import open_store
    from labeling.export import prompt_split
    from labeling.snapshot import load_snapshot
    from labeling.db import display_url

    engine = open_store(url, create=False)  # a reader: a mistyped --store creates nothing
    try:
        snapshot = load_snapshot(engine, project)
    finally:
        engine.dispose()
    splits: dict[str, list] = {"train": [], "test": []}
    for pid, p in sorted(snapshot.prompts.items()):
        side = prompt_split(p.digest or str(p.id), test_fraction, seed)
        splits[side].append(prompt_from_record({"prompt": p.messages}, f"{project}: prompt id {pid}"))
    source = {"kind": "store", "project": project, "store": display_url(url),
              "snapshot_time": datetime.now(timezone.utc).isoformat(),
              "num_judgments": len(snapshot.judgments), "max_judgment_id": snapshot.max_judgment_id,
              "split": {"by": "prompt", "test_fraction": test_fraction, "seed": seed,
                        **{side: len(rows) for side, rows in splits.items()}}}
    return splits["train"], splits["test"], source
