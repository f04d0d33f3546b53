"""`align demo`: the loop headless, here with the shipped round_demo preset pointed at the tiny model
(the real one on SmolLM2 takes ~15 minutes; its measured round table is in the README), and the
round table's Bayes ceiling against hand-computed values."""

from __future__ import annotations

import json
import math
import stat
from pathlib import Path

import pytest
import yaml

from labeling.simulate import Behaviour, p_gold_winner
from loop.demo import DemoConfig, run_demo
from prefloop.config import resolve_config
from prefloop.errors import InputError


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize("delta, behaviour, expected", [
    (0.0, Behaviour(temperature=0.5), 0.5),  # equal gold: a coin flip
    (1.0, Behaviour(temperature=0.0), 1.0),
    (-1.0, Behaviour(temperature=0.5, reliability=0.8), 0.8 * sigmoid(2.0) + 0.1),
    (2.0, Behaviour(temperature=1.0, position_bias=0.3), 0.5 * (sigmoid(2.3) + sigmoid(1.7))),
    (0.2, Behaviour(temperature=1.0, tie_threshold=0.5), 0.5),
])
def test_p_gold_winner_matches_hand_values(delta, behaviour, expected):
    assert p_gold_winner(delta, behaviour) == pytest.approx(expected, abs=1e-12)


def test_bayes_ceiling_averages_pairs_and_annotators(tmp_path):
    from loop.round_config import RoundConfig
    from loop.round_report import bayes_ceiling

    pairs = tmp_path / "pairs.test.jsonl"
    rows = [("a b", "a b c d e"), ("one two three", "one two three")]  # concise: Δ = 0.3, then 0
    pairs.write_text("".join(json.dumps({"prompt": "q", "chosen": c, "rejected": r}) + "\n" for c, r in rows))
    cfg = RoundConfig(project="p", eval_prompts="x", gold="concise",
                      simulate={"annotators": ["a", "b"], "temperature": [0.5], "reliability": [1.0, 0.6]})
    per_annotator = [sigmoid(0.3 / 0.5), 0.6 * sigmoid(0.3 / 0.5) + 0.2]
    assert bayes_ceiling(pairs, cfg) == pytest.approx((sum(per_annotator) + 2 * 0.5) / 4)


@pytest.mark.parametrize("win, line", [
    ({"rate": 0.824, "lo": 0.742, "hi": 0.884},
     "the aligned model beat the reference: gold win rate 82.4 % [74.2, 88.4]"),
    ({"rate": 0.537, "lo": 0.443, "hi": 0.628},
     "the aligned model did NOT beat the reference: gold win rate 53.7 % [44.3, 62.8] includes 50 %"),
    ({"rate": 0.3, "lo": 0.2, "hi": 0.41},
     "the aligned model did NOT beat the reference, it is worse: gold win rate 30.0 % [20.0, 41.0]"),
])
def test_verdict_says_plainly_whether_the_interval_lies_above_half(win, line):
    from loop.round_report import verdict

    assert verdict({"win_rate_gold": win, "win_rate_reward": {"rate": 0.9, "lo": 0.8, "hi": 0.95}}) == line
    assert verdict({"win_rate_gold": None, "win_rate_reward": win}) == line.replace("gold", "reward-model")


@pytest.fixture
def tiny_preset(tmp_path, tiny_model_dir):
    """round_demo as shipped, with the tiny model wherever a model is named and fewer, shorter steps."""
    cfg = yaml.safe_load(resolve_config("round_demo").read_text())
    cfg["reference"] = tiny_model_dir
    for key, n, name in (("prompts", 16, "train.jsonl"), ("eval_prompts", 12, "heldout.jsonl")):  # the first few
        shipped = Path(__file__).resolve().parent.parent / cfg[key]
        (tmp_path / name).write_text("".join(shipped.read_text().splitlines(keepends=True)[:n]))
        cfg[key] = str(tmp_path / name)
    cfg["max_new_tokens"] = 8
    cfg["reward_model"].update(model=tiny_model_dir, max_steps=3, normalize_samples=8)
    cfg["align"].update(max_steps=3, learning_rate=1e-3)
    cfg["evaluate"].update(max_new_tokens=8, num_generations=1)
    path = tmp_path / "tiny_demo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_demo_runs_a_round_prints_the_table_and_continues_the_loop(tiny_preset, tmp_path, capsys):
    out = tmp_path / "demo"
    rows = run_demo(DemoConfig(output_dir=str(out), preset=tiny_preset))
    text = capsys.readouterr().out
    assert "RM accuracy (ceiling)" in text and "gold win % vs reference" in text and "lineage:" in text
    assert "round 1: reward model" in text and "held-out accuracy" in text  # once that step ends, not only in run.json
    assert text.rstrip().splitlines()[-1].startswith("[prefloop] round 1: the aligned model ")  # the verdict, last
    [row] = rows
    assert row["round"] == 1 and row["judgments"] > 0
    assert 0.5 <= row["ceiling"] <= 1 and 0 <= row["rm_accuracy"] <= 1
    assert row["win_rate_gold"]["n"] == 12  # every held-out prompt, once
    marker = out / "demo.json"
    assert stat.S_IMODE(marker.stat().st_mode) == 0o600  # it holds the annotators' password

    rows = run_demo(DemoConfig(output_dir=str(out), preset=tiny_preset))  # the next round, same store
    assert [r["round"] for r in rows] == [1, 2] and Path(rows[1]["policy"]).parts[-3] == "round-2"
    assert rows[1]["judgments"] > 0


def _pairs(out: Path) -> dict[str, list[dict]]:
    return {split: [json.loads(line) for line in (out / "round-1" / f"pairs.{split}.jsonl").read_text().splitlines()]
            for split in ("train", "test")}


def test_one_seed_gives_the_same_exported_pairs(tiny_preset, tmp_path):
    """The annotators race over HTTP in both runs; what they judge, and so the training data, is the seed's."""
    first = tmp_path / "first"
    run_demo(DemoConfig(output_dir=str(first), preset=tiny_preset, seed=5))
    second = tmp_path / "second"
    run_demo(DemoConfig(output_dir=str(second), preset=tiny_preset, seed=5))
    pairs = _pairs(first)
    assert len(pairs["train"]) >= 10 and pairs["test"]
    assert _pairs(second) == pairs
    assert _votes(first) == _votes(second)  # and each annotator judged the same tasks


def _votes(out: Path) -> set[tuple]:
    """(task, annotator, chosen candidate) of every judgment in the demo's store."""
    from sqlmodel import Session, select

    from labeling.choices import preference
    from labeling.db import open_store
    from labeling.models import Annotator, Judgment

    engine = open_store(f"sqlite:///{out / 'store.db'}", create=False)
    try:
        with Session(engine) as s:
            return {(j.task_id, s.get(Annotator, j.annotator_id).name, preference(j.display_order, j.choice).chosen)
                    for j in s.exec(select(Judgment))}
    finally:
        engine.dispose()


def test_demo_refuses_a_directory_it_did_not_make(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="was not made by `align demo`"):
        run_demo(DemoConfig(output_dir=str(mine)))
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"


def test_demo_config_needs_a_round():
    with pytest.raises(ValueError, match="rounds=0"):
        DemoConfig(rounds=0)
