"""Graders for reinforcement fine-tuning: pure functions `(prompt, response, reference, **options) -> Grade`.

A `Grade` is a float in [0, 1] carrying `why` it is not 1. Each family lives in its own module;
`GRADERS` maps a name to its function, as align/losses.py's `LOSSES` does for losses:

  string_check, token_f1          text.py        exact / contains / regex; SQuAD token F1
  math                            maths.py       final number (boxed, "answer is", last) with tolerance
  json_fields                     structured.py  JSON answer, each expected field scored on its own
  sql                             sql.py         read-only SQLite sandbox; parse / columns / rows credit
  sections, length, repetition    form.py        required sections, a soft length band, distinct n-grams
  python                          python.py      the user's own `module:function`
  judge                           judge.py       a language model's P(Yes) under a rubric
  generalpoints                   cards.py       card arithmetic (Chu et al. 2025; align/graders/generalpoints.py)

`grade(name, ...)` is the safe entry point: a grader that fails on an answer scores 0 and says
why; only a wrong *spec* (unknown grader or option) raises, as GraderSpecError. Every grade runs
under a `Budget` (wall clock, memory; align/graders/budget.py): `python` and `sql` in a worker
process killed at the deadline, the rest in process, bounded by construction. Weighted mixes (and
the reward model as one component) are in align/graders/mix.py. Nothing here imports torch except
the judge, when it is used.
"""

from __future__ import annotations

import math
import time

from align.graders.base import Grade, GraderSpecError
from align.graders.budget import DEFAULT_BUDGET, ISOLATED, Budget, elapsed_check, worker_for
from align.graders.cards import generalpoints
from align.graders.form import length, repetition, sections
from align.graders.judge import model_judge
from align.graders.maths import math_answer
from align.graders.python import python_function
from align.graders.sql import sql_result
from align.graders.structured import json_fields
from align.graders.text import string_check, token_f1

GRADERS = {
    "string_check": string_check,
    "token_f1": token_f1,
    "math": math_answer,
    "json_fields": json_fields,
    "sql": sql_result,
    "sections": sections,
    "length": length,
    "repetition": repetition,
    "python": python_function,
    "judge": model_judge,
    "generalpoints": generalpoints,
}

__all__ = ["GRADERS", "Budget", "Grade", "GraderSpecError", "grade"]


def grade(name: str, prompt, response, reference, *, budget: Budget | None = None, **options) -> Grade:
    """GRADERS[name](...) under `budget` (the defaults when None), made total: see run_grader."""
    if name not in GRADERS:
        raise GraderSpecError(f"unknown grader {name!r}; known: {', '.join(GRADERS)}")
    budget = budget or DEFAULT_BUDGET
    if name in ISOLATED:
        return worker_for(budget).grade_many([(name, prompt, response, reference, options)])[0]
    start = time.perf_counter()
    return elapsed_check(start, budget, run_grader(name, prompt, response, reference, options))


def run_grader(name: str, prompt, response, reference, options: dict) -> Grade:
    """GRADERS[name](...) in this process: any failure on this answer becomes Grade(0, why), the score is in [0, 1]."""
    try:
        result = GRADERS[name](prompt, response, reference, **options)
    except GraderSpecError:
        raise
    except TypeError as err:
        if "unexpected keyword argument" in str(err):  # a wrong option: the spec's fault, say so
            raise GraderSpecError(f"grader {name!r}: {err}") from None
        return Grade(0.0, f"{name} failed: TypeError: {str(err)[:160]}")
    except MemoryError:  # past the worker's RLIMIT_AS
        return Grade(0.0, "over memory")
    except (Exception, RecursionError) as err:  # noqa: BLE001 - no answer may stop a run
        return Grade(0.0, f"{name} failed: {type(err).__name__}: {str(err)[:160]}")
    score = float(result)
    if not math.isfinite(score):
        return Grade(0.0, f"{name} returned {score}")
    return Grade(min(1.0, max(0.0, score)), getattr(result, "why", ""))
