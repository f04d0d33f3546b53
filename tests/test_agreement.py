"""Agreement coefficients against textbook values and plain-loop references; vote aggregation."""

from __future__ import annotations

import itertools
import random

import pytest

from labeling.agreement import (
    agreement_summary, borda_ranking, category_counts, cohen_kappa, fleiss_kappa, krippendorff_alpha,
    majority_vote, pair_agreement,
)

N = None
# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", example C: 4 observers, 12 units.
KRIPPENDORFF_C = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
    [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N],
]
# Fleiss (1971) as worked on Wikipedia ("Fleiss' kappa"): 10 subjects, 14 raters, 5 categories.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]


def test_cohen_kappa_wikipedia_example():
    # 50 proposals: both yes 20, A yes/B no 5, A no/B yes 10, both no 15 -> p_o 0.7, p_e 0.5, kappa 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a + [None], b + ["yes"]) == pytest.approx(0.4)  # unlabelled items are skipped


def test_cohen_kappa_edge_cases():
    assert cohen_kappa(["x", "y", "x"], ["x", "y", "x"]) == pytest.approx(1.0)
    assert cohen_kappa(["x", "x"], ["x", "x"]) is None  # p_e = 1: undefined
    assert cohen_kappa([], []) is None
    with pytest.raises(ValueError):
        cohen_kappa(["x"], ["x", "y"])


def test_fleiss_kappa_wikipedia_example():
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.2099, abs=1e-4)


def test_fleiss_kappa_matches_a_plain_loop_with_unequal_raters():
    rng = random.Random(0)
    table = [[rng.randint(0, 3) for _ in range(4)] for _ in range(30)]
    table = [row for row in table if sum(row) >= 2]
    # reference: mean over items of the share of agreeing ordered rater pairs, against sum p_j^2
    agree = []
    for row in table:
        labels = [j for j, n in enumerate(row) for _ in range(n)]
        pairs = list(itertools.permutations(range(len(labels)), 2))
        agree.append(sum(labels[x] == labels[y] for x, y in pairs) / len(pairs))
    total = sum(map(sum, table))
    p_e = sum((sum(row[j] for row in table) / total) ** 2 for j in range(4))
    expected = (sum(agree) / len(agree) - p_e) / (1 - p_e)
    assert fleiss_kappa(table + [[1, 0, 0, 0]]) == pytest.approx(expected)  # a single rating is ignored


@pytest.mark.parametrize("level, expected", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_alpha_published_example(level, expected):
    assert krippendorff_alpha(KRIPPENDORFF_C, level) == pytest.approx(expected, abs=5e-4)


def test_krippendorff_alpha_binary_two_observers():
    # Krippendorff (2011), example A: two observers, ten units, binary -> alpha = 0.095
    a = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    b = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    assert krippendorff_alpha([a, b]) == pytest.approx(0.095, abs=5e-4)


def test_krippendorff_alpha_undefined_and_perfect():
    assert krippendorff_alpha([[1, 1], [1, 1]]) is None  # one value only: no variation
    assert krippendorff_alpha([[1, N], [N, 2]]) is None  # nothing pairable
    assert krippendorff_alpha([["a", "b", "c"], ["a", "b", "c"]]) == pytest.approx(1.0)


def test_agreement_summary_from_triples():
    labels = {"ann1": "aabab", "ann2": "aabba", "ann3": "abbab"}
    triples = [(item, rater, lab) for rater, labs in labels.items() for item, lab in enumerate(labs)]
    summary = agreement_summary(triples)
    table, _ = category_counts({i: [labels[r][i] for r in labels] for i in range(5)})
    assert summary["fleiss_kappa"] == pytest.approx(fleiss_kappa(table))
    assert summary["krippendorff_alpha"] == pytest.approx(krippendorff_alpha([list(v) for v in labels.values()]))
    pair = next(p for p in summary["cohen_kappa_pairs"] if (p["a"], p["b"]) == ("ann1", "ann2"))
    assert pair["n"] == 5 and pair["kappa"] == pytest.approx(cohen_kappa(list("aabab"), list("aabba")))
    assert len(summary["cohen_kappa_pairs"]) == 3


def test_majority_vote_and_borda():
    assert majority_vote(["x", "x", "tie"]) == ("x", pytest.approx(2 / 3))
    assert majority_vote(["x", "y"]) == (None, 0.5)  # a split is not a majority
    assert majority_vote([]) == (None, 0.0)
    order, points = borda_ranking([(1, 2, 3), (1, 2, 3), (2, 3, 1)])
    assert points == {1: 4, 2: 4, 3: 1} and order == [1, 2, 3]  # equal points: by item
    assert pair_agreement([(1, 2, 3), (2, 1, 3), (3, 2, 1)], 1, 2) == pytest.approx(1 / 3)
