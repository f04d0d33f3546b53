"""Reading and writing record files: JSONL, CSV, Parquet, or a `datasets` directory.

Every reader yields (row_number, record) so that a caller can name the exact row of
a bad record. Row numbers are 1-based lines for JSONL/CSV (header = line 1 for CSV
so data starts at 2) and 1-based record indices for Parquet and datasets.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Iterator

FORMATS = ("jsonl", "csv", "parquet", "datasets")


class DataFileError(ValueError):
    """One line naming the file, the row and what is wrong."""


def detect_format(path: str | Path) -> str:
    path = Path(path)
    if path.is_dir():
        return "datasets"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise DataFileError(f"{path}: unknown file type {suffix or '(none)'}; use .jsonl, .csv, .parquet or a datasets directory")


def iter_records(path: str | Path, fmt: str | None = None) -> Iterator[tuple[int, dict]]:
    """Rows of a file, a datasets directory, or `hf:NAME[:SPLIT]` (a `load_dataset` name cached locally)."""
    if str(path).startswith("hf:"):
        yield from _iter_hub(str(path)[3:])
        return
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: no such file or directory")
    fmt = fmt or detect_format(path)
    reader = {"jsonl": _iter_jsonl, "csv": _iter_csv, "parquet": _iter_parquet, "datasets": _iter_datasets}[fmt]
    yield from reader(path)


def read_records(path: str | Path, fmt: str | None = None) -> list[dict]:
    return [record for _, record in iter_records(path, fmt)]


def write_records(records: list[dict], path: str | Path, fmt: str | None = None) -> Path:
    """Write records; `fmt` defaults from the suffix (a path without one becomes a datasets dir)."""
    path = Path(path)
    fmt = fmt or (detect_format(path) if path.suffix else "datasets")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt in ("parquet", "datasets"):
        records = _uniform(records)
    if fmt == "jsonl":
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        tmp.replace(path)  # readers never see a half-written file
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
    elif fmt == "datasets":
        from datasets import Dataset

        Dataset.from_list(records).save_to_disk(str(path))
    elif fmt == "csv":
        columns = sorted({key for record in records for key in record})
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for record in records:
                writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in record.items()})
    else:
        raise DataFileError(f"{path}: unknown output format {fmt}")
    return path


def test_companion(path: str | Path) -> Path | None:
    """`X.test.EXT` beside `X.train.EXT` (what `labeling export --test-fraction` writes), if it exists.

    Trainers evaluate on it and never split the training file again: the export already held
    those prompts out, and a second split would hold out twice and shrink the training data.
    """
    path = Path(path)
    parts = path.name.split(".")
    if len(parts) < 3 or parts[-2] != "train":
        return None
    companion = path.with_name(".".join(parts[:-2] + ["test", parts[-1]]))
    return companion if companion.exists() else None


def split_by_key(rows: list[dict], key, fraction: float, seed: int, *,
                 at_least_one: bool = False) -> tuple[list[dict], list[dict]]:
    """(train, held_out) holding out whole groups: rows sharing `key(row)` (a prompt) land on one side.

    The distinct keys are shuffled with `seed` and round(n_keys * fraction) of them held out.
    `at_least_one`: hold out one key even when that rounds to 0 (given two keys or more).
    Otherwise a split that would hold out nothing or everything holds out nothing.
    """
    if fraction <= 0:
        return rows, []
    keys = sorted({key(row) for row in rows})
    random.Random(seed).shuffle(keys)
    n_held = round(len(keys) * fraction)
    if at_least_one:
        n_held = max(1, n_held) if len(keys) > 1 else 0
    elif n_held == len(keys):
        n_held = 0
    held = set(keys[:n_held])
    return [row for row in rows if key(row) not in held], [row for row in rows if key(row) in held]


def _uniform(records: list[dict]) -> list[dict]:
    """Columnar writers infer columns from the first row: give every row every column."""
    columns = list(dict.fromkeys(key for record in records for key in record))
    return [{key: record.get(key) for key in columns} for record in records]


def _iter_jsonl(path: Path):
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFileError(f"{path}: row {number}: not valid JSON ({err.msg})") from err
            if not isinstance(record, dict):
                raise DataFileError(f"{path}: row {number}: expected a JSON object")
            yield number, record


def _iter_csv(path: Path):
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        for number, row in enumerate(reader, start=2):
            if None in row:
                raise DataFileError(f"{path}: row {number}: more fields than the header has columns")
            yield number, {k: _maybe_json(v) for k, v in row.items()}


def _maybe_json(value):
    """CSV cells holding JSON lists/objects (e.g. a conversation) are decoded."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _iter_parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise DataFileError(f"{path}: not a readable Parquet file ({err})") from err
    for number, record in enumerate(table.to_pylist(), start=1):
        yield number, record


def _iter_hub(spec: str):
    from datasets import load_dataset

    name, _, split = spec.partition(":")
    try:
        ds = load_dataset(name, split=split or "train")
    except Exception as err:  # offline: only datasets already in the local cache load
        raise DataFileError(f"hf:{spec}: cannot be loaded locally ({str(err).splitlines()[0]})") from err
    for number, record in enumerate(ds, start=1):
        yield number, dict(record)


def _iter_datasets(path: Path):
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise DataFileError(f"{path}: not a datasets directory ({err})") from err
    if isinstance(ds, DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    for number, record in enumerate(ds, start=1):
        yield number, dict(record)
