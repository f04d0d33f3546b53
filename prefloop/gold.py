"""Gold preferences: a known reward r*(prompt, response) that simulated annotators judge by and
`align eval` measures policies against.

    gold = load_gold("positive_words")          # a rule from RULES
    gold = load_gold("my.module:my_reward")     # any callable (prompts, responses) -> list[float]
    gold(prompts, responses)                    # -> list[float]; higher is better

A gold function has the signature of a reward (`reward_model.scorer.RewardFn`): prompts are
conversations (lists of {"role", "content"}) or strings, responses are strings or assistant
messages. Rules are pure functions of the response text, so they are cheap and exact.
"""

from __future__ import annotations

import importlib
from typing import Callable, Sequence

GoldFn = Callable[[Sequence, Sequence], list]

POSITIVE = ("great", "helpful", "clear", "kind")
NEGATIVE = ("bad", "wrong", "rude", "vague")


def as_text(response) -> str:
    """A response as plain text: a string, one message, or a list of messages (contents joined)."""
    if isinstance(response, str):
        return response
    if isinstance(response, dict):
        return str(response.get("content", ""))
    return "\n".join(str(m.get("content", "")) for m in response)


def positive_words(text: str, beta: float = 1.0) -> float:
    """beta * (#positive words - #negative words): a token feature a 2-layer model learns in seconds."""
    words = text.lower().split()
    return beta * (sum(w.strip(".,!?") in POSITIVE for w in words) - sum(w.strip(".,!?") in NEGATIVE for w in words))


def concise(text: str) -> float:
    """Shorter is better, but an empty answer is worst: -(words / 10), and -10 for no words."""
    words = len(text.split())
    return -10.0 if words == 0 else -words / 10


# name -> r*(response text); extend by passing `module:function` instead.
RULES: dict[str, Callable[[str], float]] = {"positive_words": positive_words, "concise": concise}


def import_object(spec: str, what: str = "object"):
    """The attribute named by "package.module:attribute"; one-line InputError when it is not there."""
    from prefloop.errors import InputError

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InputError(f"{what} {spec!r}: expected module:function")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise InputError(f"{what} {spec}: cannot import ({err})") from err


def load_gold(spec) -> GoldFn:
    """A gold function from a rule name, a `module:function`, or a callable."""
    from prefloop.errors import InputError

    if callable(spec):
        return spec
    if spec in RULES:
        rule = RULES[spec]
        return lambda prompts, responses: [float(rule(as_text(r))) for r in responses]
    if ":" not in str(spec):
        raise InputError(f"gold {spec!r}: not a rule ({', '.join(RULES)}) nor module:function")
    fn = import_object(str(spec), "gold")
    if not callable(fn):
        raise InputError(f"gold {spec}: not callable")
    return fn
