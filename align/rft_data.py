"""RFT datasets: a prompt, a reference answer and a grader spec per example.

    examples = load_rft_dataset("tasks.jsonl")                       # each row names its grader
    examples = load_rft_dataset("hf:gsm8k:train", grader="math")     # one grader for the whole dataset
    examples = load_rft_dataset(store="sqlite:///prefloop.db", project="sql-tasks")

A row (JSONL, CSV, Parquet, a `datasets` directory or `hf:NAME[:SPLIT]`, read by prefloop.data):
  prompt / messages / text   the prompt, as align/prompts.py reads it (a string or a conversation)
  reference                  the reference answer: any JSON value (a number, a string, an object
                             of expected fields, a SQL query, GeneralPoints' cards and target)
  grader                     optional: a grader spec (align/graders/mix.py), overriding the
                             dataset's; a name, {name, weight, options...} or {graders: [...]}
Other columns are kept in `meta`. A relative `db` option of the SQL grader is resolved against
the dataset file's folder, so a task directory with its database moves as one.

The same rows go into the preference store unchanged with `labeling import`: `reference` and
`grader` land in the prompt's metadata (where the labeling app never shows them), so RFT tasks
and preference tasks share a project; `store=` reads back the prompts that have a reference.
Every error is one line naming the file, the row and the field, raised before training starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from align.graders.mix import GraderSpec, parse_grader_spec
from align.prompts import COLUMNS as PROMPT_COLUMNS
from align.prompts import prompt_from_record
from prefloop.errors import InputError

REFERENCE, GRADER = "reference", "grader"


@dataclass(frozen=True)
class RFTExample:
    prompt: Any  # a string or a conversation [{"role", "content"}, ...]
    reference: Any
    graders: tuple[GraderSpec, ...]
    meta: dict = field(default_factory=dict)


def load_rft_dataset(path: str | Path | None = None, grader=None, *, store: str | None = None,
                     project: str | None = None, limit: int | None = None, prompt_field: str | None = None,
                     reference_field: str | None = None) -> list[RFTExample]:
    """Validated examples; InputError (file, row, field) on the first bad row.

    `prompt_field` / `reference_field` name other columns to read as the prompt and the reference
    (GSM8K's `question` and `answer`).
    """
    default = parse_grader_spec(grader, "dataset grader") if grader is not None else None
    if path is not None:
        base = Path(path).parent if not str(path).startswith("hf:") else Path.cwd()
        rows, name = _file_rows(path), str(path)
    elif store is not None and project is not None:
        base, rows, name = Path.cwd(), _store_rows(store, project), project
    else:
        raise InputError("no RFT data: give a file, or a store URL and a project")
    examples = []
    for where, record in rows:
        if prompt_field and prompt_field in record:
            record = {**record, "prompt": record[prompt_field]}
        if reference_field and reference_field in record:
            record = {**record, REFERENCE: record[reference_field]}
        examples.append(parse_rft_row(record, where, default, base))
        if limit and len(examples) >= limit:
            break
    if not examples:
        raise InputError(f"{name}: no RFT examples (rows with a prompt and a {REFERENCE!r})")
    return examples


def parse_rft_row(record: dict, where: str, default: tuple[GraderSpec, ...] | None, base: Path) -> RFTExample:
    prompt = prompt_from_record(record, where)
    if record.get(REFERENCE) is None:
        raise InputError(f"{where}: field {REFERENCE!r}: missing (the reference answer the graders compare with)")
    spec = record.get(GRADER)
    if spec is None and default is None:
        raise InputError(f"{where}: field {GRADER!r}: missing, and the dataset has no default grader")
    graders = parse_grader_spec(spec, f"{where}: field {GRADER!r}") if spec is not None else default
    graders = tuple(_resolve_db(s, base, where) for s in graders)
    meta = {k: v for k, v in record.items() if k not in (REFERENCE, GRADER, *PROMPT_COLUMNS)}
    return RFTExample(prompt, record[REFERENCE], graders, meta)


def _resolve_db(spec: GraderSpec, base: Path, where: str) -> GraderSpec:
    """The SQL grader's database, found beside the dataset if relative; missing, it fails here, not mid-run."""
    if spec.name != "sql":
        return spec
    db = Path(str(spec.options.get("db") or ""))
    if not db.is_absolute() and (base / db).is_file():
        db = base / db
    if not db.is_file():
        raise InputError(f"{where}: field {GRADER!r}: sql database {str(db)!r} not found (option 'db')")
    return GraderSpec(spec.name, spec.weight, {**spec.options, "db": str(db)})


def _file_rows(path) -> Iterator[tuple[str, dict]]:
    from prefloop.data import iter_records

    for number, record in iter_records(path):
        yield f"{path}: row {number}", record


def _store_rows(url: str, project: str) -> Iterator[tuple[str, dict]]:
    """Prompts of a store project whose metadata holds a reference (imported RFT rows), in id order."""
    from labeling.db import open_store
    from labeling.snapshot import load_snapshot

    engine = open_store(url, create=False)  # a reader: a mistyped --store creates nothing
    try:
        snapshot = load_snapshot(engine, project)
    finally:
        engine.dispose()
    for pid, prompt in sorted(snapshot.prompts.items()):
        meta = prompt.meta or {}
        if meta.get(REFERENCE) is not None:
            yield f"{project}: prompt id {pid}", {**meta, "prompt": prompt.messages}
