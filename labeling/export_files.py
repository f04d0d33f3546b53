"""Writing exports: JSONL / Parquet / datasets files with a dataset card, and `labeling export`.

The rows themselves come from `labeling.export`; this module only puts them on disk,
through a staging directory so that a failure leaves nothing half-written.

An export never removes or overwrites what it did not write: an existing output path is
replaced only when the dataset card of an earlier export names it (the card beside
`x.jsonl`, or README.md inside a datasets directory); anything else is refused with one
line before any work starts.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from labeling.export import AGGREGATES, FILE_FORMATS, FORMATS, TIES, ExportOptions, export_dataset, one_of
from prefloop.errors import InputError

# --- 1. writing files and the dataset card -----------------------------------------

def write_export(records: list[dict] | dict[str, list[dict]], out_path: str | Path, fmt: str | None = None,
                 card: dict | None = None) -> list[Path]:
    """Write rows (or {split: rows}) as JSONL / Parquet / a datasets directory, with a card beside them.

    Files: `x.jsonl` (or `x.train.jsonl` + `x.test.jsonl`) and `x.card.md`. A datasets directory
    holds the card as README.md; with several splits it is a DatasetDict (`load_from_disk`).
    Everything is written to a staging directory first, so a failure leaves no partial output.
    """
    from prefloop.data import write_records

    splits = records if isinstance(records, dict) else {"train": records}
    out = Path(out_path)
    fmt = output_format(out, fmt)
    if not any(splits.values()):
        raise InputError(f"{out}: nothing to write, the export has no rows")
    check_output(out, fmt, list(splits))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        moves = _stage(splits, out, fmt, staging, write_records)
        card_path = out / "README.md" if fmt == "datasets" else out.with_name(out.stem + ".card.md")
        files = [final for _, final in moves]
        staged_card = (staging / out.name / "README.md") if fmt == "datasets" else staging / card_path.name
        staged_card.write_text(render_card({**(card or {}), "files": [str(p) for p in files]}, splits), "utf-8")
        if fmt != "datasets":
            moves.append((staged_card, card_path))
        for staged, final in moves:
            _replace(staged, final, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return files + [card_path]


def _stage(splits, out: Path, fmt: str, staging: Path, write_records) -> list[tuple[Path, Path]]:
    if fmt == "datasets":
        root = staging / out.name
        if len(splits) == 1:
            write_records(next(iter(splits.values())), root, "datasets")
        else:  # the layout DatasetDict.save_to_disk writes
            for name, rows in splits.items():
                write_records(rows, root / name, "datasets")
            (root / "dataset_dict.json").write_text(json.dumps({"splits": list(splits)}))
        return [(root, out)]
    if len(splits) == 1:
        return [(write_records(next(iter(splits.values())), staging / out.name, fmt), out)]
    stem, suffix = out.stem, out.suffix
    return [(write_records(rows, staging / f"{stem}.{name}{suffix}", fmt), out.with_name(f"{stem}.{name}{suffix}"))
            for name, rows in splits.items()]


def _replace(staged: Path, final: Path, staging: Path) -> None:
    """Rename into place; a datasets directory of an earlier export moves into `staging` (removed after)."""
    if final.is_dir():  # check_output made sure an earlier export of ours wrote it
        os.replace(final, staging / f"{final.name}.replaced")
    os.replace(staged, final)


# --- 2. what an export may replace ---------------------------------------------------

def output_format(out: Path, fmt: str | None) -> str:
    from prefloop.data import detect_format

    fmt = fmt or (detect_format(out) if out.suffix else "datasets")
    one_of("output file format", fmt, FILE_FORMATS)
    return fmt


def output_paths(out: Path, fmt: str, split_names: list[str]) -> tuple[list[Path], Path]:
    """(data paths, card path) of an export to `out` with these splits."""
    if fmt == "datasets":
        return [out], out / "README.md"
    data = [out] if len(split_names) == 1 else [out.with_name(f"{out.stem}.{name}{out.suffix}")
                                                for name in split_names]
    return data, out.with_name(out.stem + ".card.md")


def check_output(out: Path, fmt: str, split_names: list[str]) -> None:
    """Refuse (InputError) unless every path the export would write is new or written by an earlier export."""
    data, card = output_paths(out, fmt, split_names)
    hint = "choose another --out (an export never replaces what it did not write)"
    if fmt == "datasets":
        if out.exists() and (not out.is_dir() or _card_files(card) is None):
            raise InputError(f"{out}: already exists and is not the directory of an earlier export; {hint}")
        return
    ours = _card_files(card)
    if card.exists() and ours is None:
        raise InputError(f"{card}: already exists and is not the card of an earlier export; {hint}")
    for path in data:
        if path.is_dir():
            raise InputError(f"{path}: is a directory; give a file name such as {path / ('prefs' + path.suffix)}")
        if path.exists() and path.name not in (ours or set()):
            raise InputError(f"{path}: already exists and was not written by labeling export; {hint}")


def _card_files(card: Path) -> set[str] | None:
    """Names of the files an earlier export's card lists, or None when `card` is no card of ours."""
    if not card.is_file():
        return None
    try:
        return {Path(name).name for name in read_card(card)["files"]}
    except Exception:  # noqa: BLE001 - any file that does not parse as our card is simply not ours
        return None


def render_card(card: dict, splits: dict[str, list[dict]]) -> str:
    """Markdown dataset card: the facts as YAML front matter (machine-readable), then prose."""
    import yaml

    counts, agreement, opts = card.get("counts", {}), card.get("agreement", {}), card.get("options", {})
    lines = ["---", yaml.safe_dump({"prefloop": card}, sort_keys=False).rstrip(), "---", "",
             f"# {card.get('project', '?')}: {card.get('format', '?')} preference data", "",
             f"Exported {card.get('created_at', '?')} from the prefloop project `{card.get('project', '?')}` "
             f"({card.get('mode', '?')} mode, overlap {card.get('overlap', '?')}), "
             f"snapshot up to judgment id {card.get('snapshot', {}).get('max_judgment_id')}, "
             f"round(s) {card.get('rounds', [])}.", "",
             "| split | rows |", "| --- | --- |"]
    lines += [f"| {name} | {len(rows)} |" for name, rows in splits.items()]
    lines += ["", "## Counts", ""] + [f"- {k}: {v}" for k, v in counts.items() if k != "splits"]
    lines += ["", "## Agreement", ""] + [f"- {k}: {_fmt(v)}" for k, v in agreement.items()]
    lines += ["", "## Aggregation", ""] + [f"- {k}: {v}" for k, v in opts.items()]
    lines += ["", "Models: " + ", ".join(card.get("models", [])) if card.get("models") else ""]
    lines += ["", "## Loading", "", "A datasets directory: `datasets.load_from_disk(path)`; JSONL or Parquet: "
              "`datasets.load_dataset(\"json\" or \"parquet\", data_files=path)`. Pairwise rows go unchanged "
              "into TRL's RewardTrainer and DPOTrainer (conversational `prompt` / `chosen` / `rejected`).", ""]
    return "\n".join(lines)


def read_card(path: str | Path) -> dict:
    """The facts of a card written by write_export (its YAML front matter)."""
    import yaml

    text = Path(path).read_text("utf-8")
    _, front, _ = text.split("---\n", 2)
    return yaml.safe_load(front)["prefloop"]


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


# --- 3. command line ---------------------------------------------------------------

@dataclass
class ExportConfig:
    """Export a project's judgments as a preference dataset with a dataset card."""

    project: str = field(metadata={"help": "project name"})
    out: str = field(metadata={"help": "output: x.jsonl, x.parquet, or a directory (a datasets dir)"})
    db: str | None = field(default=None, metadata={
        "help": "SQLAlchemy URL or SQLite path ($PREFLOOP_DB, ./prefloop.db)"})
    format: str = field(default="pairwise", metadata={"help": "row format", "choices": list(FORMATS)})
    file_format: str | None = field(default=None, metadata={
        "help": "jsonl, parquet or datasets; default from the suffix of --out", "choices": list(FILE_FORMATS)})
    aggregate: str = field(default="majority", metadata={
        "help": "across annotators: majority vote, Borda count (rankings), or none", "choices": list(AGGREGATES)})
    min_agreement: float = field(default=0.0, metadata={
        "help": "drop rows whose agreement a (share of the task's annotators agreeing) is below this"})
    ties: str = field(default="drop", metadata={"help": "keep tie rows (tie=true) or drop them", "choices": list(TIES)})
    min_gold_accuracy: float | None = field(default=None, metadata={
        "help": "exclude annotators whose gold-task accuracy is below this share"})
    exclude_annotators: list[str] = field(default_factory=list, metadata={"help": "annotator names to leave out"})
    test_fraction: float = field(default=0.0, metadata={"help": "share of prompts held out as a test split"})
    seed: int = field(default=0, metadata={"help": "seed of the prompt-hash split"})
    rounds: list[int] = field(default_factory=list, metadata={"help": "only tasks of these rounds (default all)"})
    until_judgment_id: int | None = field(default=None, metadata={
        "help": "reproduce an earlier snapshot: ignore judgments with a larger id"})
    salt: str | None = field(default=None, metadata={
        "help": "raw format: secret salt of annotator pseudonyms (default random: unlinkable across exports)"})
    sft_min_agreement: float = field(default=1.0, metadata={
        "help": "sft: a winner agreed on by >= 2 annotators with this share a is a clear winner"})
    margin: bool = field(default=True, metadata={
        "help": "pairwise: write the margin m = judged strength (RM loss -log sigma(r_c - r_r - m), Llama 2 eq. 2)"})

    def __post_init__(self):
        if not self.project:
            raise ValueError("project: a project name is required")
        ExportOptions(**self.options())  # same validation as the Python API

    def options(self) -> dict:
        return {"aggregate": self.aggregate, "min_agreement": self.min_agreement, "ties": self.ties,
                "min_gold_accuracy": self.min_gold_accuracy, "exclude_annotators": tuple(self.exclude_annotators),
                "test_fraction": self.test_fraction, "seed": self.seed, "rounds": tuple(self.rounds),
                "until_judgment_id": self.until_judgment_id, "salt": self.salt,
                "sft_min_agreement": self.sft_min_agreement, "margin": self.margin}


def main(argv: list[str] | None = None) -> int:
    from labeling.db import open_store
    from prefloop.config import parse_config

    cfg = parse_config(ExportConfig, argv, prog="labeling export")
    out = Path(cfg.out)
    check_output(out, output_format(out, cfg.file_format), ["train", "test"] if cfg.test_fraction > 0 else ["train"])
    engine = open_store(cfg.db, create=False)
    try:
        splits, card = export_dataset(engine, cfg.project, cfg.format, **cfg.options())
    finally:
        engine.dispose()
    if not any(splits.values()):
        raise InputError(f"project {cfg.project!r}: no {cfg.format} rows to export "
                         f"({card['snapshot']['judgments']} judgments; dropped: {card['counts']['dropped'] or 'none'})")
    paths = write_export(splits, cfg.out, cfg.file_format, card)
    sizes = ", ".join(f"{name} {len(rows)}" for name, rows in splits.items())
    print(f"exported {card['counts']['rows']} {cfg.format} rows ({sizes}) from {card['snapshot']['judgments']} "
          f"judgments to {', '.join(map(str, paths))}")
    return 0
