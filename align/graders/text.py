"""String checks and text similarity.

  string_check  exact / contains / regex match against the reference, case and whitespace normalised
  token_f1      SQuAD's token-level F1 (Rajpurkar et al. 2016, §5 "Evaluation"): articles and
                punctuation dropped, F1 of the bag-of-tokens overlap; partial credit by construction
"""

from __future__ import annotations

import functools
import re
import string
from collections import Counter

import re2

from align.graders.base import Grade, GraderSpecError, checked, normalise

MODES = ("exact", "contains", "regex")


def string_check(prompt, response, reference, mode: str = "exact", case_sensitive: bool = False) -> Grade:
    """1 if the response matches the reference under `mode`, else 0.

    A list of references means "any of these". `regex` takes the reference as the pattern
    (searched, not anchored; add ^...$ to anchor) and matches the un-normalised response with
    RE2, in time linear in the answer (Python's `re` backtracks: `^(a+)+$` on 'a' * 40 + '!' runs
    for minutes); RE2 has no backreferences or lookaround.
    """
    if mode not in MODES:
        raise GraderSpecError(f"string_check: mode {mode!r} is not one of {', '.join(MODES)}")
    text, bad = checked(response)
    if bad is not None:
        return bad
    references = reference if isinstance(reference, list) else [reference]
    fold = (lambda s: " ".join(s.split())) if case_sensitive else normalise
    for ref in map(str, references):
        if mode == "regex":
            hit = regex_search(compiled_regex(ref, case_sensitive), text)
        elif mode == "contains":
            hit = fold(ref) in fold(text)
        else:
            hit = fold(ref) == fold(text)
        if hit:
            return Grade(1.0)
    return Grade(0.0, f"no {mode} match")


@functools.lru_cache(maxsize=1024)
def compiled_regex(pattern: str, case_sensitive: bool = False):
    """`pattern` compiled by RE2 (GraderSpecError when it is not an RE2 regex: no backreferences or lookaround)."""
    options = re2.Options()
    options.case_sensitive, options.log_errors, options.never_capture = case_sensitive, False, True
    try:
        return re2.compile(pattern, options)._regexp
    except re2.error as err:
        message = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else str(err)
        raise GraderSpecError(f"string_check: reference {pattern[:80]!r} is not an RE2 regex ({message})") from None


def regex_search(regexp, text: str) -> bool:
    """Whether RE2 finds the pattern in `text`. The compiled RE2 object directly: re2's Python `search` maps
    byte offsets back to characters (20 us a call); a yes/no needs none of that (2 us; `re` takes 0.6)."""
    data = text.encode("utf-8")
    return regexp.Match(re2._re2.RE2.Anchor.UNANCHORED, data, 0, len(data))[0] != (-1, -1)


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def squad_tokens(text: str) -> list[str]:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, split on whitespace."""
    return _ARTICLES.sub(" ", normalise(text).translate(_PUNCTUATION)).split()


def token_f1(prompt, response, reference) -> Grade:
    """F1 = 2PR / (P + R) over the multiset of tokens shared by response and reference (best over a list)."""
    text, bad = checked(response)
    if bad is not None:
        return bad
    references = reference if isinstance(reference, list) else [reference]
    predicted = Counter(squad_tokens(text))
    best = 0.0
    for ref in references:
        gold = Counter(squad_tokens(str(ref)))
        common = sum((predicted & gold).values())
        if common:
            precision, recall = common / sum(predicted.values()), common / sum(gold.values())
            best = max(best, 2 * precision * recall / (precision + recall))
    return Grade(best, "" if best == 1.0 else "partial token overlap" if best else "no token overlap")
