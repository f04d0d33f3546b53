"""Graders: full, partial and zero credit, and hostile answers that must score 0 without raising."""

import json

import pytest

from align.graders import GRADERS, Grade, GraderSpecError, grade
from align.graders.base import MAX_RESPONSE_CHARS
from align.graders.maths import final_answer, parse_number

HOSTILE = [
    None, 42, b"\xff\xfe not utf-8 \xc3\x28", "lone surrogate \ud800 here", "x" * (MAX_RESPONSE_CHARS + 1),
    "[" * 100_000, "\x00\x00", "", "{" * 5000 + "}" * 5000,
]
REFERENCES = {"string_check": "Paris", "token_f1": "the cat sat", "math": "3/4", "json_fields": {"a": 1},
              "sections": None, "length": None, "repetition": None,
              "generalpoints": {"cards": ["2", "3"], "values": [2, 3], "target": 6}}
OPTIONS = {"sections": {"required": ["## Answer"]}, "length": {"min_words": 1, "max_words": 10}}


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("answer", HOSTILE, ids=lambda a: repr(a)[:20])
def test_hostile_answers_score_in_range_and_never_raise(name, answer):
    g = grade(name, "q", answer, REFERENCES[name], **OPTIONS.get(name, {}))
    assert isinstance(g, Grade) and 0.0 <= g <= 1.0
    assert "failed" not in g.why  # scored by the grader itself, not rescued by grade()'s catch-all
    if answer is None or answer == 42 or (isinstance(answer, str) and len(answer) > MAX_RESPONSE_CHARS):
        assert g == 0.0 and g.why


def test_grade_is_a_float_with_a_reason():
    g = Grade(0.25, "partly")
    assert g == 0.25 and g * 2 == 0.5 and g.why == "partly" and "partly" in repr(g)
    assert json.dumps(float(g)) == "0.25"


def test_spec_errors_raise_one_line_and_answer_errors_do_not():
    with pytest.raises(GraderSpecError, match="unknown grader 'nope'"):
        grade("nope", "q", "a", "r")
    with pytest.raises(GraderSpecError, match="tolerence"):
        grade("math", "q", "1", "1", tolerence=0.1)
    with pytest.raises(GraderSpecError, match="mode 'fuzzy'"):
        grade("string_check", "q", "a", "a", mode="fuzzy")


# --- string check and token F1 -------------------------------------------------------------


@pytest.mark.parametrize("mode, response, reference, expected", [
    ("exact", "  PARIS ", "paris", 1.0),
    ("exact", "Paris, France", "paris", 0.0),
    ("exact", "new\n  york", "New York", 1.0),
    ("contains", "The capital is Paris.", "paris", 1.0),
    ("contains", "The capital is Lyon.", ["paris", "lyon"], 1.0),
    ("contains", "Rome", "paris", 0.0),
    ("regex", "Order #12345 shipped", r"#\d{5}\b", 1.0),
    ("regex", "Order #1234 shipped", r"#\d{5}\b", 0.0),
])
def test_string_check(mode, response, reference, expected):
    assert grade("string_check", "q", response, reference, mode=mode) == expected


def test_string_check_case_sensitive_and_bad_regex():
    assert grade("string_check", "q", "paris", "Paris", case_sensitive=True) == 0.0
    with pytest.raises(GraderSpecError, match="not an RE2 regex"):
        grade("string_check", "q", "x", "(unclosed", mode="regex")
    with pytest.raises(GraderSpecError, match="not an RE2 regex"):  # RE2 has no backreferences
        grade("string_check", "q", "aa", r"(a)\1", mode="regex")


def test_token_f1_partial_credit_by_hand():
    # tokens after SQuAD normalisation: response [cat, sat, on, mat], reference [cat, sat] (articles dropped)
    # common 2, precision 2/4, recall 2/2 -> F1 = 2 * 0.5 * 1 / 1.5 = 2/3
    assert grade("token_f1", "q", "The cat sat on the mat!", "the cat sat") == pytest.approx(2 / 3)
    assert grade("token_f1", "q", "Cat, sat.", "the cat sat") == 1.0
    assert grade("token_f1", "q", "dog", "the cat sat") == 0.0
    assert grade("token_f1", "q", "dog ran", ["the cat", "a dog"]) == pytest.approx(2 / 3)  # best reference


# --- maths -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [
    ("1,234.5", 1234.5), ("-3", -3), ("2.5e3", 2500), ("3/4", 0.75), ("\\frac{3}{4}", 0.75), ("\\dfrac{1}{8}", 0.125),
    ("\\frac34", 0.75), ("$5", 5), ("12 cm", 12), ("50%", 50), ("−7", -7), ("no number", None),
])
def test_parse_number(text, value):
    assert parse_number(text) == (pytest.approx(value) if value is not None else None)


def test_final_answer_prefers_boxed_then_marker_then_last_number():
    assert final_answer("try 3, then \\boxed{\\frac{1}{2}} but 9")[1] == "boxed"
    assert final_answer("so 3 + 4 = 7. The answer is 7 apples.") == (" 7 apples.", "marker")
    assert final_answer("#### 42") == (" 42", "marker")
    assert final_answer("3 + 4 = 7") == ("3 + 4 = 7", "last number")  # the chain: its value after "=" is 7
    assert final_answer("\\boxed{unbalanced") == (None, "none")


def test_math_grader_full_partial_and_zero():
    assert grade("math", "q", "It costs \\boxed{\\$12.50}.", "12.5") == 1.0
    assert grade("math", "q", "The answer is 3/4", 0.75) == 1.0
    assert grade("math", "q", "x = 0.7500001", "3/4", tolerance=1e-3) == 1.0
    assert grade("math", "q", "The answer is 12 cm", "12") == 1.0
    assert grade("math", "q", "The answer is 11", "12") == 0.0
    # partial: relative error 1/12 within partial_tolerance 0.25 -> 1 - (1/12)/0.25 = 2/3
    near = grade("math", "q", "The answer is 11", "12", partial_tolerance=0.25)
    assert near == pytest.approx(2 / 3) and "11" in near.why
    assert grade("math", "q", "The answer is 6", "12", partial_tolerance=0.25) == 0.0
    assert grade("math", "q", "I don't know", "12").why == "no final number found"
    assert grade("math", "q", "1e999", "12") == 0.0  # inf is no answer


@pytest.mark.parametrize("answer, reference, expected", [
    ("The answer is 2 + 3 = 5", 5, 1.0),  # the final number, after the last "="
    ("The answer is 2 + 3 = 5", 2, 0.0),
    ("x = 5 - 3 = 2", 2, 1.0),
    ("The answer is 12 (3 * 4).", 12, 1.0),  # a chain stops at anything but an operator
    ("10**10**10", 10, 0.0),  # an unevaluated expression is no final number
    ("\\boxed{2+3}", 5, 0.0),
    ("3-4", 4, 0.0),
    ("The answer is -5", -5, 1.0),
    ("values 5, 6, 7", 7, 1.0),
])
def test_math_grader_takes_the_final_number(answer, reference, expected):
    assert grade("math", "q", answer, reference) == expected


def test_a_worked_reference_is_read_as_an_answer_is():
    assert grade("math", "q", "so 7", "3 + 4 = 7") == 1.0
    assert grade("math", "q", "so 7", "2 + 2 = 4\n#### 7") == 1.0

# --- structured extraction ---------------------------------------------------------------------


REFERENCE_PERSON = {"name": "Ada Lovelace", "born": 1815, "city": "London", "height_cm": 165}


def test_json_fields_partial_credit_per_field():
    full = json.dumps({"name": "ada  LOVELACE", "born": "1815", "city": "London", "height_cm": 165.0, "extra": 1})
    assert grade("json_fields", "q", full, REFERENCE_PERSON) == 1.0
    three = json.dumps({"name": "Ada Lovelace", "born": 1815, "city": "Paris", "height_cm": 165})
    g = grade("json_fields", "q", three, REFERENCE_PERSON)
    assert g == 0.75 and "city" in g.why
    missing = json.dumps({"name": "Ada Lovelace"})
    assert grade("json_fields", "q", missing, REFERENCE_PERSON) == 0.25


def test_json_fields_comparisons_weights_nesting_and_fences():
    answer = ("Here you go:\n```json\n{\"born\": \"1815\", \"size\": \"165 cm\", "
              "\"address\": {\"city\": \"london\"}}\n```")
    ref = {"born": 1815, "size": 165, "address": {"city": "London"}}
    assert grade("json_fields", "q", answer, ref) == pytest.approx(2 / 3)  # "165 cm" is not normalised-equal to 165
    assert grade("json_fields", "q", answer, ref, fields={"size": "numeric"}) == 1.0
    assert grade("json_fields", "q", answer, ref, fields={"born": "exact", "size": "numeric"}) == pytest.approx(2 / 3)
    assert grade("json_fields", "q", answer, ref, weights={"born": 2.0}) == pytest.approx(3 / 4)
    # exact: JSON has one number type, so 31.0 is 31 (also inside lists and objects); "31" and true are not
    exact = {"n": "exact"}
    assert grade("json_fields", "q", '{"n": 31.0}', {"n": 31}, fields=exact) == 1.0
    assert grade("json_fields", "q", '{"n": [1.0, {"m": 2.0}]}', {"n": [1, {"m": 2}]}, fields=exact) == 1.0
    assert grade("json_fields", "q", '{"n": "31"}', {"n": 31}, fields=exact) == 0.0
    assert grade("json_fields", "q", '{"n": true}', {"n": 1}, fields=exact) == 0.0
    with pytest.raises(GraderSpecError, match="comparison 'fuzzy'"):
        grade("json_fields", "q", answer, ref, fields={"born": "fuzzy"})


@pytest.mark.parametrize("answer", ["not json", "{'single': 'quotes'}", "[1, 2]", "{\"a\": 1", "null", "[" * 15_000])
def test_json_fields_invalid_json_scores_zero(answer):
    g = grade("json_fields", "q", answer, {"a": 1})
    assert g == 0.0 and "not a JSON object" in g.why


# --- format and length -----------------------------------------------------------------------------


def test_sections_length_and_repetition():
    answer = "## Reasoning\nbecause\n## Answer\n42"
    assert grade("sections", "q", answer, None, required=["## Reasoning", "## Answer"]) == 1.0
    g = grade("sections", "q", "## answer\n42", None, required=["## Reasoning", "## Answer"])
    assert g == 0.5 and "Reasoning" in g.why
    assert grade("length", "q", "one two three", None, min_words=2, max_words=5) == 1.0
    assert grade("length", "q", "one", None, min_words=2, max_words=5) == 0.5  # 1 - 1/2
    assert grade("length", "q", " ".join(["w"] * 8), None, max_words=5) == pytest.approx(1 - 3 / 5)
    assert grade("length", "q", " ".join(["w"] * 20), None, max_words=5) == 0.0
    # "a b a b a b": 3-grams aba, bab, aba, bab -> 2 distinct of 4
    assert grade("repetition", "q", "a b a b a b", None, n=3) == 0.5
    assert grade("repetition", "q", "the quick brown fox", None) == 1.0
    with pytest.raises(GraderSpecError):
        grade("length", "q", "x", None, min_words=5, max_words=2)


# --- python and judge --------------------------------------------------------------------------------


def half_credit(prompt, response, reference, bonus=0.0):
    return 0.5 + bonus


def raises(prompt, response, reference):
    raise KeyError("boom")


def test_python_grader_calls_the_function_clamps_and_survives_its_errors():
    assert grade("python", "q", "a", "r", function="test_graders:half_credit") == 0.5
    assert grade("python", "q", "a", "r", function="test_graders:half_credit", options={"bonus": 9}) == 1.0
    g = grade("python", "q", "a", "r", function="test_graders:raises")
    assert g == 0.0 and "KeyError" in g.why
    with pytest.raises(GraderSpecError, match="cannot import"):
        grade("python", "q", "a", "r", function="no_such_module:f")
    with pytest.raises(GraderSpecError, match="module:function"):
        grade("python", "q", "a", "r", function="nocolon")


def test_model_judge_on_the_tiny_model_is_a_probability_and_deterministic(tiny_model_dir):
    first = grade("judge", "What is 2 + 2?", "4", "4", model=tiny_model_dir)
    assert 0.0 < first < 1.0
    assert grade("judge", "What is 2 + 2?", "4", "4", model=tiny_model_dir) == first
    assert grade("judge", "What is 2 + 2?", "five", "4", model=tiny_model_dir) != first
    assert grade("judge", "q", b"\xff\xfe", "4", model=tiny_model_dir) >= 0.0


def test_every_grader_is_documented_in_the_registry():
    assert all(fn.__doc__ for fn in GRADERS.values())
