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
Other columns are kept in `meta`.

A row is data, and data never runs code or opens a file of its own choosing: a row may name the
registered graders and their options, but not a `python` grader (it imports code), a
`reward_model` component (it loads a model from a path) or a judge's `model`; those come from the
operator (`--graders`, `--reward-model`). A row's SQL database (`db`) is a relative path inside the
folder the operator names with `sql_dir` (no absolute paths, no `..`, no symlink out); without
`sql_dir` a row may not name one. A row's `time_limit` may only tighten the operator's budget
(align/graders/budget.py clamps it). Each refusal is one line naming the file, row and field,
before any model loads.

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
# what only the operator names (flags, config): graders that import code or load models, options that do
ROW_FORBIDDEN = {"python": "imports code (module:function)", "reward_model": "loads a model from a path"}
ROW_FORBIDDEN_OPTIONS = {("judge", "model"): "loads a model"}


@dataclass(frozen=True)
class RFTExample:
    prompt: Any  # a string or a conversation [{"role", "content"}, ...]
    reference: Any
    graders: tuple[GraderSpec, ...]
    meta: dict = field(default_factory=dict)


def load_rft_dataset(path: str | Path | None = None, grader=None, *, store: str | None = None,
                     project: str | None = None, limit: int | None = None, prompt_field: str | None = None,
                     reference_field: str | None = None, sql_dir: str | Path | None = None) -> list[RFTExample]:
    """Validated examples; InputError (file, row, field) on the first bad row.

    `grader` is the operator's (it may name anything); rows' own specs follow the rule in the module head.
    `prompt_field` / `reference_field` name other columns to read as the prompt and the reference
    (GSM8K's `question` and `answer`). `sql_dir` is the folder rows' SQL databases lie in.
    """
    default = parse_grader_spec(grader, "dataset grader") if grader is not None else None
    if default is not None:
        default = tuple(_operator_db(s, sql_dir) for s in default)
    if path is not None:
        rows, name = _file_rows(path), str(path)
    elif store is not None and project is not None:
        rows, name = _store_rows(store, project), project
    else:
        raise InputError("no RFT data: give a file, or a store URL and a project")
    examples = []
    for where, record in rows:
        if prompt_field and prompt_field in record:
            record = {**record, "prompt": record[prompt_field]}
        if reference_field and reference_field in record:
            record = {**record, REFERENCE: record[reference_field]}
        examples.append(parse_rft_row(record, where, default, sql_dir))
        if limit and len(examples) >= limit:
            break
    if not examples:
        raise InputError(f"{name}: no RFT examples (rows with a prompt and a {REFERENCE!r})")
    return examples


def parse_rft_row(record: dict, where: str, default: tuple[GraderSpec, ...] | None,
                  sql_dir: str | Path | None = None) -> RFTExample:
    prompt = prompt_from_record(record, where)
    if record.get(REFERENCE) is None:
        raise InputError(f"{where}: field {REFERENCE!r}: missing (the reference answer the graders compare with)")
    spec = record.get(GRADER)
    if spec is None and default is None:
        raise InputError(f"{where}: field {GRADER!r}: missing, and the dataset has no default grader")
    if spec is None:
        graders = default
    else:
        field_at = f"{where}: field {GRADER!r}"
        parsed = parse_grader_spec(spec, field_at)
        mix = isinstance(spec, list) or isinstance(spec, dict) and "graders" in spec
        graders = tuple(_row_spec(s, f"{field_at}[{i}]" if mix else field_at, sql_dir) for i, s in enumerate(parsed))
    meta = {k: v for k, v in record.items() if k not in (REFERENCE, GRADER, *PROMPT_COLUMNS)}
    return RFTExample(prompt, record[REFERENCE], graders, meta)


def _row_spec(spec: GraderSpec, where: str, sql_dir) -> GraderSpec:
    """A row's grader, refused when it names what only the operator may (module head)."""
    if spec.name in ROW_FORBIDDEN:
        raise InputError(f"{where}: the {spec.name} grader {ROW_FORBIDDEN[spec.name]}: only the operator names it "
                         f"(--graders, --reward-model), never a dataset row")
    for (name, option), why in ROW_FORBIDDEN_OPTIONS.items():
        if spec.name == name and option in spec.options:
            raise InputError(f"{where}: {name} option {option!r} {why}: only the operator names it (--graders), "
                             f"never a dataset row")
    if spec.name != "sql":
        return spec
    if not spec.options.get("db"):
        raise InputError(f"{where}: sql needs option 'db' (a database inside the operator's sql_dir)")
    return GraderSpec(spec.name, spec.weight, {**spec.options, "db": str(_inside(spec.options["db"], sql_dir, where))})


def _inside(db, sql_dir, where: str) -> Path:
    """A row's database: a relative path that stays inside `sql_dir` once symlinks are resolved, and exists."""
    if sql_dir is None:
        raise InputError(f"{where}: sql option 'db' names a database, but no sql_dir was given (the operator "
                         f"names the folder rows' databases lie in: --sql-dir)")
    rel = Path(str(db))
    if rel.is_absolute() or ".." in rel.parts:
        raise InputError(f"{where}: sql option 'db' {str(db)!r} must be a relative path inside sql_dir, "
                         f"without '..'")
    root = Path(sql_dir).resolve()
    full = (root / rel).resolve()
    if not full.is_relative_to(root):
        raise InputError(f"{where}: sql option 'db' {str(db)!r} leads out of sql_dir {str(sql_dir)!r} (a symlink)")
    if not full.is_file():
        raise InputError(f"{where}: sql database {str(db)!r} not found in sql_dir {str(sql_dir)!r} (option 'db')")
    return full


def _operator_db(spec: GraderSpec, sql_dir) -> GraderSpec:
    """The operator's SQL database: relative to sql_dir when given (else to the working directory); it must exist."""
    if spec.name != "sql":
        return spec
    db = Path(str(spec.options.get("db") or ""))
    if sql_dir is not None and not db.is_absolute():
        db = Path(sql_dir) / db
    if not db.is_file():
        raise InputError(f"--graders: sql database {str(db)!r} not found (option 'db')")
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
