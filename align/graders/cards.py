"""The GeneralPoints grader: partial credit for card arithmetic (rules and scoring in align/graders/generalpoints.py)."""

from __future__ import annotations

from collections import Counter

from align.graders.base import Grade, checked
from align.graders.generalpoints import NotAnExpression, evaluate, extract_expression


def generalpoints(prompt, response, reference) -> Grade:
    """Partial credit for a valid expression, the right cards and the target; see the module head."""
    text, bad = checked(response)
    if bad is not None:
        return bad
    values, target = list(reference["values"]), int(reference["target"])
    try:
        value, used = evaluate(extract_expression(text))
    except NotAnExpression as err:
        return Grade(0.0, f"not a valid expression: {err}")
    common = sum((Counter(used) & Counter(values)).values())
    cards_f1 = 2 * common / (len(used) + len(values)) if used else 0.0
    score = 0.2 + 0.3 * cards_f1
    if cards_f1 < 1:
        return Grade(score, f"uses {sorted(used)}, the cards are {sorted(values)}")
    if value == target:
        return Grade(1.0)
    closeness = max(0.0, 1.0 - float(abs(value - target)) / abs(target)) if target else 0.0
    return Grade(score + 0.25 * closeness, f"equals {float(value):g}, not {target}")
