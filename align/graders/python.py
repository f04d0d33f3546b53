"""A grader written by the user, named `module:function`.

The function takes `(prompt, response, reference, **options)` and returns a number (or a
`Grade`); the result is clamped to [0, 1]. It is the user's own code, trusted like a config
file, so only the operator names it (flags, config), never a dataset row (align/onpolicy/rft_data.py).
It runs in the grader worker process under the budget (align/graders/budget.py): past the time
limit or the memory limit it scores 0, and whatever it forks is killed when the grade ends.
What it raises is caught and scores 0, so a bug on one odd answer does not stop a run.
"""

from __future__ import annotations

import functools
import math

from align.graders.base import Grade, GraderSpecError


@functools.lru_cache(maxsize=64)
def load_function(spec: str):
    """The callable named by "module:function" (GraderSpecError, one line, when it is not one)."""
    from prefloop.errors import InputError
    from prefloop.gold import import_object

    if ":" not in spec:
        raise GraderSpecError(f"python: function {spec!r} must be written module:function")
    try:
        fn = import_object(spec, "grader")  # the one "module:function" importer
    except InputError as err:
        raise GraderSpecError(f"python: {err}") from None
    if not callable(fn):
        raise GraderSpecError(f"python: grader {spec}: not callable")
    return fn


def python_function(prompt, response, reference, function: str = "", options: dict | None = None) -> Grade:
    """`function(prompt, response, reference, **options)`, clamped to [0, 1]."""
    fn = load_function(function)
    try:
        value = fn(prompt, response, reference, **(options or {}))
        score = float(value)
    except MemoryError:
        raise  # grade() says "over memory"
    except Exception as err:  # noqa: BLE001 - the user's code may raise anything; the run goes on
        return Grade(0.0, f"{function} raised {type(err).__name__}: {str(err)[:120]}")
    if not math.isfinite(score):
        return Grade(0.0, f"{function} returned {score}")
    return Grade(min(1.0, max(0.0, score)), getattr(value, "why", ""))
