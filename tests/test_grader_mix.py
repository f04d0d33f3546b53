"""Weighted mixes of graders from YAML or per row, with the reward model as a component."""

import math
import re

import pytest

from align.graders import GraderSpecError
from align.graders.mix import GraderMix, GraderSpec, load_grader_spec, parse_grader_spec


def test_spec_forms():
    assert parse_grader_spec("math") == (GraderSpec("math"),)
    assert parse_grader_spec({"name": "math", "tolerance": 0.1}) == (GraderSpec("math", 1.0, {"tolerance": 0.1}),)
    mix = parse_grader_spec({"graders": [{"name": "math", "weight": 0.5}, "length"]})
    assert [(s.name, s.weight) for s in mix] == [("math", 0.5), ("length", 1.0)]


@pytest.mark.parametrize("spec, message", [
    ("nope", "unknown grader 'nope'"),
    ({"name": "math", "tolerence": 1}, "math has no option(s) tolerence"),
    ({"name": "math", "weight": -1}, "weight must be a number >= 0"),
    ({"name": "math", "weight": "high"}, "weight must be"),
    ({"graders": []}, "no graders"),
    ({"graders": ["math"], "extra": 1}, "a mix holds only 'graders'"),
    ({"graders": [{"name": "math", "weight": 0}]}, "weights sum to 0"),
    ({"name": "reward_model"}, "needs 'path'"),
    (42, "expected a grader name"),
])
def test_bad_specs_are_one_line_errors_naming_the_entry(spec, message):
    with pytest.raises(GraderSpecError, match=re.escape(message)) as err:
        parse_grader_spec(spec, where="row 3: grader")
    assert "\n" not in str(err.value) and str(err.value).startswith("row 3: grader")


def test_weighted_mix_by_hand_and_per_grader_columns(tmp_path):
    path = tmp_path / "mix.yaml"
    path.write_text("graders:\n  - {name: math, weight: 0.5}\n  - {name: length, weight: 0.3, max_words: 4}\n"
                    "  - {name: string_check, weight: 0.2, mode: contains}\n")
    mix = GraderMix(load_grader_spec(path))
    out = mix(["q", "q"], ["The answer is 4", "I think the answer is 5 maybe"], ["4", "4"])
    # row 0: math 1, length 1 (4 words), contains "4" 1 -> 1.0
    # row 1: math 0, length 1 - (7 - 4)/4 = 0.25, contains 0 -> (0.3 * 0.25) / 1.0
    assert out.scores == pytest.approx([1.0, 0.075])
    assert out.components["length"] == pytest.approx([1.0, 0.25])
    assert out.reasons[0] == "" and "math:" in out.reasons[1]


def test_rows_bring_their_own_specs_and_relative_weights():
    mix = GraderMix("math")
    own = parse_grader_spec([{"name": "token_f1", "weight": 3}, {"name": "repetition", "weight": 1}])
    out = mix(["q", "q"], ["7", "cat cat cat cat"], ["7", "cat"], [None, own])
    # row 1: token F1: 1 common of 4 predicted -> P 1/4, R 1 -> 0.4; repetition: 2 distinct... 1 of 2 trigrams
    assert out.scores[0] == 1.0
    assert out.scores[1] == pytest.approx((3 * 0.4 + 1 * 0.5) / 4)
    assert out.components["math"] == [1.0, None] and out.components["token_f1"] == [None, pytest.approx(0.4)]
    with pytest.raises(GraderSpecError, match="no default"):
        GraderMix()(["q"], ["a"], ["a"])


def test_a_grader_used_twice_gets_two_columns():
    mix = GraderMix([{"name": "length", "max_words": 1}, {"name": "length", "min_words": 3}])
    out = mix(["q"], ["two words"], [None])
    assert set(out.components) == {"length", "length_2"}


def test_reward_model_component_is_a_squashed_reward_scorer(tmp_path, smollm2_dir):
    from reward_model.scorer import RewardScorer
    from reward_model.testing import build_tiny_reward_model

    rm_dir = build_tiny_reward_model(tmp_path / "rm")
    prompts, responses = ["Say hello.", "Name a colour."], ["Hello there!", "Blue."]
    raw = RewardScorer.from_pretrained(rm_dir).score(prompts, responses)
    mix = GraderMix([{"name": "reward_model", "path": str(rm_dir), "weight": 0.5, "temperature": 2.0},
                     {"name": "string_check", "weight": 0.5, "mode": "contains"}])
    out = mix(prompts, responses, ["hello", "red"])
    squashed = [1 / (1 + math.exp(-r / 2.0)) for r in raw]
    assert out.components["reward_model"] == pytest.approx(squashed, abs=1e-5)
    assert out.scores == pytest.approx([0.5 * squashed[0] + 0.5, 0.5 * squashed[1]], abs=1e-5)
