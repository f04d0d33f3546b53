"""Structured extraction: the answer must be a JSON object; each expected field is scored on its own.

The reference is the expected object `{field: value}`. The score is the (weighted) mean of the
field scores, so an extraction with three of four fields right earns 0.75. How a field is
compared is set per field in `fields` (default `normalised`):

  exact       value == expected with JSON's types: "3" is not 3, but 31.0 is 31 (JSON has one number type)
  normalised  strings compared case- and whitespace-insensitively; numbers numerically;
              lists/objects compared element by element after the same normalisation
  numeric     both parsed as numbers (units stripped, as the maths grader does, with its bounds: an
              expression such as "1e999999999/1" is refused, not computed) within `tolerance`

The JSON may stand alone or in a ```json block. A missing field scores 0 for that field.
Nested fields are addressed with dots ("address.city").
"""

from __future__ import annotations

import json
import math

from align.graders.base import Grade, GraderSpecError, checked, fenced_block, normalise
from align.graders.maths import NotANumber, chain_value

COMPARISONS = ("exact", "normalised", "numeric")


def json_fields(prompt, response, reference, fields: dict | None = None, tolerance: float = 1e-6,
                weights: dict | None = None) -> Grade:
    """Mean over the reference's fields of that field's score; see the module head."""
    expected = _as_object(reference)
    if expected is None:
        raise GraderSpecError("json_fields: the reference must be a JSON object of expected fields")
    fields, weights = fields or {}, weights or {}
    for name, how in fields.items():
        if how not in COMPARISONS:
            raise GraderSpecError(f"json_fields: field {name!r}: comparison {how!r} is not one of {COMPARISONS}")
    text, bad = checked(response)
    if bad is not None:
        return bad
    got = parse_json_object(text)
    if got is None:
        return Grade(0.0, "the answer is not a JSON object")
    flat_expected = flatten(expected)
    if not flat_expected:
        return Grade(1.0)
    flat_got = flatten(got)
    total, score, wrong = 0.0, 0.0, []
    for name, value in flat_expected.items():
        weight = float(weights.get(name, 1.0))
        ok = name in flat_got and field_matches(flat_got[name], value, fields.get(name, "normalised"), tolerance)
        total, score = total + weight, score + weight * ok
        if not ok:
            wrong.append(name)
    return Grade(score / total if total else 0.0, f"wrong or missing: {', '.join(wrong)[:200]}" if wrong else "")


def parse_json_object(text: str) -> dict | None:
    """The object in `text` (whole, or the last ```json block), else None; never raises."""
    for candidate in (text.strip(), fenced_block(text, ("json",))):
        if not candidate:
            continue
        try:
            value = json.loads(candidate)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the stack
            continue
        if isinstance(value, dict):
            return value
    return None


def _as_object(reference) -> dict | None:
    if isinstance(reference, str):
        reference = parse_json_object(reference)
    return reference if isinstance(reference, dict) else None


def flatten(obj: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay whole values."""
    out = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def field_matches(got, expected, how: str, tolerance: float) -> bool:
    if how == "exact":
        return same_json(got, expected)
    if how == "numeric":
        a, b = _number(got), _number(expected)
        return a is not None and b is not None and math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)
    return _normalised(got) == _normalised(expected)


def same_json(a, b) -> bool:
    """Equal as JSON values: numbers by value whatever Python type the parser chose, the rest by type and value."""
    if _is_number(a) and _is_number(b):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    return a == b


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return _float(value)
    if not isinstance(value, str):
        return None
    try:
        return chain_value(value)
    except (NotANumber, OverflowError):
        return None


def _normalised(value):
    if isinstance(value, str):
        number = _number(value) if value.strip().lstrip("-+").replace(".", "", 1).isdigit() else None
        return number if number is not None else normalise(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return _float(value)
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    if isinstance(value, dict):
        return {normalise(str(k)): _normalised(v) for k, v in value.items()}
    return value


def _float(value: int | float) -> float:
    """float(value); an integer beyond float's range (JSON allows 4,000 digits) is infinite, not an error."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf
