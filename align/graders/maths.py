"""Maths: the final answer is extracted, parsed as a number and compared with a tolerance.

Where the final answer is, in order of trust:
  1. the last LaTeX `\\boxed{...}` (or `\\fbox{...}`), the MATH convention (Hendrycks et al. 2021);
  2. the text after the last "answer is" / "answer:" / "####" (GSM8K's marker, Cobbe et al. 2021);
  3. the last number in the response.
Numbers may be written 1,234.5 / -3 / 2.5e3 / 3/4 / \\frac{3}{4} / \\dfrac{3}{4} / \\frac34 / 50% (= 50),
with units or currency around them ("12 cm", "$5"), which are ignored.

The answer is the final number: numbers joined by operators and "=" form a chain, and the value
after its last "=" is the answer ("The answer is 2 + 3 = 5" is 5). A chain that ends in an
unevaluated expression ("2 + 3", "10**10**10") holds no final number and scores 0: the grader
never computes what an answer writes. Numbers are bounded before any arithmetic (at most
MAX_NUMBER_CHARS characters, exponents within +-MAX_EXPONENT), so "1e99999999/3" is refused in
microseconds instead of building a 100-million-digit integer.

Partial credit: within `tolerance` (relative, with `abs_tolerance` near zero) scores 1; with
`partial_tolerance` > 0, a relative error e between the two scores 1 - e / partial_tolerance,
so a near miss earns something and the reward is not a cliff.
"""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction

from align.graders.base import Grade, checked

_NUMBER = r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+−]?\.\d+"
_FRACTION = re.compile(rf"({_NUMBER})\s*/\s*({_NUMBER})")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}|\\[dt]?frac\s*(\d)\s*(\d)")
_ANY_NUMBER = re.compile(rf"{_LATEX_FRAC.pattern}|(?:{_NUMBER})(?:\s*/\s*(?:{_NUMBER}))?\s*%?")
_ANSWER_MARKER = re.compile(r"(?:answer\s*(?:is|:)|####)", re.IGNORECASE)
# what joins two numbers into an expression (or an equation); a signed number right after one joins too
_JOINS = {"+", "-", "−", "*", "**", "^", "×", "÷", "·", "/", "\\times", "\\cdot", "\\div", "="}
MAX_NUMBER_CHARS = 100  # longer numbers are not answers: refused before parsing
MAX_EXPONENT = 400  # beyond float's range either way (1e308), and Fraction("1e99999999") would take minutes
_EXPONENT = re.compile(r"[eE]([-+]?\d+)")


class NotANumber(ValueError):
    """The final answer is no number we compute: out of range, or an unevaluated expression."""


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
    match = _ANY_NUMBER.search(_clean(text))
    if match is None:
        return None
    try:
        return _value(match.group(0))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def _clean(text: str) -> str:
    return text.replace("\\!", "").replace("{,}", ",").replace("\\%", "%").replace("\\left", "").replace("\\right", "")


def chain_value(text: str, last: bool = False) -> float | None:
    """The final number of the first chain of numbers in `text` (the last chain with `last`); see the module head.

    None when `text` holds no number; NotANumber when the chain ends in an expression or a number out of range.
    """
    text = _clean(text)
    chain = _last_chain(list(_ANY_NUMBER.finditer(text)), text) if last else _first_chain(text)
    if not chain:
        return None
    # the group after the chain's last "=" must be one number
    after_eq = [i for i in range(1, len(chain)) if chain[i][0] == "="]
    group = chain[after_eq[-1]:] if after_eq else chain
    if len(group) > 1:
        raise NotANumber(f"the final answer is an expression ({_span(group)[:40]!r}), not a number")
    try:
        return _value(group[0][1].group(0))
    except ZeroDivisionError:
        raise NotANumber("the final answer divides by zero") from None
    except OverflowError:
        raise NotANumber("the final number is out of range") from None


def _join(text: str, a: re.Match, b: re.Match) -> str | None:
    """The operator (or "=") between two numbers, or None when they are not one chain."""
    gap = text[a.end():b.start()].strip()
    if gap in _JOINS:
        return gap
    return "-" if not gap and b.group(0)[:1] in "-+−" else None


def _first_chain(text: str) -> list[tuple[str, re.Match]]:
    """[(the join before it, number match), ...] of the first run of joined numbers; reads no further."""
    chain: list[tuple[str, re.Match]] = []
    for b in _ANY_NUMBER.finditer(text):
        how = _join(text, chain[-1][1], b) if chain else ""
        if how is None:
            break
        chain.append((how, b))
    return chain


def _last_chain(tokens: list, text: str) -> list[tuple[str, re.Match]]:
    """The same for the run that ends at the last number."""
    if not tokens:
        return []
    chain = [("", tokens[-1])]
    for a in reversed(tokens[:-1]):
        how = _join(text, a, chain[0][1])
        if how is None:
            break
        chain[0] = (how, chain[0][1])
        chain.insert(0, ("", a))
    return chain


def _span(chain) -> str:
    return chain[0][1].string[chain[0][1].start():chain[-1][1].end()]


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
    """The number as Python writes it, refused (NotANumber) past the bounds before anything computes it."""
    plain = number.replace(",", "").replace("−", "-").replace("+", "").strip()
    exponent = _EXPONENT.search(plain)
    if len(plain) > MAX_NUMBER_CHARS or (exponent and abs(int(exponent.group(1))) > MAX_EXPONENT):
        raise NotANumber(f"the number {plain[:20]!r}... is out of range")
    return plain


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
        return _span(_last_chain(numbers, text)), "last number"  # "3 + 4 = 7", whole: the chain decides
    return None, "none"


def final_number(text: str) -> tuple[float | None, str]:
    """(the final answer's number, where it was found); None when there is none; NotANumber (module head)."""
    answer, where = final_answer(text)
    return (chain_value(answer, last=where == "last number") if answer is not None else None), where


@functools.lru_cache(maxsize=4096)
def reference_number(reference: str) -> float | None:
    """A worked reference's final number, read once: each of its G answers is graded against it."""
    try:
        return final_number(reference)[0]
    except NotANumber:
        return None


def math_answer(prompt, response, reference, tolerance: float = 1e-6, abs_tolerance: float = 1e-9,
                partial_tolerance: float = 0.0) -> Grade:
    """1 when the final number equals the reference within `tolerance`; see the module head."""
    text, bad = checked(response)
    if bad is not None:
        return bad
    # a worked reference ("... #### 72", "... \\boxed{72}") holds its answer where a response would
    expected = reference if isinstance(reference, (int, float)) else reference_number(str(reference))
    if expected is None:
        return Grade(0.0, f"reference {str(reference)[:40]!r} holds no number")
    try:
        got, where = final_number(text)
    except NotANumber as err:
        return Grade(0.0, str(err))
    if got is None or not math.isfinite(got):
        return Grade(0.0, "no final number found")
    if math.isclose(got, expected, rel_tol=tolerance, abs_tol=abs_tolerance):
        return Grade(1.0)
    error = abs(got - expected) / max(abs(expected), abs_tolerance)
    if partial_tolerance > 0 and error < partial_tolerance:
        return Grade(1.0 - error / partial_tolerance, f"{got:g} is {error:.2%} from {expected:g} ({where})")
    return Grade(0.0, f"{got:g} != {expected:g} ({where})")
