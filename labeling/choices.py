"""The judgment vocabulary, and the one place that turns a shown choice into a preference.

A judgment stores what the annotator saw: `display_order`, the candidate ids in the
order they were shown (A first). `choice` is relative to that order. Everything
downstream (export, agreement, position bias) converts through `preference()`.
"""

from __future__ import annotations

from dataclasses import dataclass

# choice -> (winner position in display order or None, strength). Strength follows the
# Anthropic HH / Llama-2 convention: 2 = much better, 1 = better, 0 = tie.
CHOICES: dict[str, tuple[int | None, int]] = {
    "a_much_better": (0, 2),
    "a_better": (0, 1),
    "tie": (None, 0),
    "b_better": (1, 1),
    "b_much_better": (1, 2),
    "both_bad": (None, 0),
}
CHOICE_LABELS = {
    "a_much_better": "A is much better",
    "a_better": "A is better",
    "tie": "Tie",
    "b_better": "B is better",
    "b_much_better": "B is much better",
    "both_bad": "Both are bad",
}


@dataclass(frozen=True)
class Preference:
    chosen: int | None  # candidate id, None for a tie / both bad
    rejected: int | None
    strength: int  # 0 tie, 1 better, 2 much better
    label: str  # "win", "tie" or "both_bad"


def preference(display_order: list[int], choice: str) -> Preference:
    """Pairwise preference in candidate ids from a choice made on the shown order."""
    if choice not in CHOICES:
        raise ValueError(f"unknown choice {choice!r}; expected one of {', '.join(CHOICES)}")
    if len(display_order) != 2:
        raise ValueError("a pairwise choice needs exactly two shown candidates")
    winner, strength = CHOICES[choice]
    if winner is None:
        return Preference(None, None, 0, "both_bad" if choice == "both_bad" else "tie")
    return Preference(display_order[winner], display_order[1 - winner], strength, "win")


def ranking_pairs(ranking: list[int]) -> list[tuple[int, int]]:
    """All (better, worse) pairs implied by a best-first ranking of candidate ids."""
    return [(ranking[i], ranking[j]) for i in range(len(ranking)) for j in range(i + 1, len(ranking))]
