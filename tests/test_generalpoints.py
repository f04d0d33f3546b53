"""GeneralPoints: the generator, the rule variants, the solver and the partial-credit grader."""

from fractions import Fraction

import pytest

from align.graders import grade
from align.graders.generalpoints import RULES, card_value, evaluate, extract_expression, generate_tasks, reachable, solve

REF = {"cards": ["J", "3", "5", "2"], "values": [10, 3, 5, 2], "target": 24}


def gp(answer, reference=REF):
    return grade("generalpoints", "q", answer, reference)


def test_rules_value_face_cards():
    assert [card_value(c, "face10") for c in "A J Q K 7".split()] == [1, 10, 10, 10, 7]
    assert [card_value(c, "ordinal") for c in "A J Q K 10".split()] == [1, 11, 12, 13, 10]
    assert set(RULES) == {"face10", "ordinal"}


def test_solver_finds_known_solutions_and_knows_impossible_deals():
    assert Fraction(24) in reachable([8, 3, 8, 3])  # 8 / (3 - 8/3): needs fractions
    assert evaluate(solve([8, 3, 8, 3], 24))[0] == 24
    assert solve([1, 1, 1, 1], 24) is None
    assert sorted(v for v in reachable([2, 3]) if v.denominator == 1) == [-1, 1, 5, 6]


@pytest.mark.parametrize("rule", sorted(RULES))
def test_generated_tasks_are_solvable_and_their_worked_solutions_score_one(rule):
    rows = generate_tasks(20, n_cards=4, target=24, rule=rule, seed=3)
    assert len(rows) == 20 and all(r["rule"] == rule for r in rows)
    for row in rows:
        assert [card_value(c, rule) for c in row["reference"]["cards"]] == row["reference"]["values"]
        assert gp(row["solution"], row["reference"]) == 1.0
        assert ("count as 10" in row["prompt"]) == (rule == "face10")
    assert generate_tasks(20, rule=rule, seed=3) == rows  # seeded


def test_difficulty_knobs():
    easy = generate_tasks(30, n_cards=2, target=None, max_rank=5, seed=0, max_target=10)
    assert all(len(r["reference"]["values"]) == 2 and max(r["reference"]["values"]) <= 5 for r in easy)
    assert all(1 <= r["reference"]["target"] <= 10 for r in easy)
    assert len({r["reference"]["target"] for r in easy}) > 3  # targets vary
    assert all(gp(r["solution"], r["reference"]) == 1.0 for r in easy)
    faces = generate_tasks(10, n_cards=2, target=None, require_face=True, seed=1)
    assert all(set(r["reference"]["cards"]) & {"J", "Q", "K"} for r in faces)
    with pytest.raises(ValueError, match="rule"):
        generate_tasks(1, rule="jokers")
    with pytest.raises(ValueError, match="cannot find"):
        generate_tasks(1, n_cards=1, target=24, max_rank=5)


def test_out_of_distribution_rule_changes_the_answer():
    """The same deal under the ordinal rule needs the values 11/12/13: a face10 answer now uses the wrong cards."""
    ood = {"cards": ["J", "3", "5", "2"], "values": [11, 3, 5, 2], "target": 24}
    assert gp("(10 + 2) * (5 - 3)", REF) == 1.0
    assert gp("(10 + 2) * (5 - 3)", ood) < 0.5


def test_partial_credit_by_hand():
    assert gp("Answer: (10 + 2) * (5 - 3)") == 1.0
    assert gp("Values: 10, 3, 5, 2.\nAnswer: (10 + 2) * (5 - 3) = 24") == 1.0
    assert gp("(10 x 2) + (5 - 3)") == pytest.approx(0.2 + 0.3 + 0.25 * (1 - 2 / 24))  # 22, exact cards
    # uses 10, 3, 5 but not 2: F1 = 2*3/(3+4) = 6/7
    assert gp("10 * 3 - 5") == pytest.approx(0.2 + 0.3 * 6 / 7)
    assert gp("24") == pytest.approx(0.2)  # the target alone: valid, no cards
    assert gp("10 + 3 + 5 + 2 + 4") < 0.5  # an extra number
    assert gp("I cannot do this") == 0.0


@pytest.mark.parametrize("answer", [
    "__import__('os').system('touch /tmp/pwned')", "(10).__class__", "10 ** 3 ** 99", "2 << 99", "10 // 3",
    "-10 + 34", "10 / (5 - 5) + 3 + 2", "x" * 300, "(" * 500 + "1" + ")" * 500, "1e3 + 10", "True + 10",
    "10; 3", "lambda: 24", "[10, 3, 5, 2]", "10 \ud800 3", "",
])
def test_hostile_expressions_score_zero_and_run_nothing(answer):
    g = gp(answer)
    assert g == 0.0 and g.why.startswith("not a valid expression")


def test_extract_expression():
    assert extract_expression("Answer: (1 + 2) × 3 ÷ 4 = 2.25.") == "(1 + 2) * 3 / 4"
    assert extract_expression("blah\n\n3 * 8\n") == "3 * 8"
    assert evaluate("8 / 3")[0] == Fraction(8, 3)


def test_the_command_writes_tasks_and_worked_solutions_that_load_as_rft_data(tmp_path, capsys):
    from align.cli import main as align_main
    from align.onpolicy.rft_data import load_rft_dataset
    from prefloop.data import read_records

    out, sft = tmp_path / "gp.jsonl", tmp_path / "gp_sft.jsonl"
    assert align_main(["generalpoints", "--out", str(out), "--sft-out", str(sft), "--n", "5", "--n-cards", "3",
                       "--rule", "ordinal", "--seed", "4"]) == 0
    examples = load_rft_dataset(out)
    assert len(examples) == 5 and examples[0].graders[0].name == "generalpoints"
    assert examples[0].meta["rule"] == "ordinal"
    messages = read_records(sft)[0]["messages"]
    assert gp(messages[1]["content"], examples[0].reference) == 1.0
    assert align_main(["generalpoints", "--out", str(out), "--n", "1", "--n-cards", "1", "--target", "99"]) == 1
    assert "cannot find" in capsys.readouterr().err
