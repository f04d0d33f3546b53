"""Judgments -> preference dataset rows (pairwise, ranking, sft, raw); files and CLI: `labeling.export_files`;
the aggregation of one task's votes: `labeling.aggregate`.

Row formats (the contract read by reward_model and align; TRL's conversational format):

    pairwise  {"prompt": [msgs], "chosen": [assistant msg], "rejected": [assistant msg],
               "margin": float (pairwise projects: mean judged strength, 1 better / 2 much better; 0 for ties),
               "tie": bool, "prompt_id", "task_id", "annotators", "agreement"}
    ranking   {"prompt": [msgs], "responses": [[assistant msg], ...] best first, "prompt_id", "task_id",
               "annotators", "agreement"}
    sft       {"messages": [msgs..., assistant msg], "prompt": [msgs], "completion": [assistant msg],
               "prompt_id", "source": "edited" | "winner"}
    raw       one row per judgment, unaggregated; annotators pseudonymised by a salted hash.

Aggregation across the annotators of a task (`aggregate`):
    majority  pairwise projects: the most frequent outcome (winner, tie or both_bad); a shared
              top is a split vote, not a judgment, and is dropped. Ranking projects: the most
              frequent full ranking.
    borda     ranking projects: Borda count; pairs with equal points are dropped as split votes.
    none      every judgment is its own row.
`agreement` is the share of the task's annotators agreeing with a row (per pair for rankings,
averaged over the pairs of a ranking row); rows below `min_agreement` are dropped.

Decisions worth knowing:
  * `both_bad` never yields a chosen/rejected pair (neither response is preferable), and is no
    SFT negative either; it still counts as a vote, so it lowers the agreement of a pair.
    The ideal response such an annotator writes is used as an SFT example like any edit.
  * Gold tasks only measure annotators (gold accuracy = share of gold tasks whose winner,
    or top of the ranking, matches the known answer); they are never exported, except in raw.
    Annotators without gold judgments are kept by `min_gold_accuracy`.
  * SFT rows: edited ideal responses first, then clear winners: judged "much better" by the
    majority (mean strength 2), or agreed on by at least two annotators with a share of at
    least `sft_min_agreement`. Duplicate texts for a prompt are written once.
  * Splits are by prompt: a hash of (seed, prompt digest) puts every row of a conversation on
    the same side, so no prompt (not even an identical re-import) is in train and test.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from statistics import mean
from typing import Callable

from sqlalchemy.engine import Engine

from labeling.aggregate import choice_pairs, task_pairs, task_rankings, without_ties
from labeling.agreement import agreement_summary
from labeling.choices import preference
from labeling.models import Task
from labeling.snapshot import (Snapshot, Vote, agreement_triples, as_utc, gold_accuracy, gold_correct, load_snapshot,
                               to_vote)
from prefloop.errors import InputError

FORMATS = ("pairwise", "ranking", "sft", "raw")
AGGREGATES = ("majority", "borda", "none")
TIES = ("drop", "keep")
SPLITS = ("train", "test")
FILE_FORMATS = ("jsonl", "parquet", "datasets")


@dataclass(frozen=True)
class ExportOptions:
    aggregate: str = "majority"
    min_agreement: float = 0.0
    ties: str = "drop"
    min_gold_accuracy: float | None = None
    exclude_annotators: tuple[str, ...] = ()
    split: str | None = None
    test_fraction: float = 0.0
    seed: int = 0
    rounds: tuple[int, ...] = ()
    until_judgment_id: int | None = None
    salt: str | None = None
    sft_min_agreement: float = 1.0
    margin: bool = True

    def __post_init__(self):
        one_of("aggregate", self.aggregate, AGGREGATES)
        one_of("ties", self.ties, TIES)
        if self.split is not None:
            one_of("split", self.split, SPLITS)
        for name in ("min_agreement", "sft_min_agreement"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"{name}={getattr(self, name)}: expected a share in [0, 1]")
        if self.min_gold_accuracy is not None and not 0.0 <= self.min_gold_accuracy <= 1.0:
            raise InputError(f"min_gold_accuracy={self.min_gold_accuracy}: expected a share in [0, 1]")
        if not 0.0 <= self.test_fraction < 1.0:
            raise InputError(f"test_fraction={self.test_fraction}: expected a share in [0, 1)")


def one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        raise InputError(f"{name}={value!r}: expected one of {', '.join(allowed)}")


# --- 2. which annotators count ------------------------------------------------------

def excluded_annotators(snapshot: Snapshot, opts: ExportOptions) -> set[int]:
    by_name = {name: a for a, name in snapshot.annotators.items()}
    unknown = [name for name in opts.exclude_annotators if name not in by_name]
    if unknown:
        raise InputError(f"exclude_annotators: no annotator named {', '.join(map(repr, unknown))}")
    excluded = {by_name[name] for name in opts.exclude_annotators}
    if opts.min_gold_accuracy is not None:
        excluded |= {a for a, acc in gold_accuracy(snapshot).items() if acc < opts.min_gold_accuracy}
    return excluded


# --- 3. rows (each task's pairs and orders: labeling.aggregate) -------------------------

@dataclass
class Context:
    snapshot: Snapshot
    opts: ExportOptions
    votes_by_task: dict[int, list[Vote]]  # exported (non-gold) tasks, counted annotators only
    dropped: Counter = field(default_factory=Counter)

    def prompt(self, task_id: int) -> list[dict]:
        messages = self.snapshot.prompts[self.snapshot.tasks[task_id].prompt_id].messages
        return [{"role": m["role"], "content": m["content"]} for m in messages]

    def response(self, candidate_id: int) -> list[dict]:
        return [{"role": "assistant", "content": self.snapshot.candidates[candidate_id].text}]

    def task(self, task_id: int) -> Task:
        return self.snapshot.tasks[task_id]


def pairwise_rows(ctx: Context) -> list[dict]:
    with_margin = ctx.opts.margin and ctx.snapshot.project.mode == "pairwise"
    rows = []
    for task_id, votes in ctx.votes_by_task.items():
        for pair in task_pairs(ctx.snapshot.project.mode, ctx.task(task_id), votes, ctx.opts, ctx.dropped):
            row = {"prompt": ctx.prompt(task_id), "chosen": ctx.response(pair.chosen),
                   "rejected": ctx.response(pair.rejected)}
            if with_margin:
                row["margin"] = pair.margin
            rows.append(row | {"tie": pair.tie, "prompt_id": ctx.task(task_id).prompt_id, "task_id": task_id,
                               "annotators": pair.annotators, "agreement": pair.agreement})
    return rows


def ranking_rows(ctx: Context) -> list[dict]:
    rows = []
    for task_id, votes in ctx.votes_by_task.items():
        for ranked in task_rankings(ctx.snapshot.project.mode, ctx.task(task_id), votes, ctx.opts, ctx.dropped):
            if ranked.agreement < ctx.opts.min_agreement:
                ctx.dropped["low_agreement"] += 1
                continue
            rows.append({"prompt": ctx.prompt(task_id), "responses": [ctx.response(c) for c in ranked.order],
                         "prompt_id": ctx.task(task_id).prompt_id, "task_id": task_id,
                         "annotators": ranked.annotators, "agreement": ranked.agreement})
    return rows


def sft_rows(ctx: Context) -> list[dict]:
    """Edited ideal responses first, then clear winners (see the module docstring)."""
    examples: list[tuple[int, str, str]] = []  # (task id, text, source)
    for task_id, votes in ctx.votes_by_task.items():
        examples += [(task_id, v.judgment.edited_response, "edited") for v in votes if v.judgment.edited_response]
    for task_id, votes in ctx.votes_by_task.items():
        examples += [(task_id, ctx.snapshot.candidates[c].text, "winner") for c in _clear_winners(ctx, task_id, votes)]
    rows, seen = [], set()
    for task_id, text, source in examples:
        prompt_id = ctx.task(task_id).prompt_id
        if (prompt_id, text) in seen:
            continue
        seen.add((prompt_id, text))
        prompt, completion = ctx.prompt(task_id), [{"role": "assistant", "content": text}]
        rows.append({"messages": prompt + completion, "prompt": prompt, "completion": completion,
                     "prompt_id": prompt_id, "task_id": task_id, "source": source})
    return rows


def _clear_winners(ctx: Context, task_id: int, votes: list[Vote]) -> list[int]:
    def clear(share: float, n: int) -> bool:
        return n >= 2 and share >= ctx.opts.sft_min_agreement

    sink = Counter()  # SFT does not report pair-level drops
    task = ctx.task(task_id)
    if ctx.snapshot.project.mode == "pairwise":
        return [p.chosen for p in choice_pairs(task, votes, without_ties(ctx.opts), sink)
                if p.margin == 2.0 or clear(p.agreement, p.annotators)]
    return [r.order[0] for r in task_rankings("ranking", task, votes, ctx.opts, sink)
            if r.agreement >= ctx.opts.min_agreement and clear(r.top_share, r.annotators)]


def raw_rows(ctx: Context) -> list[dict]:
    """Every judgment of the counted annotators (gold tasks included and flagged), unaggregated."""
    snap, salt = ctx.snapshot, ctx.opts.salt or secrets.token_hex(16)
    excluded = excluded_annotators(snap, ctx.opts)
    rows = []
    for j in snap.judgments:
        if j.annotator_id in excluded:
            continue
        task = snap.tasks[j.task_id]
        pref = preference(j.display_order, j.choice) if j.choice else None
        rows.append({
            "judgment_id": j.id, "task_id": task.id, "prompt_id": task.prompt_id, "round": task.round,
            "prompt": ctx.prompt(task.id),
            "candidates": [{"id": c, "model": snap.candidates[c].model, "text": snap.candidates[c].text}
                           for c in task.candidate_ids],
            "annotator": pseudonym(j.annotator_id, salt), "display_order": list(j.display_order),
            "choice": j.choice, "ranking": list(j.ranking) if j.ranking else None,
            "chosen": pref.chosen if pref else (j.ranking[0] if j.ranking else None),
            "rejected": pref.rejected if pref else None, "strength": pref.strength if pref else None,
            "ratings": _ratings_list(j.ratings), "rationale": j.rationale, "edited_response": j.edited_response,
            "ms_spent": j.ms_spent, "gold": bool(task.gold),
            "gold_correct": gold_correct(task, j) if task.gold else None,
            "created_at": as_utc(j.created_at).isoformat(timespec="seconds"),
        })
    return rows


def pseudonym(annotator_id: int, salt: str) -> str:
    """A stable stand-in for an annotator within one export; without the salt it cannot be reversed."""
    return "ann-" + hashlib.sha256(f"{salt}:{annotator_id}".encode()).hexdigest()[:12]


def _ratings_list(ratings: dict | None) -> list[dict]:
    """{criterion: {candidate id: score}} as a list of records: one schema for every row (Parquet)."""
    return [{"criterion": crit, "candidate_id": int(cand), "score": score}
            for crit, scores in (ratings or {}).items() for cand, score in scores.items()]


ROW_BUILDERS: dict[str, Callable[[Context], list[dict]]] = {
    "pairwise": pairwise_rows, "ranking": ranking_rows, "sft": sft_rows, "raw": raw_rows,
}


# --- 4. the export: rows, split by prompt, card ------------------------------------

def prompt_split(key: str, test_fraction: float, seed: int) -> str:
    """'test' for a deterministic `test_fraction` of prompt keys, else 'train'."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def export_dataset(engine: Engine, project_name: str, fmt: str = "pairwise",
                   **options) -> tuple[dict[str, list[dict]], dict]:
    """({split: rows}, card facts). One split "train" unless test_fraction > 0 (or `split` picks one)."""
    one_of("format", fmt, FORMATS)
    opts = ExportOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    snap = load_snapshot(engine, project_name, until_judgment_id=opts.until_judgment_id, rounds=opts.rounds)
    if opts.aggregate == "borda" and snap.project.mode != "ranking":
        raise InputError(f"aggregate=borda: project {project_name!r} is pairwise; Borda counts need rankings")
    excluded = excluded_annotators(snap, opts)
    votes_by_task: dict[int, list[Vote]] = defaultdict(list)
    for j in snap.judgments:
        vote = to_vote(j, snap.project.mode)
        if vote is not None and j.annotator_id not in excluded and not snap.tasks[j.task_id].gold:
            votes_by_task[j.task_id].append(vote)
    ctx = Context(snap, opts, dict(votes_by_task))
    rows = ROW_BUILDERS[fmt](ctx)
    splits: dict[str, list[dict]] = {"train": [], "test": []} if opts.test_fraction > 0 else {"train": []}
    for row in rows:
        prompt = snap.prompts[row["prompt_id"]]
        splits.setdefault(prompt_split(prompt.digest or str(prompt.id), opts.test_fraction, opts.seed), []).append(row)
    if opts.split is not None:
        splits = {opts.split: splits.get(opts.split, [])}
    return splits, _card(ctx, fmt, splits, excluded)


def export_records(engine: Engine, project_name: str, fmt: str = "pairwise", **options) -> list[dict]:
    """Rows of `fmt` (see the module docstring); options are the fields of ExportOptions:
    aggregate, min_agreement, ties, min_gold_accuracy, exclude_annotators, split, test_fraction,
    seed, rounds, until_judgment_id, salt, sft_min_agreement, margin."""
    splits, _ = export_dataset(engine, project_name, fmt, **options)
    return [row for rows in splits.values() for row in rows]


def _card(ctx: Context, fmt: str, splits: dict[str, list[dict]], excluded: set[int]) -> dict:
    snap, opts = ctx.snapshot, ctx.opts
    rows = [row for part in splits.values() for row in part]
    votes = [v for vs in ctx.votes_by_task.values() for v in vs]
    summary = agreement_summary(agreement_triples(snap, votes))
    accuracy = gold_accuracy(snap)
    task_ids = {row["task_id"] for row in rows}
    used = {c for t in task_ids for c in snap.tasks[t].candidate_ids}
    return {
        "project": snap.project.name, "mode": snap.project.mode, "overlap": snap.project.overlap, "format": fmt,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "snapshot": {"judgments": len(snap.judgments), "max_judgment_id": snap.max_judgment_id},
        "rounds": sorted({snap.tasks[t].round for t in task_ids}),
        "models": sorted({snap.candidates[c].model for c in used}),
        "options": {"aggregate": opts.aggregate, "min_agreement": opts.min_agreement, "ties": opts.ties,
                    "min_gold_accuracy": opts.min_gold_accuracy, "excluded_by_name": len(opts.exclude_annotators),
                    "test_fraction": opts.test_fraction, "seed": opts.seed, "split": opts.split,
                    "rounds": list(opts.rounds), "until_judgment_id": opts.until_judgment_id,
                    "sft_min_agreement": opts.sft_min_agreement},
        "counts": {"rows": len(rows), "splits": {name: len(part) for name, part in splits.items()},
                   "prompts": len({row["prompt_id"] for row in rows}), "tasks": len(task_ids),
                   "judgments_used": len(votes), "gold_tasks": sum(1 for t in snap.tasks.values() if t.gold),
                   "annotators": len({v.judgment.annotator_id for v in votes}),
                   "annotators_excluded": len(excluded), "dropped": dict(sorted(ctx.dropped.items()))},
        "agreement": {"mean_row_agreement": mean(r["agreement"] for r in rows) if rows and "agreement" in rows[0]
                      else None,
                      "fleiss_kappa": summary["fleiss_kappa"], "krippendorff_alpha": summary["krippendorff_alpha"],
                      "mean_gold_accuracy": mean(accuracy.values()) if accuracy else None},
    }
