"""Writing exports: JSONL / Parquet / datasets files with a dataset card, and `labeling export`.

The rows themselves come from `labeling.export`; this module only puts them on disk,
through a staging directory so that a failure leaves nothing half-written.

An export never removes or overwrites what it did not write (prefloop.outputs, the rule every
command follows): an existing output path is replaced only when the dataset card of an earlier
export names it (the card beside `x.jsonl`, or README.md inside a datasets directory, which lists
the directory's files: a re-export replaces those and leaves the files a user added); anything
else is refused with one line before any work starts.
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
from prefloop.fields import store_field

# --- 1. writing files and the dataset card -----------------------------------------

def write_export(records: list[dict] | dict[str, list[dict]], out_path: str | Path, fmt: str | None = None,
                 card: dict | None = None) -> list[Path]:
    """Write rows (or {split: rows}) as JSONL / Parquet / a datasets directory, with a card beside them.

    Files: `x.jsonl` (or `x.train.jsonl` + `x.test.jsonl`) and `x.card.md`. A datasets directory
    holds the card as README.md, which lists the directory's files (`contents`); with several splits
    it is a DatasetDict (`load_from_disk`). Everything is written to a staging directory first, so a
    failure leaves no partial output.
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
        facts = {**(card or {}), "files": [str(p) for p in files]}
        if fmt == "datasets":
            root = staging / out.name
            contents = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) + ["README.md"]
            (root / "README.md").write_text(render_card({**facts, "contents": contents}, splits), "utf-8")
            _refresh_dir(root, out, contents, staging)
        else:
            staged_card = staging / card_path.name
            staged_card.write_text(render_card(facts, splits), "utf-8")
            for staged, final in [*moves, (staged_card, card_path)]:
                os.replace(staged, final)  # check_output made sure an earlier export of ours wrote `final`
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


def _refresh_dir(root: Path, out: Path, contents: list[str], staging: Path) -> None:
    """Put the staged datasets directory `root` at `out`. Over an earlier export, only the files its card
    lists are replaced (moved into `staging`, removed after): files the user added inside stay."""
    if not out.exists():
        os.replace(root, out)
        return
    ours = _card_files(out / "README.md") or set()
    taken = [name for name in contents if os.path.lexists(out / name) and name not in ours]
    if taken:  # a file of the user's where this export writes one of its own: nothing is moved
        raise InputError(f"{out / taken[0]}: already exists and was not written by labeling export; "
                         "choose another --out (an export never replaces what it did not write)")
    old = staging / f"{out.name}.replaced"
    for name in sorted(ours):
        if (out / name).is_file():
            (old / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(out / name, old / name)
    for name in sorted({str(Path(n).parent) for n in ours} - {"."}, key=len, reverse=True):
        if (out / name).is_dir() and not any((out / name).iterdir()):
            (out / name).rmdir()  # a split directory the earlier export made, now empty
    for name in contents:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(root / name, out / name)


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
    """Refuse (InputError) unless every path the export would write is new or written by an earlier export
    (the rule of prefloop.outputs)."""
    from prefloop.outputs import check_output_dir, check_output_file

    data, card = output_paths(out, fmt, split_names)
    ours = _card_files(card)
    if fmt == "datasets":
        check_output_dir(out, "--out", ours=ours is not None, what="export")
        taken = [p for p in _datasets_layout(out, split_names) if os.path.lexists(p)
                 and str(p.relative_to(out)) not in (ours or set()) and not (p.is_dir() and p.name in split_names)]
        if taken:
            raise InputError(f"{taken[0]}: already exists and was not written by labeling export; choose another "
                             "--out (an export never replaces what it did not write)")
        return
    if card.exists() and ours is None:
        raise InputError(f"{card}: already exists and is not the card of an earlier export; choose another "
                         "--out (an export never replaces what it did not write)")
    for path in data:
        check_output_file(path, "--out", replace=path.name in (ours or set()), what="labeling export")


def _datasets_layout(out: Path, split_names: list[str]) -> list[Path]:
    """The paths inside `out` that a datasets export with these splits may write (Dataset.save_to_disk's
    layout, one per split directory for a DatasetDict)."""
    import glob

    roots = [out] if len(split_names) == 1 else [out / name for name in split_names]
    paths = [out / "README.md"] + ([out / "dataset_dict.json", *roots] if len(split_names) > 1 else [])
    for root in roots:
        paths += [root / "state.json", root / "dataset_info.json"]
        paths += [Path(p) for p in glob.glob(glob.escape(str(root)) + "/data-*.arrow")]
    return paths


def _card_files(card: Path) -> set[str] | None:
    """What an earlier export's card lists as its own, or None when `card` is no card of ours: the names
    of its data files beside it, or (README.md of a datasets directory) the directory's files."""
    if not card.is_file():
        return None
    try:
        facts = read_card(card)
        if card.name == "README.md":
            return {str(Path(name)) for name in facts.get("contents", ["README.md"])}
        return {Path(name).name for name in facts["files"]}
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
    store: str | None = store_field()
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
    rounds: list[int] = field(default_factory=list, metadata={"help": "only tasks of these rounds (default all)",
                                                              "range": ">= 0"})
    until_judgment_id: int | None = field(default=None, metadata={
        "help": "reproduce an earlier snapshot: ignore judgments with a larger id", "range": ">= 0"})
    salt: str | None = field(default=None, metadata={
        "help": "raw format: secret salt of annotator pseudonyms (default random: unlinkable across exports)"})
    sft_min_agreement: float = field(default=1.0, metadata={
        "help": "sft: a winner agreed on by >= 2 annotators with this share a is a clear winner"})
    margin: bool = field(default=True, metadata={
        "help": "pairwise: write the margin m = judged strength (RM loss -log sigma(r_c - r_r - m), Llama 2 eq. 2)"})

    def __post_init__(self):
        from prefloop.config import check_ranges

        if not self.project:
            raise ValueError("project: a project name is required")
        check_ranges(self)
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
    engine = open_store(cfg.store, create=False)
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
