"""What every grader shares: the `Grade` it returns and the cleaning of an untrusted response.

A grader is a pure function `(prompt, response, reference, **options) -> Grade`. `Grade` is a
float in [0, 1] that also carries `why` (a short reason, empty for a full score), so a caller
that wants a number uses it as one and a caller that logs reasons reads `grade.why`.
Graders never raise on a malformed answer: they return `Grade(0.0, "why")`. Bad grader
*options* (a typo in the YAML) are the user's error and raise `GraderSpecError` at load time.
"""

from __future__ import annotations

import re
import unicodedata

from prefloop.errors import InputError

# Longer answers score 0 instead of being parsed: a regex or a JSON parser on megabytes of
# model output would stall a training step, and padding an answer is a known reward hack.
MAX_RESPONSE_CHARS = 20_000


class GraderSpecError(InputError):
    """A grader spec that cannot work: unknown grader, unknown option, bad weight (one line, no traceback)."""


class Grade(float):
    """A score in [0, 1] with the reason it is not 1 (`why`)."""

    why: str

    def __new__(cls, score: float, why: str = "") -> "Grade":
        self = super().__new__(cls, score)
        self.why = why
        return self

    def __repr__(self) -> str:
        return f"Grade({float(self):.4g}{', ' + repr(self.why) if self.why else ''})"


def as_text(response) -> str | None:
    """The response as clean str, or None when it cannot be graded.

    Bytes that are not UTF-8 and lone surrogates (which cannot be encoded, so would raise
    later in sqlite3 or json) become U+FFFD; NUL bytes go, as no grader wants them.
    """
    if isinstance(response, (bytes, bytearray)):
        response = bytes(response).decode("utf-8", errors="replace")
    if not isinstance(response, str):
        return None
    return response.encode("utf-8", errors="replace").decode("utf-8").replace("\x00", "")


def checked(response) -> tuple[str | None, Grade | None]:
    """(text, None) for a gradable response, else (None, a zero Grade saying why).

    Test the Grade with `is not None`: Grade(0.0) is falsy, like the float it is.
    """
    text = as_text(response)
    if text is None:
        return None, Grade(0.0, f"response is {type(response).__name__}, not text")
    if len(text) > MAX_RESPONSE_CHARS:
        return None, Grade(0.0, f"response is {len(text)} characters, over the limit of {MAX_RESPONSE_CHARS}")
    return text, None


def normalise(text: str) -> str:
    """Case- and whitespace-insensitive form: NFKC, casefolded, runs of whitespace as one space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)


def fenced_block(text: str, languages: tuple[str, ...]) -> str | None:
    """The last ``` code block whose language is one of `languages` (or unnamed), else None."""
    blocks = [body for lang, body in _FENCE.findall(text) if lang.lower() in languages + ("",)]
    return blocks[-1] if blocks else None


def prompt_text(prompt) -> str:
    """The last user message of a conversation, or the prompt itself when it is a string."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else ""
    return ""
