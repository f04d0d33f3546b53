"""The JSON API's bodies, checked before an endpoint runs: whatever a client sends, a malformed body is
one line (`InputError`, answered 400 by labeling.app.rest), never an exception deeper down (a 500).

    body = parse_body(raw)          # size and nesting depth checked on the bytes, then json.loads
    Params(endpoint).check(body)    # names known and present, every value of its annotated type

What used to reach the store unchecked: an integer beyond SQLite's 64 bits (OverflowError when bound),
100,000 nested arrays (RecursionError in json.loads), NaN/Infinity (Python's json accepts them), a string
holding NUL (PostgreSQL refuses it in text) or a lone surrogate (no UTF-8 for it), a list where a dict of
ratings was expected. The checks are built once per endpoint from its annotations and cost a few
microseconds per call; they raise before the endpoint runs, so the one-write protocol of calls on the
event loop (labeling.db.WouldWait) is untouched.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import types
import typing
from typing import Any, Callable

from prefloop.errors import InputError

INT64 = (-(1 << 63), (1 << 63) - 1)  # SQLite's and PostgreSQL's BIGINT: a larger int cannot be bound
MAX_DEPTH = 16  # the deepest parameter (ratings) nests 3 levels with the body's object
# A JSON string (a lone trailing backslash or a missing closing quote runs to the end): it matches at every
# quote, possessively, so the scan is linear in the body's length even for a body of quotes and backslashes.
_STRING = re.compile(rb'(?s)"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_ONE_KIND = bytes.maketrans(b"{}", b"[]")  # depth is all that matters here; json.loads refuses "[}"
Check = Callable[[str, Any], None]  # (where, value) -> None, or InputError naming `where`


def parse_body(body: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of a request body (empty: {}), its nesting depth checked before it is parsed."""
    if body.count(b"[") + body.count(b"{") > max_depth:  # else no nesting can be deeper: skip the scan
        _check_depth(body, max_depth)
    try:
        return json.loads(body or b"{}", parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:  # RecursionError cannot pass the scan; kept as a net
        raise InputError(f"body: not JSON ({str(err).splitlines()[0][:200]})") from None


def _check_depth(body: bytes, max_depth: int) -> None:
    """Refuse a body whose brackets (outside strings) nest deeper than `max_depth`, in C-speed passes.

    With strings and all but the brackets deleted, and "{}" written as "[]", each pass deletes the
    innermost pairs: exactly one level of every group (bytes.replace does not rescan what it joins).
    Whatever is left after `max_depth` passes was nested deeper, or is unbalanced. A pass that deletes
    nothing ends the scan at once (1 MB of "[" costs one pass).
    """
    brackets = _STRING.sub(b"", body).translate(_ONE_KIND, _NOT_BRACKET)
    for _ in range(max_depth):
        shorter = brackets.replace(b"[]", b"")
        if shorter == brackets:
            break
        brackets = shorter
    if brackets:
        raise InputError(f"body: brackets nested over {max_depth} deep, or unbalanced")


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


class Params:
    """The parameters of one endpoint `fn(request, **params)`, from its signature and annotations."""

    def __init__(self, fn):
        self.name = fn.__name__
        hints = typing.get_type_hints(fn)
        params = list(inspect.signature(fn).parameters.values())[1:]  # the first is the request
        self.checks: dict[str, Check] = {p.name: checker(hints.get(p.name, Any)) for p in params}
        self.required = frozenset(p.name for p in params if p.default is inspect.Parameter.empty)

    def check(self, body: Any) -> None:
        if type(body) is not dict:
            raise InputError(f"body: expected a JSON object of {self.name}'s parameters, got {_kind(body)}")
        for key, value in body.items():
            check = self.checks.get(key)
            if check is None:
                raise InputError(f"parameters: unknown {_show(key)}; {self.name} takes "
                                 f"{', '.join(self.checks) or 'none'}")
            check(key, value)
        missing = self.required - body.keys()
        if missing:
            raise InputError(f"parameters: {self.name} needs {', '.join(sorted(missing))}")


def checker(hint) -> Check:
    """A check for values of the annotation `hint`: int, float, bool, str, list[X], dict[str, X], unions."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _union([a for a in args if a is not type(None)], type(None) in args)
    if origin is list or hint is list:
        return _list(checker(args[0]) if args else _json)
    if origin is dict or hint is dict:
        return _dict(checker(args[1]) if args else _json)
    return _SCALARS.get(hint, _json)


def _int(where: str, value) -> None:
    if type(value) is not int:
        raise InputError(f"{where}: expected an integer, got {_show(value)}")
    if not INT64[0] <= value <= INT64[1]:
        raise InputError(f"{where}: {_show(value)} is out of range (a 64-bit integer)")


def _float(where: str, value) -> None:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise InputError(f"{where}: expected a finite number, got {_show(value)}")


def _bool(where: str, value) -> None:
    if type(value) is not bool:
        raise InputError(f"{where}: expected true or false, got {_show(value)}")


def _str(where: str, value) -> None:
    if type(value) is not str:
        raise InputError(f"{where}: expected a string, got {_show(value)}")
    if "\0" in value:
        raise InputError(f"{where}: a NUL character is not allowed in text")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"{where}: not valid Unicode (a lone surrogate)") from None


def _json(where: str, value) -> None:
    """Any JSON value (a parameter without a narrower annotation): its strings and numbers still checked."""
    checks = {int: _int, float: _float, str: _str, bool: None, type(None): None}
    if type(value) in checks:
        if checks[type(value)]:
            checks[type(value)](where, value)
    elif type(value) is list:
        _list(_json)(where, value)
    else:
        _dict(_json)(where, value)


def _list(item: Check) -> Check:
    def check(where: str, value) -> None:
        if type(value) is not list:
            raise InputError(f"{where}: expected a list, got {_show(value)}")
        for i, x in enumerate(value):
            item(f"{where}[{i}]", x)

    return check


def _dict(item: Check) -> Check:
    def check(where: str, value) -> None:
        if type(value) is not dict:
            raise InputError(f"{where}: expected an object, got {_show(value)}")
        for key, x in value.items():
            _str(f"{where} key", key)
            item(f"{where}[{key!r}]"[:120], x)

    return check


def _union(options: list, optional: bool) -> Check:
    checks = [checker(option) for option in options]

    def check(where: str, value) -> None:
        if value is None and optional:
            return
        errors = []
        for one in checks:
            try:
                return one(where, value)
            except InputError as err:
                errors.append(err)
        raise errors[0] if len(errors) == 1 else InputError(
            f"{where}: expected {' or '.join(_name(o) for o in options)}{' or null' if optional else ''}, "
            f"got {_show(value)}")

    return check


_SCALARS: dict[Any, Check] = {int: _int, float: _float, bool: _bool, str: _str}


def _name(hint) -> str:
    origin = typing.get_origin(hint) or hint
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
            dict: "an object"}.get(origin, str(hint))


def _kind(value) -> str:
    return {list: "a list", dict: "an object", str: "a string", int: "a number", float: "a number", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


def _show(value, limit: int = 40) -> str:
    """A value as it may appear in a one-line message: repr (no raw newline), cut to `limit` characters."""
    if type(value) in (list, dict):
        return _kind(value)
    if type(value) is int and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value[:limit + 1] if type(value) is str else value)
    return text if len(text) <= limit else text[:limit] + "..."
