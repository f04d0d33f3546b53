"""Simulated and AI annotators: their choice probabilities against closed forms, and their work
through a real `labeling serve` over HTTP (never the database) landing in stats like anyone's."""

from __future__ import annotations

import math
import random

import pytest
from sqlmodel import Session, select

from _labeling_seed import PASSWORD, seed_project, seed_users, start_server
from labeling.choices import preference
from labeling.db import open_store
from labeling.models import Annotator, Judgment, Project, Task
from labeling.simulate import Behaviour, GoldAnnotator, SimulateConfig, gold_order, main, pairwise_choice
from labeling.stats import project_stats
from prefloop.gold import load_gold


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _share(draw, n=20_000) -> float:
    return sum(draw() for _ in range(n)) / n


def _near(p_hat: float, p: float, n=20_000) -> bool:
    return abs(p_hat - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-9


@pytest.mark.parametrize("delta, T, b, reliability", [(1.0, 1.0, 0.0, 1.0), (1.0, 0.5, 0.0, 1.0),
                                                      (0.0, 1.0, 0.7, 1.0), (-1.0, 2.0, 0.3, 0.6)])
def test_pairwise_choice_follows_bradley_terry_with_bias_and_reliability(delta, T, b, reliability):
    rng = random.Random(0)
    behaviour = Behaviour(temperature=T, position_bias=b, reliability=reliability)
    p_a = _share(lambda: pairwise_choice([delta, 0.0], behaviour, rng).startswith("a"))
    # reliable: sigma(delta / T + b); unreliable: a coin flip
    assert _near(p_a, reliability * sigmoid(delta / T + b) + (1 - reliability) * 0.5)


def test_plackett_luce_top_choice_is_the_softmax_of_gold_over_temperature():
    rng = random.Random(1)
    scores, T = [1.0, 0.0, -0.5], 0.8
    weights = [math.exp(s / T) for s in scores]
    for i in range(3):
        p = _share(lambda: gold_order(scores, Behaviour(temperature=T), rng)[0] == i)
        assert _near(p, weights[i] / sum(weights))


def test_temperature_zero_ties_and_much_better():
    rng = random.Random(2)
    exact = Behaviour(temperature=0.0, tie_threshold=0.5, much_better=2.0)
    assert pairwise_choice([0.2, 0.0], exact, rng) == "tie"
    assert pairwise_choice([0.0, 1.0], exact, rng) == "b_better"
    assert pairwise_choice([3.0, 0.0], exact, rng) == "a_much_better"
    assert gold_order([0.0, 2.0, 1.0], Behaviour(temperature=0.0), rng) == [1, 2, 0]


def test_config_broadcasts_or_rejects_per_annotator_values():
    from prefloop.config import ConfigError, parse_config

    cfg = parse_config(SimulateConfig, ["--url", "u", "--project", "p", "--annotators", "a", "b", "c",
                                        "--reliability", "1", "0.9", "0.5", "--temperature", "0.5"])
    assert [(x.reliability, x.temperature) for x in cfg.behaviours()] == [(1, 0.5), (0.9, 0.5), (0.5, 0.5)]
    with pytest.raises(ConfigError, match="one per annotator"):
        parse_config(SimulateConfig, ["--url", "u", "--project", "p", "--annotators", "a", "b", "--reliability",
                                      "1", "0.9", "0.5"])
    with pytest.raises(ConfigError, match="reliability"):
        parse_config(SimulateConfig, ["--url", "u", "--project", "p", "--annotators", "a", "--reliability", "2"])


GOOD, BAD = "a great and helpful answer", "a rude and wrong answer"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One real server over a SQLite file; each test labels its own project, whose tasks all have
    the gold winner as their first candidate."""
    engine = open_store(f"sqlite:///{tmp_path_factory.mktemp('sim') / 'store.db'}")
    for name in ("sim", "bias", "ai"):
        seed_project(engine, name, n_tasks=8, overlap=3, responses=[GOOD, BAD])
    seed_project(engine, "rank", n_tasks=3, mode="ranking", k=3, responses=[GOOD, "a plain answer", BAD])
    seed_users(engine, ["exact", "noisy", "biased"])
    url, app = start_server(engine)
    yield url, engine
    app.close()
    engine.dispose()


def _judgments(engine, project: str) -> list[Judgment]:
    with Session(engine) as s:
        return list(s.exec(select(Judgment).join(Task, Task.id == Judgment.task_id).join(Project)
                           .where(Project.name == project)))


def _winners(engine, project: str) -> dict[str, list[bool]]:
    """Per annotator: whether each judgment picked the gold winner (the task's first candidate)."""
    out: dict[str, list[bool]] = {}
    with Session(engine) as s:
        for j in _judgments(engine, project):
            first = s.get(Task, j.task_id).candidate_ids[0]
            name = s.get(Annotator, j.annotator_id).name
            out.setdefault(name, []).append(preference(j.display_order, j.choice).chosen == first)
    return out


def test_simulated_annotators_label_through_http_and_show_in_stats(server, monkeypatch, capsys):
    url, engine = server
    monkeypatch.setenv("SIM_PW", PASSWORD)
    assert main(["--url", url, "--project", "sim", "--annotators", "exact", "noisy", "biased",
                 "--password-env", "SIM_PW", "--gold", "positive_words", "--temperature", "0", "1", "0",
                 "--reliability", "1", "0.5", "1", "--position-bias", "0", "0", "0"]) == 0
    assert "24 judgments" in capsys.readouterr().out  # 8 tasks x overlap 3
    wins = _winners(engine, "sim")
    assert wins["exact"] == [True] * 8 and wins["biased"] == [True] * 8
    stats = project_stats(engine, "sim")
    assert stats["tasks_complete"] == 8 and {a["name"] for a in stats["annotators"]} == {"exact", "noisy", "biased"}
    judged = _judgments(engine, "sim")
    assert all(j.rationale.startswith("simulated: gold A=") and j.ms_spent is not None for j in judged)


def test_position_bias_shows_as_the_left_choice_rate(server):
    from labeling.simulate import run_annotators

    url, engine = server
    same = load_gold(lambda prompts, responses: [0.0] * len(responses))  # no gold difference: only the bias
    policy = GoldAnnotator(same, Behaviour(temperature=1.0, position_bias=3.0), seed=5)
    assert run_annotators(url, "bias", [("biased", PASSWORD, policy)]) == {"biased": 8}
    assert project_stats(engine, "bias")["left_choice_rate"] >= 6 / 8  # sigma(3) = 0.95


def test_ranking_project_gets_full_gold_orders(server):
    from labeling.simulate import run_annotators

    url, engine = server
    policy = GoldAnnotator(load_gold("positive_words"), Behaviour(temperature=0.0))
    assert run_annotators(url, "rank", [("exact", PASSWORD, policy)]) == {"exact": 3}
    with Session(engine) as s:
        for j in _judgments(engine, "rank"):
            assert j.ranking == s.get(Task, j.task_id).candidate_ids  # GOOD, plain, BAD


def test_ai_annotator_judges_through_http_with_a_local_model(server, tiny_model_dir, monkeypatch, capsys):
    from labeling.judge import ConstitutionJudge

    url, engine = server
    judge = ConstitutionJudge.load(tiny_model_dir)
    p = judge.prob_first_better([{"role": "user", "content": "Hi"}], GOOD, BAD)
    q = judge.prob_first_better([{"role": "user", "content": "Hi"}], BAD, GOOD)
    assert 0 < p < 1 and p + q == pytest.approx(1.0, abs=1e-6)  # both orders asked: no position bias left
    monkeypatch.setenv("PREFLOOP_SIM_PASSWORD", PASSWORD)
    assert main(["--url", url, "--project", "ai", "--annotators", "noisy", "--kind", "ai",
                 "--judge-model", tiny_model_dir, "--max-tasks", "3"]) == 0
    judged = _judgments(engine, "ai")
    assert len(judged) == 3 and all(j.rationale.startswith("AI judge: P(A better) =") for j in judged)


def test_a_gold_annotators_answer_is_the_same_whatever_the_shown_order():
    """The same task shown B-first gets the same response as the winner (no position bias), each time."""
    annotator = GoldAnnotator(load_gold("positive_words"), Behaviour(temperature=2.0, reliability=0.5), seed=3)
    for i in range(40):
        texts = [f"answer {i}: a good and helpful reply", f"answer {i}: a plain reply"]
        task = {"conversation": [{"role": "user", "content": f"question {i}"}],
                "responses": [{"label": "A", "text": texts[0]}, {"label": "B", "text": texts[1]}]}
        swapped = {**task, "responses": [{"label": "A", "text": texts[1]}, {"label": "B", "text": texts[0]}]}
        first, again, other = (annotator(t)["choice"][0] for t in (task, task, swapped))
        assert first == again and (first == "a") == (other == "b")


@pytest.mark.parametrize("overlap", [1, 2])
def test_fixed_judges_store_the_same_votes_in_every_run(server, overlap):
    """Three annotators race over HTTP; with a fixed seed each task is judged by the same `overlap` of them
    with the same answer, run after run (here: two projects with the same tasks)."""
    from labeling.simulate import FixedJudges, run_annotators

    url, engine = server
    names = ["exact", "noisy", "biased"]
    votes = []
    for run in ("first", "second"):
        project = f"fixed-{overlap}-{run}"
        seed_project(engine, project, n_tasks=12, overlap=overlap)
        policies = [GoldAnnotator(load_gold("positive_words"), Behaviour(temperature=1.0, reliability=r), seed=i)
                    for i, r in enumerate([1.0, 0.7, 0.4])]
        done = run_annotators(url, project, [(n, PASSWORD, p) for n, p in zip(names, policies)],
                              fixed_seed=11, judges_per_task=overlap)
        assert sum(done.values()) == 12 * overlap and min(done.values()) > 0
        votes.append(_votes(engine, project))
    assert votes[0] == votes[1]
    judges = FixedJudges(11, 3, overlap)  # and they are the ones drawn from the seed
    assert all(names.index(name) in judges.judges(_served(question)) for question, name, _ in votes[0])


def _votes(engine, project: str) -> list[tuple[str, str, str]]:
    """(question, annotator, chosen text) of every judgment in `project`."""
    from labeling.models import Candidate, Prompt

    with Session(engine) as s:
        return sorted((s.get(Prompt, s.get(Task, j.task_id).prompt_id).messages[0]["content"],
                       s.get(Annotator, j.annotator_id).name,
                       s.get(Candidate, preference(j.display_order, j.choice).chosen).text)
                      for j in _judgments(engine, project))


def _served(question: str) -> dict:
    """A task of seed_project as an annotator is served it (the order of the responses does not matter)."""
    i = int(question.split()[1].rstrip(":"))
    return {"conversation": [{"role": "user", "content": question}],
            "responses": [{"label": "AB"[j], "text": f"Answer {j} to question {i}: `{2 * i + j}`"} for j in range(2)]}
