"""`labeling leaderboard`: Bradley-Terry strengths of the models, with bootstrap intervals.

    rows = leaderboard(engine, "chat")                           # point estimates only
    rows = leaderboard(engine, "chat", rounds=1000, seed=0)      # + 95 % intervals on Elo and rank
    fig = leaderboard_figure(rows)                               # matplotlib Figure (dashboard: gr.Plot)

A *game* is one comparison between candidates of two different models: a decisive
pairwise judgment, a tie (half a win to each side), or one (better, worse) pair of a
ranking. The intervals are Chatbot Arena's (Chiang et al. 2024, §5): resample the games
with replacement, refit, and take percentiles of each model's Elo and rank over the
replicates. Every replicate is fitted at once: `bradley_terry` takes a batch of win
matrices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Engine

from labeling.choices import ranking_pairs
from labeling.snapshot import load_snapshot, to_vote


def bradley_terry(wins: np.ndarray, prior: float = 0.5, iters: int = 10_000, tol: float = 1e-10) -> np.ndarray:
    """Strengths p_i with P(i beats j) = p_i / (p_i + p_j), by Hunter's (2004) MM iteration.

    wins: (M, M) or a batch (R, M, M); wins[..., i, j] = games i won against j (a tie
    counts 1/2 to each side). prior: each model also plays `prior` virtual wins and
    `prior` virtual losses against a reference of strength 1, so a model that never
    lost keeps a finite strength.
        p_i <- (W_i + prior) / (sum_j n_ij / (p_i + p_j) + 2 prior / (p_i + 1))
    With prior = 0 (plain maximum likelihood) the scale is free; it is fixed by a
    geometric mean of 1 over the positive, finite strengths. A model without games has
    no strength (NaN) and leaves the others untouched; one that played but never won has
    the MLE p = 0, one that never lost p = inf.
    """
    wins = np.asarray(wins, dtype=float)  # (..., M, M)
    games = wins + np.swapaxes(wins, -1, -2)  # (..., M, M) n_ij
    won, lost = wins.sum(axis=-1), wins.sum(axis=-2)  # (..., M) W_i, L_i
    p = np.ones_like(won)
    if prior == 0:
        p = np.where(won + lost > 0, p, np.nan)  # no games: no strength
        p = np.where((lost == 0) & (won > 0), np.inf, p)  # never lost: the MLE is infinite
    with np.errstate(divide="ignore", invalid="ignore"):  # p in {0, inf} are limits, reached exactly
        for _ in range(iters):
            pair = p[..., :, None] + p[..., None, :]  # (..., M, M)
            denominator = np.where(games > 0, games / pair, 0.0).sum(axis=-1)
            new = (won + prior) / (denominator + (2 * prior / (p + 1) if prior else 0.0))
            # never won is the limit p = 0, also where every opponent never lost (denominator 0: 0 / 0)
            new = np.where((won + prior == 0) & (won + lost > 0), 0.0, new)
            if prior == 0:
                new = new / _geometric_mean(new)[..., None]  # the scale is free: fix it
            change = np.abs(new - p) / np.where(np.isfinite(p) & (p > 0), p, 1.0)
            p = new
            if not np.any(change > tol):  # NaN and inf - inf compare False: they never hold it up
                break
    return p


def elo(p: np.ndarray) -> np.ndarray:
    """Bradley-Terry strengths on the Elo scale: 400 log10(p / geometric mean) + 1000.

    The geometric mean runs over the models with a positive, finite strength, so a model
    without games (NaN) or without wins (p = 0, Elo -inf) leaves the others' scale alone.
    """
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore"):
        return 1000.0 + 400.0 * np.log10(p / _geometric_mean(p)[..., None])


def _geometric_mean(p: np.ndarray) -> np.ndarray:
    """Geometric mean over the last axis of the positive, finite entries only (1 where there are none)."""
    positive = np.isfinite(p) & (p > 0)
    logs = np.log(np.where(positive, p, 1.0))
    return np.exp(logs.sum(-1) / positive.sum(-1).clip(1))


def ranks(ratings: np.ndarray) -> np.ndarray:
    """Rank of each model, 1 = strongest: 1 + the number of models rated strictly higher. (..., M)."""
    r = np.nan_to_num(np.asarray(ratings, dtype=float), nan=-np.inf)
    return 1 + (r[..., None, :] > r[..., :, None]).sum(-1)


# --- games from the store ------------------------------------------------------------

@dataclass
class Games:
    """Every comparison between two different models: a[k] scored `score[k]` (1 win, 0.5 tie) against b[k]."""

    models: list[str]
    a: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))  # (G,)
    b: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))  # (G,)
    score: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (G,)

    def wins(self, weights: np.ndarray | None = None) -> np.ndarray:
        """Win matrix (M, M) (ties half each way); `weights` (R, G) game counts gives (R, M, M)."""
        M = len(self.models)
        if weights is None:
            weights = np.ones(len(self.score))
        batch = np.atleast_2d(weights).astype(float)  # (R, G)
        out = np.zeros((len(batch), M, M))
        for row, w in zip(out, batch):
            np.add.at(row, (self.a, self.b), w * self.score)
            np.add.at(row, (self.b, self.a), w * (1 - self.score))
        return out if np.ndim(weights) == 2 else out[0]


def model_games(snap, votes) -> Games:
    """The games of a project snapshot (decisive judgments and ties between different models)."""
    def model(candidate_id: int) -> str:
        return snap.candidates[candidate_id].model

    models = sorted({snap.candidates[c].model for t in snap.tasks.values() for c in t.candidate_ids})
    index = {m: i for i, m in enumerate(models)}
    rows: list[tuple[int, int, float]] = []
    for v in votes:
        if v.outcome == "tie":
            a, b = (index[model(c)] for c in snap.tasks[v.judgment.task_id].candidate_ids)
            if a != b:
                rows.append((a, b, 0.5))
        for better, worse in ranking_pairs(list(v.ranking or ())):
            if model(better) != model(worse):
                rows.append((index[model(better)], index[model(worse)], 1.0))
    a, b, score = (np.array(col) for col in zip(*rows)) if rows else (np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    return Games(models, a.astype(int), b.astype(int), score.astype(float))


def project_games(engine: Engine, project_name: str) -> Games:
    snap = load_snapshot(engine, project_name)
    votes = [v for v in (to_vote(j, snap.project.mode) for j in snap.judgments) if v is not None]
    return model_games(snap, votes)


# --- the leaderboard -------------------------------------------------------------------

def bootstrap_ratings(games: Games, prior: float, rounds: int, seed: int = 0) -> np.ndarray:
    """Elo of every model in `rounds` replicates that resample the games with replacement. -> (R, M)."""
    rng = np.random.default_rng(seed)
    G = len(games.score)
    counts = np.stack([np.bincount(rng.integers(G, size=G), minlength=G) for _ in range(rounds)])  # (R, G)
    return elo(bradley_terry(games.wins(counts), prior))


def _intervals(samples: np.ndarray, confidence: float) -> list[dict]:
    """Per model: percentile intervals of Elo and rank over the replicates in which it has a strength.

    samples (R, M) Elo per replicate. A NaN there (the resample drew none of the model's games) says
    nothing about that model, so that replicate is dropped for it alone: its neighbours keep all R, and
    `replicates` says how many each interval rests on. ±inf (never lost, never won in the resample) are
    limits the fit reaches and stay in, as order statistics (inverted_cdf: no interpolation).
    """
    tail = (1 - confidence) / 2
    rank_samples = ranks(samples)  # (R, M); a NaN model is outranked by all, so the others' ranks hold
    out = []
    for m in range(samples.shape[1]):
        kept = ~np.isnan(samples[:, m])  # (R,)
        if not kept.any():  # no games in any replicate: no Elo, and the rank below every model with games
            rank_lo, rank_hi = np.quantile(rank_samples[:, m], [tail, 1 - tail], method="inverted_cdf")
            out.append({"elo_lo": None, "elo_hi": None, "rank_lo": int(rank_lo), "rank_hi": int(rank_hi),
                        "replicates": 0})
            continue
        elo_lo, elo_hi = np.quantile(samples[kept, m], [tail, 1 - tail], method="inverted_cdf")
        rank_lo, rank_hi = np.quantile(rank_samples[kept, m], [tail, 1 - tail], method="inverted_cdf")
        out.append({"elo_lo": _finite(elo_lo), "elo_hi": _finite(elo_hi), "rank_lo": int(rank_lo),
                    "rank_hi": int(rank_hi), "replicates": int(kept.sum())})
    return out


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def leaderboard(engine: Engine, project_name: str, prior: float = 0.5, rounds: int = 0,
                confidence: float = 0.95, seed: int = 0) -> list[dict]:
    """Per model: games, wins, losses, ties, win rate (ties half) and Bradley-Terry / Elo strength.

    With `rounds` > 0 also `elo_lo`, `elo_hi` (percentile interval), `rank_lo`, `rank_hi` over
    bootstrap replicates, and `replicates`: how many of them the model had games in (its intervals
    rest on those). Values that do not exist (no games, never won under prior 0) are None.
    """
    return games_leaderboard(project_games(engine, project_name), prior, rounds, confidence, seed)


def games_leaderboard(games: Games, prior: float = 0.5, rounds: int = 0, confidence: float = 0.95,
                      seed: int = 0) -> list[dict]:
    if not games.models:
        return []
    wins = games.wins()
    ties = np.zeros_like(wins)
    tie = games.score == 0.5
    np.add.at(ties, (games.a[tie], games.b[tie]), 1)
    np.add.at(ties, (games.b[tie], games.a[tie]), 1)
    decisive = wins - ties / 2  # (M, M) decisive wins only
    strength = bradley_terry(wins, prior)
    ratings = elo(strength)
    point_rank = ranks(ratings)
    rows = []
    for i, name in enumerate(games.models):
        w, losses, t = decisive[i].sum(), decisive[:, i].sum(), ties[i].sum()
        n = w + losses + t
        rows.append({"model": name, "games": int(n), "wins": int(w), "losses": int(losses), "ties": int(t),
                     "win_rate": (w + t / 2) / n if n else None, "bt_strength": _finite(strength[i]),
                     "elo": _finite(ratings[i]), "rank": int(point_rank[i])})
    if rounds > 0 and len(games.score):
        samples = bootstrap_ratings(games, prior, rounds, seed)  # (R, M)
        for row, interval in zip(rows, _intervals(samples, confidence)):
            row.update(interval)
    return sorted(rows, key=lambda row: (row["rank"], row["model"]))


# --- text, plot and command --------------------------------------------------------------

def _num(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_leaderboard(board: list[dict]) -> str:
    with_ci = any("elo_lo" in r for r in board)
    head = "  rank  model                          elo"
    head += "       interval  rank range  reps" if with_ci else ""
    lines = [head + "  win rate  games  W-L-T"]
    for r in board:
        line = f"  {r['rank']:>4}  {r['model'][:30]:<30} {_num(r['elo'], '>6.0f'):>6}"
        if with_ci:
            span = f"{_num(r.get('elo_lo'), '.0f')} .. {_num(r.get('elo_hi'), '.0f')}"
            ranks_span = f"{r.get('rank_lo', '?')}-{r.get('rank_hi', '?')}"
            line += f"  {span:>13}  {ranks_span:<10}  {r.get('replicates', 0):>4}"
        lines.append(line + f"  {_num(r['win_rate'], '.3f'):>8}  {r['games']:>5}  {r['wins']}-{r['losses']}-{r['ties']}")
    return "\n".join(lines)


def leaderboard_figure(board: list[dict], title: str = "Bradley-Terry strength (Elo scale)"):
    """Elo with its bootstrap interval per model, strongest on top: a matplotlib Figure.

    Built without pyplot (whose figure registry is global state): the dashboard draws it in Gradio's
    worker threads, two admins at once."""
    from matplotlib.figure import Figure

    shown = [r for r in board if r["elo"] is not None][::-1]
    fig = Figure(figsize=(7, 0.45 * len(shown) + 1.5))
    ax = fig.subplots()
    y = np.arange(len(shown))
    elos = np.array([r["elo"] for r in shown])
    lo = np.array([r.get("elo_lo") if r.get("elo_lo") is not None else r["elo"] for r in shown])
    hi = np.array([r.get("elo_hi") if r.get("elo_hi") is not None else r["elo"] for r in shown])
    ax.errorbar(elos, y, xerr=[elos - lo, hi - elos], fmt="o", capsize=4)
    ax.set_yticks(y, [r["model"] for r in shown])
    ax.set_xlabel("Elo (1000 = geometric mean); bars: bootstrap interval")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


PLOT_TYPES = (".png", ".svg", ".pdf")


def check_plot(path: str, overwrite: bool) -> None:
    """--plot names a new file of a type matplotlib writes in an existing directory (prefloop.outputs' rule),
    checked before the store is read: no `DIR/.png`, no file replaced without --overwrite."""
    from prefloop.errors import InputError
    from prefloop.outputs import check_output_file

    out = check_output_file(path, "--plot", replace=overwrite, overwrite_flag="--overwrite", make_dirs=False)
    if out.suffix.lower() not in PLOT_TYPES:
        raise InputError(f"--plot {path}: expected a file name ending in {', '.join(PLOT_TYPES)}")


def main(argv: list[str] | None = None) -> int:
    import json

    from labeling.db import open_store
    from labeling.leaderboard_config import LeaderboardConfig
    from prefloop.config import parse_config

    cfg = parse_config(LeaderboardConfig, argv, prog="labeling leaderboard")
    if cfg.plot:
        check_plot(cfg.plot, cfg.overwrite)
    engine = open_store(cfg.store, create=False)  # a reader: a mistyped --store creates nothing
    try:
        board = leaderboard(engine, cfg.project, cfg.prior, cfg.bootstrap, cfg.confidence, cfg.seed)
    finally:
        engine.dispose()
    if cfg.plot and board:
        leaderboard_figure(board).savefig(cfg.plot, dpi=120)
    if cfg.json:
        print(json.dumps({"leaderboard": board}, indent=2))
    else:
        print(format_leaderboard(board) if board else "no models")
        if cfg.plot and board:
            print(f"chart: {Path(cfg.plot)}")
    return 0
