"""The model leaderboard: Bradley-Terry strengths against an independent maximum-likelihood fit,
bootstrap intervals that cover the truth about as often as they claim, and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labeling.leaderboard import (Games, bootstrap_ratings, bradley_terry, elo, format_leaderboard,
                                  games_leaderboard, leaderboard, main)
from export_store import add_store_rows, add_task, build_pairwise_store, judge


def newton_log_strengths(wins: np.ndarray, prior: float = 0.0, iters: int = 100) -> np.ndarray:
    """Maximum likelihood of the Bradley-Terry log-strengths theta by Newton's method on the
    logistic log-likelihood  sum_ij w_ij log sigmoid(theta_i - theta_j), written from scratch.

    prior > 0 adds `prior` wins and `prior` losses of each model against a fixed player theta = 0
    (the same model as the library's prior); with prior = 0 theta is pinned by sum(theta) = 0.
    """
    M = len(wins)
    theta = np.zeros(M)
    for _ in range(iters):
        grad, hess = np.zeros(M), np.zeros((M, M))
        for i in range(M):
            for j in range(M):
                if i == j:
                    continue
                n, p = wins[i, j] + wins[j, i], 1 / (1 + np.exp(theta[j] - theta[i]))
                grad[i] += wins[i, j] - n * p
                hess[i, i] -= n * p * (1 - p)
                hess[i, j] += n * p * (1 - p)
            p0 = 1 / (1 + np.exp(-theta[i]))  # against the fixed reference player
            grad[i] += prior - 2 * prior * p0
            hess[i, i] -= 2 * prior * p0 * (1 - p0)
        if prior == 0:  # the likelihood is flat along theta + c: solve on the sum-zero subspace
            hess += np.ones((M, M)) / M
        theta -= np.linalg.solve(hess, grad)
        if prior == 0:
            theta -= theta.mean()
    return theta


@pytest.mark.parametrize("prior", [0.0, 0.5, 3.0])
def test_strengths_match_an_independent_maximum_likelihood_fit(prior):
    rng = np.random.default_rng(1)
    wins = rng.integers(1, 9, size=(5, 5)).astype(float)
    np.fill_diagonal(wins, 0)
    wins[0, 1] += 0.5  # a tie's half win
    theta = newton_log_strengths(wins, prior)
    got = np.log(bradley_terry(wins, prior))
    if prior == 0:
        got -= got.mean()
    np.testing.assert_allclose(got, theta, atol=1e-4)
    np.testing.assert_allclose(elo(bradley_terry(wins, prior)), 1000 + 400 / np.log(10) * (theta - theta.mean()),
                               atol=1e-2)


def test_a_batch_of_win_matrices_is_fitted_like_each_one_alone():
    rng = np.random.default_rng(2)
    batch = rng.integers(0, 6, size=(4, 3, 3)).astype(float) + 1
    for matrix in batch:
        np.fill_diagonal(matrix, 0)
    together = bradley_terry(batch, 0.0)
    for matrix, row in zip(batch, together):
        np.testing.assert_allclose(row, bradley_terry(matrix, 0.0), rtol=1e-8)


def test_prior_zero_a_model_without_games_no_longer_turns_every_strength_into_nan():
    wins = np.array([[0, 7, 0], [3, 0, 0], [0, 0, 0]], dtype=float)  # model 2 never played
    p = bradley_terry(wins, prior=0.0)
    assert np.isnan(p[2]) and np.all(np.isfinite(p[:2]))
    assert p[0] / p[1] == pytest.approx(7 / 3)  # two models: the odds are the win ratio
    ratings = elo(p)
    assert ratings[0] - ratings[1] == pytest.approx(400 * np.log10(7 / 3))


def test_prior_zero_never_won_and_never_lost_are_the_limits_not_nan():
    wins = np.array([[0, 4, 2], [2, 0, 5], [0, 0, 0]], dtype=float)  # model 2 lost every game
    p = bradley_terry(wins, prior=0.0)
    assert p[2] == 0 and p[0] / p[1] == pytest.approx(2.0)  # the 0-2 model drops out of 0 vs 1's odds
    p = bradley_terry(wins.T, prior=0.0)  # now model 2 never lost
    assert np.isinf(p[2]) and np.all(np.isfinite(p[:2]))


def test_prior_zero_a_model_that_only_lost_to_an_unbeaten_one_gets_the_limit_not_nan():
    """B's only games are losses to A, who never lost (p = inf): B's MM update is 0 / 0, its MLE p = 0."""
    wins = np.array([[0, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 4], [0, 0, 2, 0]], dtype=float)
    p = bradley_terry(wins, prior=0.0)
    assert np.isinf(p[0]) and p[1] == 0 and p[2] / p[3] == pytest.approx(2.0)


def test_a_replicate_without_a_models_games_is_dropped_for_that_model_only():
    """With --prior 0: A and B played 30 games, C only tied A twice. About one replicate in eight
    resamples neither of C's games, so C has no strength there (NaN); that used to make C's whole
    interval n/a .. n/a although C's Elo is finite. Now C's interval rests on the other replicates,
    and A's and B's on all of them."""
    a = np.array([0] * 30 + [2, 2])
    b = np.array([1] * 30 + [0, 0])
    score = np.array([1.0] * 18 + [0.0] * 12 + [0.5, 0.5])  # A beat B 18 times, lost 12; C tied A twice
    games, rounds = Games(["A", "B", "C"], a, b, score), 400
    board = {r["model"]: r for r in games_leaderboard(games, prior=0.0, rounds=rounds, confidence=0.9, seed=0)}
    samples = bootstrap_ratings(games, 0.0, rounds, seed=0)  # (R, M): the replicates the board was built from
    without_c = np.isnan(samples[:, 2])
    assert 20 < without_c.sum() < 100 and not np.isnan(samples[:, :2]).any()
    assert board["C"]["replicates"] == rounds - without_c.sum()
    assert board["A"]["replicates"] == board["B"]["replicates"] == rounds
    c = board["C"]
    assert c["elo"] is not None and c["elo_lo"] is not None and c["elo_lo"] <= c["elo"] <= c["elo_hi"]
    kept = np.sort(samples[~without_c, 2])  # the 5 % and 95 % order statistics of C's replicates
    n = len(kept)
    assert (c["elo_lo"], c["elo_hi"]) == (kept[int(np.ceil(0.05 * n)) - 1], kept[int(np.ceil(0.95 * n)) - 1])
    table = format_leaderboard(list(board.values()))
    assert "reps" in table.splitlines()[0] and f" {rounds - without_c.sum()} " in table and "n/a" not in table


def test_store_with_a_model_that_only_got_both_bad_and_prior_zero(memory_engine):
    ids = add_store_rows(memory_engine, prompts=4, models=("x", "y", "z"))
    c = ids["cands"]
    for i, (who, choice) in enumerate([("alice", "a_better"), ("bob", "a_better"), ("carol", "b_better")]):
        judge(memory_engine, ids, add_task(memory_engine, ids, i, [c[(i, "x")], c[(i, "y")]]),
              who, [c[(i, "x")], c[(i, "y")]], choice)
    z_task = add_task(memory_engine, ids, 3, [c[(3, "x")], c[(3, "z")]])
    judge(memory_engine, ids, z_task, "alice", [c[(3, "x")], c[(3, "z")]], "both_bad")  # no decisive game for z
    board = {r["model"]: r for r in leaderboard(memory_engine, "p", prior=0.0, rounds=50)}
    assert board["x"]["elo"] - board["y"]["elo"] == pytest.approx(400 * np.log10(2.0))
    assert board["z"]["elo"] is None and board["z"]["games"] == 0 and board["z"]["win_rate"] is None
    assert board["z"]["rank"] == 3 and board["x"]["rank"] == 1


def _simulate_games(rng, theta: np.ndarray, n_games: int) -> Games:
    M = len(theta)
    a = rng.integers(M, size=n_games)
    b = (a + rng.integers(1, M, size=n_games)) % M  # a different model
    score = (rng.random(n_games) < 1 / (1 + np.exp(theta[b] - theta[a]))).astype(float)
    return Games([f"m{i}" for i in range(M)], a, b, score)


def test_bootstrap_intervals_cover_the_true_elo_near_the_nominal_rate():
    """Simulate a tournament from known strengths many times; a 90 % percentile interval of each
    model's Elo should contain its true Elo in about 90 % of the tournaments."""
    rng = np.random.default_rng(0)
    theta = np.array([0.8, 0.3, 0.0, -0.4, -0.7])
    true_elo = 1000 + 400 / np.log(10) * (theta - theta.mean())
    hits, trials = 0, 0
    for sim in range(120):
        rows = games_leaderboard(_simulate_games(rng, theta, 400), prior=0.0, rounds=200, confidence=0.9,
                                 seed=sim)
        for row in rows:
            truth = true_elo[int(row["model"][1:])]
            hits += row["elo_lo"] <= truth <= row["elo_hi"]
            trials += 1
    coverage = hits / trials
    print(f"coverage of nominal 90 % intervals: {coverage:.3f} over {trials} intervals")
    assert 0.84 <= coverage <= 0.96  # 600 correlated intervals: a few standard errors around 0.90


def test_rank_intervals_separate_clear_gaps_and_overlap_close_models():
    rng = np.random.default_rng(3)
    games = _simulate_games(rng, np.array([3.0, 0.05, 0.0, -3.0]), 800)
    board = {r["model"]: r for r in games_leaderboard(games, prior=0.0, rounds=300)}
    assert (board["m0"]["rank_lo"], board["m0"]["rank_hi"]) == (1, 1)
    assert (board["m3"]["rank_lo"], board["m3"]["rank_hi"]) == (4, 4)
    assert board["m1"]["rank_lo"] == 2 and board["m1"]["rank_hi"] == 3  # m1 and m2 are hard to tell apart
    for row in board.values():
        assert row["elo_lo"] <= row["elo"] <= row["elo_hi"]


def test_command_prints_intervals_writes_a_png_and_json(sqlite_url, tmp_path, capsys):
    from labeling.db import open_store

    engine = open_store(sqlite_url)
    build_pairwise_store(engine)
    engine.dispose()
    png = tmp_path / "board.png"
    assert main(["--store", sqlite_url, "--project", "p", "--bootstrap", "200", "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "interval" in text and "m-good" in text and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["--store", sqlite_url, "--project", "p", "--bootstrap", "200", "--json"]) == 0
    good = json.loads(capsys.readouterr().out)["leaderboard"][0]
    assert good["model"] == "m-good" and good["elo_lo"] < good["elo"] < good["elo_hi"]
