"""Format and length: graders that ignore the reference and look at the shape of the answer.

  sections    share of the required sections present (a heading or marker string each, e.g.
              "## Answer" or "<think>"), matched at the start of a line, case-insensitively
  length      1 inside a band of [min_words, max_words]; outside, linear decay to 0 at
              `slack` times the distance (a soft band, so the reward still points the way)
  repetition  1 - the share of repeated word n-grams (n = `n`): "a b a b a b" scores low.
              The distinct-n statistic of Li et al. 2016 ("A Diversity-Promoting Objective"),
              here per answer, as a penalty against degenerate loops
"""

from __future__ import annotations

from align.graders.base import Grade, GraderSpecError, checked, normalise


def sections(prompt, response, reference, required: list | None = None) -> Grade:
    """Share of `required` section markers found at the start of a line."""
    if not required:
        raise GraderSpecError("sections: give the required section markers, e.g. required: ['## Answer']")
    text, bad = checked(response)
    if bad is not None:
        return bad
    lines = [normalise(line) for line in text.splitlines()]
    missing = [m for m in required if not any(line.startswith(normalise(str(m))) for line in lines)]
    return Grade(1 - len(missing) / len(required), f"missing: {', '.join(map(str, missing))}" if missing else "")


def length(prompt, response, reference, min_words: int = 0, max_words: int | None = None,
           slack: float = 1.0) -> Grade:
    """1 inside [min_words, max_words]; 1 - distance / (slack * band edge) outside, floored at 0."""
    if max_words is not None and max_words < min_words:
        raise GraderSpecError(f"length: max_words {max_words} is below min_words {min_words}")
    if slack <= 0:
        raise GraderSpecError(f"length: slack must be > 0, got {slack}")
    text, bad = checked(response)
    if bad is not None:
        return bad
    n = len(text.split())
    if n < min_words:
        return Grade(max(0.0, 1 - (min_words - n) / (slack * min_words)), f"{n} words, fewer than {min_words}")
    if max_words is not None and n > max_words:
        return Grade(max(0.0, 1 - (n - max_words) / (slack * max(max_words, 1))), f"{n} words, more than {max_words}")
    return Grade(1.0)


def repetition(prompt, response, reference, n: int = 3) -> Grade:
    """Distinct n-grams / all n-grams of the answer's words (1 for answers shorter than n words)."""
    if n < 1:
        raise GraderSpecError(f"repetition: n must be >= 1, got {n}")
    text, bad = checked(response)
    if bad is not None:
        return bad
    words = normalise(text).split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return Grade(1.0)
    distinct = len(set(grams)) / len(grams)
    return Grade(distinct, "" if distinct == 1 else f"{1 - distinct:.0%} of {n}-grams repeat")
