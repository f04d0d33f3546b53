"""Answers (and the operator's own grader code) that try to stall, exhaust or escape a grade.

Each pathological input is graded in one batch between two normal answers, through GraderMix as the
trainer grades: it must finish within its budget + 1 s, score 0 with its reason, leave no process
and no file behind, and the normal answers around it must still score 1 (the run goes on).
"""

from __future__ import annotations

import os
import sqlite3
import time

import psutil
import pytest

from align.graders import Budget, GraderSpecError, grade
from align.graders.mix import GraderMix
from align.graders.budget import _WORKERS, descendants
from grader_attack_fns import MARKER_ENV

BUDGET = Budget(time_limit=1.0, memory_mb=512)


# --- the cases ------------------------------------------------------------------------------------------

def sql_db(tmp_path) -> str:
    path = tmp_path / "tasks.db"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2);")
    conn.commit()
    conn.close()
    return str(path)


PRINTF = "SELECT " + ", ".join(["printf('%.*c', 2000000000, 'x')"] * 5)
ENDLESS = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT count(*) FROM c"

# name -> (grader spec, normal answer, its reference, hostile answer, the hostile answer's reference, why)
CASES = {
    "math 1e99999999/3": ({"name": "math"}, "The answer is 5", "5", "The answer is 1e99999999/3", "5",
                          "out of range"),
    "math 10**10**10": ({"name": "math"}, "The answer is 10", "10", "10**10**10", "10", "expression"),
    "json_fields 1e999999999/1": ({"name": "json_fields", "fields": {"a": "numeric"}}, '{"a": 3}', {"a": 3},
                                  '{"a": "1e999999999/1"}', {"a": 3}, "wrong or missing: a"),
    "string_check ^(a+)+$": ({"name": "string_check", "mode": "regex"}, "aaaa", "^(a+)+$", "a" * 40 + "!",
                             "^(a+)+$", "no regex match"),
    "sql five printf": ({"name": "sql"}, "SELECT x FROM t", "SELECT x FROM t", PRINTF, "SELECT x FROM t",
                        "timed out"),
    "sql endless CTE, row asks 1e9 s": ({"name": "sql", "time_limit": 1e9}, "SELECT x FROM t", "SELECT x FROM t",
                                        ENDLESS, "SELECT x FROM t", "timed out"),
    "python loops": ({"name": "python", "function": "grader_attack_fns:loops"}, "ok", "ok", "x", "ok",
                     "timed out"),
    "python allocates": ({"name": "python", "function": "grader_attack_fns:allocates"}, "ok", "ok", "x", "ok",
                         "over memory"),
    "python forks": ({"name": "python", "function": "grader_attack_fns:forks"}, "ok", "ok", "x", "ok", ""),
    "python forks and loops": ({"name": "python", "function": "grader_attack_fns:forks_and_loops"}, "ok", "ok",
                               "x", "ok", "timed out"),
    "python 10**10**10": ({"name": "python", "function": "grader_attack_fns:big_power"}, "ok", "ok", "x", "ok",
                          "timed out"),
}


def live_descendants() -> list[int]:
    """Processes below this one (zombies aside) other than the idle grader workers themselves."""
    workers = {p.popen.pid for w in _WORKERS.values() for p in (w.current, w.spare) if p is not None}
    out = []
    for pid in descendants(os.getpid()):
        try:
            if pid not in workers and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(autouse=True)
def marker_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(MARKER_ENV, str(tmp_path / "markers"))
    (tmp_path / "markers").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path / "markers"


@pytest.mark.parametrize("name", list(CASES))
def test_a_pathological_answer_scores_zero_within_its_budget_and_leaves_nothing(name, tmp_path, marker_dir):
    spec, good, good_ref, bad, bad_ref, why = CASES[name]
    if spec["name"] == "sql":
        spec = {**spec, "db": sql_db(tmp_path)}
    files_before = sorted(p.name for p in tmp_path.iterdir())
    mix = GraderMix(spec, budget=BUDGET)
    assert mix(["q"], [good], [good_ref]).scores == [1.0]  # the worker started and the grader imported: not timed
    start = time.perf_counter()
    out = mix(["q"] * 3, [good, bad, good], [good_ref, bad_ref, good_ref])
    elapsed = time.perf_counter() - start
    # the budget is per answer: the pathological one gets BUDGET.time_limit, the normal ones take milliseconds
    assert elapsed < BUDGET.time_limit + 1.0, f"{name}: {elapsed:.1f} s"
    assert out.scores == [1.0, 0.0, 1.0], out.reasons  # the run goes on: the answers after it are graded
    assert why in out.reasons[1]
    assert not live_descendants(), "a process outlived the grade"
    time.sleep(0.2 if "fork" not in name else 3.5)  # a surviving fork would write its marker by now
    assert not any(marker_dir.iterdir()), "a grade wrote a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before


def test_the_worker_is_replaced_after_a_kill_and_grades_again():
    slow = grade("python", "q", "x", "ok", function="grader_attack_fns:loops", budget=BUDGET)
    assert slow == 0.0 and "timed out" in slow.why
    assert grade("python", "q", "ok", "ok", function="grader_attack_fns:fine", budget=BUDGET) == 1.0


def test_many_hostile_answers_in_one_batch_cost_one_budget_each():
    mix = GraderMix({"name": "python", "function": "grader_attack_fns:loops"}, budget=Budget(time_limit=0.5))
    assert mix(["q"], ["ok"], ["ok"]).scores == [1.0]
    start = time.perf_counter()
    out = mix(["q"] * 4, ["x", "ok", "x", "ok"], ["ok"] * 4)
    assert out.scores == [0.0, 1.0, 0.0, 1.0]
    assert time.perf_counter() - start < 2 * 0.5 + 1.0


def test_a_spec_error_in_the_worker_is_still_one_line(tmp_path):
    with pytest.raises(GraderSpecError, match="cannot import") as err:
        grade("python", "q", "a", "r", function="no_such_module_here:f", budget=BUDGET)
    assert "\n" not in str(err.value)
    with pytest.raises(GraderSpecError, match="reference query fails"):
        grade("sql", "q", "SELECT 1", "SELECT nope FROM t", db=sql_db(tmp_path), budget=BUDGET)


HOSTILE_TEXT = [  # whatever else we found: long and nested inputs for the in-process graders' regexes and parsers
    "1" * 19_999, "9," * 9_999, "1/" * 9_999, "\\frac{" * 3_000, "\\boxed{" * 3_000, "answer is " * 2_000,
    "```json\n" * 2_500, "{\"a\": " * 3_000, "-" * 19_999, "1e" * 9_999, "a " * 9_999, "[" * 19_999,
    "%" * 19_999, "\u00bd" * 19_999, "\ufdfa" * 19_999,  # NFKC expands U+FDFA to 18 characters
]
IN_PROCESS = {"string_check": ("Paris", {}), "token_f1": ("the cat sat", {}), "math": ("3/4", {}),
              "json_fields": ({"a": 1}, {"fields": {"a": "numeric"}}), "sections": (None, {"required": ["## A"]}),
              "length": (None, {"max_words": 10}), "repetition": (None, {}),
              "generalpoints": ({"cards": ["2", "3"], "values": [2, 3], "target": 6}, {})}


@pytest.mark.parametrize("name", sorted(IN_PROCESS))
def test_in_process_graders_stay_fast_on_hostile_text(name):
    reference, options = IN_PROCESS[name]
    for text in HOSTILE_TEXT:
        start = time.perf_counter()
        g = grade(name, "q", text, reference, budget=BUDGET, **options)
        # in process nothing can stop a grade: it must end within the budget by construction (this hostile text
        # takes at most 0.3 s, NFKC's 18-fold expansion of U+FDFA the worst, on a 2-core CPU at load 15)
        assert time.perf_counter() - start < BUDGET.time_limit and 0.0 <= g <= 1.0, (name, text[:20])
        assert "timed out" not in g.why
