"""Aggregation across the annotators of a task: its pairs and its best-first orders, as the export counts them.

The rules (`aggregate`: majority, borda or none; `min_agreement`; `ties`; `both_bad` never a pair) are
written out in labeling.export's docstring, which turns these pairs and orders into dataset rows.
`dropped` counts what a rule dropped, by reason, for the dataset card.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from statistics import mean
from typing import Protocol, TypeVar

from labeling.agreement import borda_ranking, majority_vote, pair_agreement
from labeling.choices import ranking_pairs
from labeling.models import Task
from labeling.snapshot import Vote


class Rule(Protocol):
    """What aggregation reads of an export's options (labeling.export.ExportOptions): this module sits
    below export and does not import it."""

    aggregate: str  # majority | borda | none
    min_agreement: float
    ties: str  # keep | drop


R = TypeVar("R", bound=Rule)


@dataclass(frozen=True)
class Pair:
    task_id: int
    chosen: int
    rejected: int
    agreement: float
    annotators: int
    margin: float | None = None
    tie: bool = False


@dataclass(frozen=True)
class Ranked:
    task_id: int
    order: tuple
    agreement: float  # mean pair agreement over the ranking's pairs
    annotators: int
    top_share: float  # share of annotators who put order[0] first


def choice_pairs(task: Task, votes: list[Vote], opts: Rule, dropped: Counter) -> list[Pair]:
    """Pairs from a pairwise task's choices (majority outcome, or every vote)."""
    outcomes = [v.outcome for v in votes]
    if opts.aggregate == "none":
        groups = [(v.outcome, [v], outcomes.count(v.outcome) / len(votes), 1) for v in votes]
    else:
        top, share = majority_vote(outcomes)
        if top is None:
            dropped["no_majority"] += 1
            return []
        groups = [(top, [v for v in votes if v.outcome == top], share, len(votes))]
    pairs = []
    for outcome, agreeing, share, n in groups:
        reason = _drop_reason(outcome, share, opts)
        if reason:
            dropped[reason] += 1
            continue
        a, b = task.candidate_ids
        if outcome == "tie":
            pairs.append(Pair(task.id, a, b, share, n, 0.0, tie=True))
        else:
            margin = mean(v.strength for v in agreeing)  # 1 = better, 2 = much better
            pairs.append(Pair(task.id, outcome, b if outcome == a else a, share, n, float(margin)))
    return pairs


def _drop_reason(outcome, share: float, opts: Rule) -> str | None:
    if outcome == "both_bad":
        return "both_bad"  # neither response is preferable: never a pair
    if share < opts.min_agreement:
        return "low_agreement"
    if outcome == "tie" and opts.ties == "drop":
        return "tie"
    return None


def task_rankings(mode: str, task: Task, votes: list[Vote], opts: Rule,
                  dropped: Counter) -> list[Ranked]:
    """Aggregated best-first orders of a ranking task (of a pairwise task: its decisive outcome)."""
    if mode == "pairwise":
        return [Ranked(p.task_id, (p.chosen, p.rejected), p.agreement, p.annotators, p.agreement)
                for p in choice_pairs(task, votes, without_ties(opts), dropped)]
    rankings = [v.ranking for v in votes]
    if opts.aggregate == "none":
        orders = rankings
    elif opts.aggregate == "borda":
        orders = [tuple(borda_ranking(rankings)[0])]
    else:
        top, _ = majority_vote(rankings)
        if top is None:
            dropped["no_majority"] += 1
            return []
        orders = [top]
    n = 1 if opts.aggregate == "none" else len(rankings)
    return [Ranked(task.id, order, mean(pair_agreement(rankings, b, w) for b, w in ranking_pairs(list(order))),
                   n, sum(r[0] == order[0] for r in rankings) / len(rankings)) for order in orders]


def ranking_task_pairs(task: Task, votes: list[Vote], opts: Rule, dropped: Counter) -> list[Pair]:
    """Pairs of a ranking task: `ranking_pairs` of each aggregated order, each with its own agreement."""
    rankings = [v.ranking for v in votes]
    _, points = borda_ranking(rankings)
    pairs = []
    for ranked in task_rankings("ranking", task, votes, opts, dropped):
        for better, worse in ranking_pairs(list(ranked.order)):
            share = pair_agreement(rankings, better, worse)
            if opts.aggregate == "borda" and points[better] == points[worse]:
                dropped["no_majority"] += 1  # a split vote on this pair, not a judged tie
            elif share < opts.min_agreement:
                dropped["low_agreement"] += 1
            else:
                pairs.append(Pair(task.id, better, worse, share, ranked.annotators))
    return pairs


def task_pairs(mode: str, task: Task, votes: list[Vote], opts: Rule, dropped: Counter) -> list[Pair]:
    if mode == "ranking":
        return ranking_task_pairs(task, votes, opts, dropped)
    return choice_pairs(task, votes, opts, dropped)


def without_ties(opts: R) -> R:
    return replace(opts, ties="drop")
