"""Maths: the final answer is extracted, parsed as a number and compared with a tolerance.

Where the final answer is, in order of trust:
  1. the last LaTeX `\\boxed{...}` (or `\\fbox{...}`), the MATH convention (Hendrycks et al. 2021);
  2. the text after the last "answer is" / "answer:" / "####" (GSM8K's marker, Cobbe et al. 2021);
  3. the last number in the response.
Numbers may be written 1,234.5 / -3 / 2.5e3 / 3/4 / \\frac{3}{4} / \\dfrac{3}{4} / \\frac34 / 50% (= 50),
with units or currency around them ("12 cm", "$5"), which are ignored.

Partial credit: within `tolerance` (relative, with `abs_tolerance` near zero) scores 1; with
`partial_tolerance` > 0, a relative error e between the two scores 1 - e / partial_tolerance,
so a near miss earns something and the reward is not a cliff.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from align.graders.base import Grade, checked

_NUMBER = r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+−]?\.\d+"
_FRACTION = re.compile(rf"({_NUMBER})\s*/\s*({_NUMBER})")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}|\\[dt]?frac\s*(\d)\s*(\d)")
_ANY_NUMBER = re.compile(rf"{_LATEX_FRAC.pattern}|(?:{_NUMBER})(?:\s*/\s*(?:{_NUMBER}))?\s*%?")
_ANSWER_MARKER = re.compile(r"(?:answer\s*(?:is|:)|####)", re.IGNORECASE)


def boxed_contents(text: str) -> str | None:
    """The contents of the last \\boxed{...} / \\fbox{...}, braces balanced, or None."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for i in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[brace + 1:i]
    return None  # unbalanced: not a box we can trust


def parse_number(text: str) -> float | None:
    """The first number written in `text` (a fraction, a LaTeX fraction, a percentage), as a float."""
    text = text.replace("\\!", "").replace("{,}", ",").replace("\\%", "%").replace("\\left", "").replace("\\right", "")
    match = _ANY_NUMBER.search(text)
    if match is None:
        return None
    try:
        return _value(match.group(0))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def _value(token: str) -> float:
    token = token.strip()
    latex = _LATEX_FRAC.fullmatch(token)
    if latex:
        num, den = (latex.group(1), latex.group(2)) if latex.group(1) is not None else (latex.group(3), latex.group(4))
        return float(_value(num) / _value(den))
    token = token.rstrip("%").strip()  # a percent sign is a unit like any other: "50%" is 50
    fraction = _FRACTION.fullmatch(token)
    if fraction:
        return float(Fraction(_plain(fraction.group(1))) / Fraction(_plain(fraction.group(2))))
    return float(_plain(token))


def _plain(number: str) -> str:
    return number.replace(",", "").replace("−", "-").replace("+", "")


def final_answer(text: str) -> tuple[str | None, str]:
    """(the text that holds the final answer, where it was found)."""
    boxed = boxed_contents(text)
    if boxed is not None:
        return boxed, "boxed"
    markers = list(_ANSWER_MARKER.finditer(text))
    if markers:
        return text[markers[-1].end():], "marker"
    numbers = list(_ANY_NUMBER.finditer(text))
    if numbers:
        return numbers[-1].group(0), "last number"
    return None, "none"


def math_answer(prompt, response, reference, tolerance: float = 1e-6, abs_tolerance: float = 1e-9,
                partial_tolerance: float = 0.0) -> Grade:
    """1 when the final number equals the reference within `tolerance`; see the module head."""
    text, bad = checked(response)
    if bad is not None:
        return bad
    # a worked reference ("... #### 72", "... \\boxed{72}") holds its answer where a response would
    expected = reference if isinstance(reference, (int, float)) else parse_number(final_answer(str(reference))[0] or "")
    if expected is None:
        return Grade(0.0, f"reference {str(reference)[:40]!r} holds no number")
    answer, where = final_answer(text)
    got = parse_number(answer) if answer is not None else None
    if got is None or not math.isfinite(got):
        return Grade(0.0, "no final number found")
    if math.isclose(got, expected, rel_tol=tolerance, abs_tol=abs_tolerance):
        return Grade(1.0)
    error = abs(got - expected) / max(abs(expected), abs_tolerance)
    if partial_tolerance > 0 and error < partial_tolerance:
        return Grade(1.0 - error / partial_tolerance, f"{got:g} is {error:.2%} from {expected:g} ({where})")
    return Grade(0.0, f"{got:g} != {expected:g} ({where})")
