"""Project statistics and the model leaderboard, on the hand-checked store of test_export.

Labels of that store in task order (0 = m-good wins, 1 = m-bad wins; T5 has one rater):
    T0  alice 0, bob 0, carol 0        T3  alice 0, bob 1
    T1  alice tie, bob tie, carol 0    T4  alice 0, bob 0, dave 1
    T2  alice bb, bob bb, carol 1      gold alice 0, bob 0, carol 0, dave 1
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import numpy as np
import pytest
from sqlmodel import select

from labeling.agreement import krippendorff_alpha
from labeling.db import session_scope
from labeling.models import Judgment
from labeling.leaderboard import bradley_terry, leaderboard
from labeling.stats import format_stats, main, project_stats
from export_store import add_store_rows, add_task, build_pairwise_store, judge


def _spread_over_two_hours(engine) -> dict[str, int]:
    """Odd judgment ids at 10:30 UTC, even ids at 11:30; returns the expected per-hour counts."""
    expected = {}
    with session_scope(engine) as s:
        for j in s.exec(select(Judgment)):
            hour = 10 if j.id % 2 else 11
            j.created_at = datetime(2025, 1, 1, hour, 30, tzinfo=timezone.utc)
            key = f"2025-01-01T{hour}:00:00+00:00"
            expected[key] = expected.get(key, 0) + 1
            s.add(j)
    return expected


def test_project_stats_match_hand_counts(engine):
    build_pairwise_store(engine)
    hours = _spread_over_two_hours(engine)
    st = project_stats(engine, "p")
    assert (st["tasks"], st["tasks_complete"], st["judgments"]) == (7, 5, 19)  # overlap 3: T3, T5 incomplete
    assert (st["prompts"], st["candidates"], st["models"]) == (6, 12, {"m-bad": 6, "m-good": 6})
    assert st["median_ms"] == 1000.0
    # decisive judgments won by the response shown first: T0 alice, carol; T3 bob; T4 alice; gold alice, bob, carol
    assert st["left_choice_rate"] == pytest.approx(7 / 15)
    assert st["tie_rate"] == pytest.approx(2 / 19)
    assert st["per_hour"] == sorted([hour, n] for hour, n in hours.items())
    people = {a["name"]: a for a in st["annotators"]}
    assert people["alice"] == {"name": "alice", "judgments": 6, "median_ms": 1000.0, "gold_accuracy": 1.0,
                               "left_rate": pytest.approx(3 / 4), "tie_rate": pytest.approx(1 / 6)}
    assert people["dave"]["gold_accuracy"] == 0.0 and people["dave"]["left_rate"] == 0.0
    assert people["carol"]["tie_rate"] == 0.0 and people["bob"]["left_rate"] == 0.5

    agreement = st["agreement"]
    # Fleiss: mean P_i = (1 + 1/3 + 1/3 + 0 + 1/3 + 1/2) / 6 = 5/12; p = (10, 4, 2, 2) / 18 -> P_e = 124/324
    assert agreement["fleiss_kappa"] == pytest.approx((5 / 12 - 124 / 324) / (1 - 124 / 324))
    N = None
    matrix = [[0, "tie", "bb", 0, 0, N, 0], [0, "tie", "bb", 1, 0, N, 0],
              [0, 0, 1, N, N, N, 0], [N, N, N, N, 1, 0, 1]]  # alice, bob, carol, dave x T0..T5, gold
    assert agreement["krippendorff_alpha"] == pytest.approx(krippendorff_alpha(matrix))
    ab = next(p for p in agreement["cohen_kappa_pairs"] if {p["a"], p["b"]} == {"alice", "bob"})
    # 6 shared items, 5 agree: p_o = 5/6; p_e = (4*3 + 1 + 1) / 36 -> kappa = 16/22
    assert ab["n"] == 6 and ab["kappa"] == pytest.approx(16 / 22)


def test_stats_of_a_project_without_judgments(memory_engine):
    add_store_rows(memory_engine)
    st = project_stats(memory_engine, "p")
    assert st["judgments"] == 0 and st["median_ms"] is None and st["left_choice_rate"] is None
    assert st["agreement"] == {"fleiss_kappa": None, "krippendorff_alpha": None, "cohen_kappa_pairs": []}
    assert "n/a" in format_stats(st) and leaderboard(memory_engine, "p") == []


def test_leaderboard_win_rates_and_bradley_terry(memory_engine):
    build_pairwise_store(memory_engine)
    board = {row["model"]: row for row in leaderboard(memory_engine, "p", prior=0.0)}
    good, bad = board["m-good"], board["m-bad"]
    # m-good beat m-bad 11 times, lost 4 times, tied 2 (T1 alice and bob)
    assert (good["wins"], good["losses"], good["ties"], good["games"]) == (11, 4, 2, 17)
    assert good["win_rate"] == pytest.approx(12 / 17) and bad["win_rate"] == pytest.approx(5 / 17)
    # two models, no prior: the MLE odds are the win ratio (ties half): 12 : 5
    assert good["elo"] - bad["elo"] == pytest.approx(400 * math.log10(12 / 5), abs=1e-6)
    assert list(board) == ["m-good", "m-bad"]


def test_ranking_project_stats_and_leaderboard(engine):
    ids = add_store_rows(engine, mode="ranking", k=3, prompts=1, models=("x", "y", "z"))
    x, y, z = (ids["cands"][(0, m)] for m in "xyz")
    task = add_task(engine, ids, 0, [x, y, z])
    judge(engine, ids, task, "alice", [x, y, z], ranking=[x, y, z])  # first shown ranked best
    judge(engine, ids, task, "bob", [z, y, x], ranking=[x, y, z])
    judge(engine, ids, task, "carol", [y, z, x], ranking=[y, z, x])  # first shown ranked best
    st = project_stats(engine, "p")
    assert st["left_choice_rate"] == pytest.approx(2 / 3) and st["tie_rate"] is None
    assert st["tasks_complete"] == 1
    # items are the three candidate pairs, label 0 = lower id better: x-y (2:1), x-z (2:1), y-z (3:0)
    # mean P_i = (1/3 + 1/3 + 1) / 3 = 45/81; p = (7/9, 2/9) -> P_e = 53/81; kappa = -8/28
    assert st["agreement"]["fleiss_kappa"] == pytest.approx(-8 / 28)
    board = {row["model"]: row for row in leaderboard(engine, "p")}
    assert {m: (r["wins"], r["losses"]) for m, r in board.items()} == {"x": (4, 2), "y": (4, 2), "z": (1, 5)}
    assert board["z"]["elo"] < board["x"]["elo"] and board["x"]["elo"] == pytest.approx(board["y"]["elo"])


def test_bradley_terry_solves_its_score_equations():
    rng = np.random.default_rng(0)
    wins = rng.integers(0, 6, size=(4, 4)).astype(float)
    np.fill_diagonal(wins, 0)
    prior = 0.5
    p = bradley_terry(wins, prior)
    games = wins + wins.T
    for i in range(4):  # d logL / d log p_i = 0, written out as a plain loop
        expected = sum(games[i, j] * p[i] / (p[i] + p[j]) for j in range(4) if j != i)
        expected += 2 * prior * p[i] / (p[i] + 1)
        assert wins[i].sum() + prior == pytest.approx(expected, rel=1e-7)


def test_stats_command_prints_table_and_json(sqlite_url, capsys):
    from labeling.db import open_store

    engine = open_store(sqlite_url)
    build_pairwise_store(engine)
    engine.dispose()
    assert main(["--store", sqlite_url, "--project", "p"]) == 0
    text = capsys.readouterr().out
    assert "judgments 19" in text and "Fleiss kappa 0.055" in text and "m-good" in text
    assert main(["--store", sqlite_url, "--project", "p", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["judgments"] == 19 and data["leaderboard"][0]["model"] == "m-good"
