"""Inter-annotator agreement and vote aggregation (pure Python + numpy, no database).

    cohen_kappa(a, b)                 two annotators, nominal labels        (Cohen 1960)
    fleiss_kappa(counts)              many raters, (items, categories)       (Fleiss 1971)
    krippendorff_alpha(data, level)   raters x units, missing values allowed (Krippendorff 2011)
    majority_vote / borda_ranking / pair_agreement   aggregation across annotators

Every coefficient returns None where it is undefined (no pairable data, or chance
agreement already 1), so a dashboard can print "n/a" instead of dividing by zero.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from itertools import combinations
from typing import Hashable, Sequence

import numpy as np


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# --- Cohen's kappa -----------------------------------------------------------------

def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """kappa = (p_o - p_e) / (1 - p_e) over the items both annotators labelled (None = unlabelled).

    p_o: observed agreement; p_e = sum_k p_a(k) p_b(k), agreement expected from each
    annotator's own label frequencies (Cohen 1960, eq. 1).
    """
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa: {len(a)} labels for the first annotator, {len(b)} for the second")
    pairs = [(x, y) for x, y in zip(a, b) if not _missing(x) and not _missing(y)]
    n = len(pairs)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in pairs) / n
    freq_a, freq_b = Counter(x for x, _ in pairs), Counter(y for _, y in pairs)
    p_e = sum(freq_a[k] * freq_b[k] for k in freq_a) / n**2
    if p_e >= 1.0:  # both used one and the same label throughout: chance explains everything
        return None
    return (p_o - p_e) / (1.0 - p_e)


# --- Fleiss' kappa -----------------------------------------------------------------

def fleiss_kappa(counts) -> float | None:
    """Fleiss' kappa from n_ij = number of raters who put item i in category j.  counts: (N, k).

    P_i = sum_j n_ij (n_ij - 1) / (n_i (n_i - 1))   agreement on item i (Fleiss 1971, eq. 2)
    p_j = sum_i n_ij / sum_i n_i                    share of all ratings in category j
    kappa = (mean_i P_i - sum_j p_j^2) / (1 - sum_j p_j^2)
    With the same n raters per item this is Fleiss' statistic exactly; items may have
    different n_i (an overlap not yet reached), items with fewer than 2 ratings are skipped.
    """
    n_ij = np.asarray(counts, dtype=float)  # (N, k)
    if n_ij.ndim != 2:
        raise ValueError(f"fleiss_kappa: expected an (items, categories) table, got shape {n_ij.shape}")
    n_i = n_ij.sum(axis=1)  # (N,)
    n_ij, n_i = n_ij[n_i >= 2], n_i[n_i >= 2]
    if len(n_i) == 0:
        return None
    P_i = (n_ij * (n_ij - 1)).sum(axis=1) / (n_i * (n_i - 1))  # (N,)
    p_j = n_ij.sum(axis=0) / n_i.sum()  # (k,)
    P_e = float((p_j**2).sum())
    if P_e >= 1.0:
        return None
    return (float(P_i.mean()) - P_e) / (1.0 - P_e)


def category_counts(ratings: dict[Hashable, list[Hashable]]) -> tuple[np.ndarray, list]:
    """{item: [labels from its raters]} -> (N, k) count table for fleiss_kappa, and the categories."""
    categories = sorted({label for labels in ratings.values() for label in labels}, key=repr)
    column = {c: j for j, c in enumerate(categories)}
    table = np.zeros((len(ratings), len(categories)))
    for i, labels in enumerate(ratings.values()):
        for label in labels:
            table[i, column[label]] += 1
    return table, categories


# --- Krippendorff's alpha ----------------------------------------------------------

def _nominal(values: np.ndarray, n_c: np.ndarray) -> np.ndarray:
    return (values[:, None] != values[None, :]).astype(float)


def _interval(values: np.ndarray, n_c: np.ndarray) -> np.ndarray:
    return (values[:, None] - values[None, :]).astype(float) ** 2


def _ordinal(values: np.ndarray, n_c: np.ndarray) -> np.ndarray:
    """delta^2_ck = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2 over the sorted values (Krippendorff 2011, sec. F)."""
    cumulative = np.concatenate([[0.0], np.cumsum(n_c)])  # cumulative[i] = n_0 + ... + n_{i-1}
    c, k = np.meshgrid(np.arange(len(n_c)), np.arange(len(n_c)), indexing="ij")
    lo, hi = np.minimum(c, k), np.maximum(c, k)
    between = cumulative[hi + 1] - cumulative[lo]
    return (between - (n_c[c] + n_c[k]) / 2.0) ** 2


# level -> squared difference function delta^2(c, k) on the sorted distinct values
DISTANCES = {"nominal": _nominal, "ordinal": _ordinal, "interval": _interval}


def krippendorff_alpha(data, level: str = "nominal") -> float | None:
    """alpha = 1 - D_o / D_e from reliability data: one row per rater, one column per unit, None = missing.

    Coincidences: o_ck = sum_u (number of c-k pairs of values in unit u) / (m_u - 1), over
    units with m_u >= 2 values; n_c = sum_k o_ck, n = sum_c n_c. Then
    D_o = sum_ck o_ck delta^2_ck / n and D_e = sum_ck n_c n_k delta^2_ck / (n (n - 1)).
    """
    if level not in DISTANCES:
        raise ValueError(f"krippendorff_alpha: level {level!r}; expected one of {', '.join(DISTANCES)}")
    units = [[v for v in column if not _missing(v)] for column in zip(*data)]
    units = [u for u in units if len(u) >= 2]  # a lone value has nothing to be compared with
    distinct = sorted({v for u in units for v in u}, key=(repr if level == "nominal" else float))
    if not distinct:
        return None
    index = {v: i for i, v in enumerate(distinct)}
    o = np.zeros((len(distinct), len(distinct)))  # (V, V) coincidence matrix
    for values in units:
        n_u = np.bincount([index[v] for v in values], minlength=len(distinct)).astype(float)  # (V,)
        o += (np.outer(n_u, n_u) - np.diag(n_u)) / (len(values) - 1)
    n_c = o.sum(axis=1)  # (V,)
    n = float(n_c.sum())
    values = np.array(distinct, dtype=object if level == "nominal" else float)
    delta2 = DISTANCES[level](values, n_c)  # (V, V)
    d_expected = float((np.outer(n_c, n_c) * delta2).sum()) / (n * (n - 1))
    if d_expected == 0.0:  # a single value was ever used: no variation to be reliable about
        return None
    d_observed = float((o * delta2).sum()) / n
    return 1.0 - d_observed / d_expected


# --- summaries over (item, rater, label) triples -----------------------------------

def agreement_summary(triples: Sequence[tuple[Hashable, Hashable, Hashable]], min_pair_items: int = 2) -> dict:
    """Fleiss' kappa, Krippendorff's alpha (nominal) and Cohen's kappa per rater pair.

    `triples` are (item, rater, label): one label per rater and item. A rater pair is
    reported when the two share at least `min_pair_items` items.
    """
    by_item: dict[Hashable, dict[Hashable, Hashable]] = defaultdict(dict)
    for item, rater, label in triples:
        by_item[item][rater] = label
    raters = sorted({rater for labels in by_item.values() for rater in labels}, key=repr)
    items = list(by_item)
    table, _ = category_counts({item: list(labels.values()) for item, labels in by_item.items()})
    data = [[by_item[item].get(rater) for item in items] for rater in raters]  # (raters, units)
    pairs = []
    for a, b in combinations(raters, 2):
        shared = [item for item in items if a in by_item[item] and b in by_item[item]]
        if len(shared) >= min_pair_items:
            kappa = cohen_kappa([by_item[i][a] for i in shared], [by_item[i][b] for i in shared])
            pairs.append({"a": a, "b": b, "kappa": kappa, "n": len(shared)})
    return {
        "fleiss_kappa": fleiss_kappa(table) if len(table) else None,
        "krippendorff_alpha": krippendorff_alpha(data) if data else None,
        "cohen_kappa_pairs": pairs,
    }


# --- aggregation -------------------------------------------------------------------

def majority_vote(votes: Sequence[Hashable]) -> tuple[Hashable | None, float]:
    """(the most frequent vote, its share of all votes); the vote is None when the top is shared."""
    if not votes:
        return None, 0.0
    (top, count), *rest = Counter(votes).most_common()
    if rest and rest[0][1] == count:
        return None, count / len(votes)
    return top, count / len(votes)


def borda_points(rankings: Sequence[Sequence[Hashable]]) -> dict[Hashable, float]:
    """Borda count: in a best-first ranking of K items, position p earns K - 1 - p points."""
    points: dict[Hashable, float] = defaultdict(float)
    for ranking in rankings:
        for position, item in enumerate(ranking):
            points[item] += len(ranking) - 1 - position
    return dict(points)


def borda_ranking(rankings: Sequence[Sequence[Hashable]]) -> tuple[list, dict[Hashable, float]]:
    """(items best-first by Borda points, points); equal points are ordered by item (deterministic)."""
    points = borda_points(rankings)
    return sorted(points, key=lambda item: (-points[item], item)), points


def pair_agreement(rankings: Sequence[Sequence[Hashable]], better: Hashable, worse: Hashable) -> float:
    """Share of the rankings holding both items that put `better` above `worse`."""
    relevant = [r for r in rankings if better in r and worse in r]
    if not relevant:
        return 0.0
    return sum(list(r).index(better) < list(r).index(worse) for r in relevant) / len(relevant)
