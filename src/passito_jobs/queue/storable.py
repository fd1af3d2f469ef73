"""What the database can store: JSON values for jsonb columns, text for text columns.

PostgreSQL refuses a NUL character in text and in jsonb strings, an unpaired surrogate cannot
be encoded as UTF-8, and JSON has no NaN or infinities. A value that breaks one of these rules
must fail the one job it belongs to, with a message that says what is wrong and where, before
it reaches a round trip that carries other jobs' outcomes too.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from typing import Any

DEFAULT_MAX_BYTES = 1024 * 1024
"""The default of PASSITO_MAX_PAYLOAD_BYTES."""

_MAX_NODES = 1_000_000  # bound the search for what is wrong in a huge value
_MAX_KEY_REPR = 40
_MAX_PATH = 200


class UnstorableValueError(ValueError):
    """A value cannot be stored as JSON; the message says what is wrong and where."""


def encode_json(value: Any, *, what: str, max_bytes: int | None = None) -> str:
    """`value` as JSON text that PostgreSQL's jsonb accepts, or UnstorableValueError.

    `what` names the value in the message ("result", "progress"): `result is not storable:
    NaN at result['r'] (JSON has no NaN or infinities)`. Dict keys that are numbers, booleans
    or None become strings, as the json module does.
    """
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except RecursionError:
        raise UnstorableValueError(f"{what} is not storable: it is nested too deeply") from None
    except Exception as exc:  # a container's own methods may raise anything
        raise UnstorableValueError(_explain(value, what, exc)) from None
    # json.dumps writes NUL as the escape \u0000, which jsonb refuses; a false alarm (a string
    # holding a backslash and "u0000") is settled by the search.
    if "\\u0000" in text:
        problem = _find_problem(value, what)
        if problem:
            raise UnstorableValueError(f"{what} is not storable: {problem}")
    if text.isascii():
        size = len(text)
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise UnstorableValueError(_explain(value, what, exc)) from None
    if max_bytes is not None and size > max_bytes:
        raise UnstorableValueError(
            f"{what} is not storable: {size} bytes of JSON, more than the limit of {max_bytes} "
            "(PASSITO_MAX_PAYLOAD_BYTES)"
        )
    return text


def clean_text(text: str, max_chars: int) -> str:
    """Text a text column takes: NUL written as `\\x00`, an unpaired surrogate as `\\udXXX`,
    cut to `max_chars` (ending in "...")."""
    if len(text) > 2 * max_chars:
        text = text[: 2 * max_chars]  # escapes below at most lengthen it; no need to clean it all
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        # Only surrogates cannot be encoded as UTF-8; backslashreplace writes them as \udXXX.
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def safe_str(value: object) -> str:
    """str(value), or a placeholder when its __str__ raises (a hostile exception)."""
    try:
        return str(value)
    except Exception:  # anything may come out of user code
        return f"<{type(value).__name__} whose str() failed>"


def _explain(value: Any, what: str, exc: BaseException) -> str:
    problem = _find_problem(value, what)
    if problem is None:
        problem = clean_text(safe_str(exc), 200) or type(exc).__name__
    return f"{what} is not storable: {problem}"


def _find_problem(value: Any, what: str) -> str | None:
    """The first thing in `value` (depth first) that JSON or PostgreSQL cannot hold."""
    try:
        for node, path in _walk(value, what):
            found = _node_problem(node)
            if found is not None:
                problem, where, why = found
                return f"{problem} {where} {_short(path)}{why}"
            if isinstance(node, dict):
                for key in list(node):
                    found = _key_problem(key)
                    if found is not None:
                        problem, where, why = found
                        return f"{problem} {where} {_short(path)}{why}"
    except Exception:  # user containers may raise while we look
        return None
    return None


def _walk(value: Any, root: str) -> Iterator[tuple[Any, str]]:
    """Every node with its path, depth first, each container once (no recursion: a value may be
    nested deeper than Python's stack)."""
    stack: list[tuple[Any, str]] = [(value, root)]
    seen: set[int] = set()
    visited = 0
    while stack and visited < _MAX_NODES:
        node, path = stack.pop()
        visited += 1
        yield node, path
        if isinstance(node, dict | list | tuple):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, dict):
                children = [(item, f"{path}[{_key_repr(key)}]") for key, item in list(node.items())]
            else:
                children = [(item, f"{path}[{index}]") for index, item in enumerate(node)]
            stack.extend(reversed(children))


_NOT_FINITE = " (JSON has no NaN or infinities)"


def _node_problem(node: Any) -> tuple[str, str, str] | None:
    """(what is wrong, a preposition, why) for one node, or None."""
    if node is None or isinstance(node, bool | dict | list | tuple):
        return None
    if isinstance(node, str):
        problem = _text_problem(node)
        return None if problem is None else (problem, "in the string at", "")
    if isinstance(node, int):
        limit = sys.get_int_max_str_digits()
        if limit and node.bit_length() > limit * 3.3219:  # log2(10) bits per digit
            return f"an integer of more than {limit} digits", "at", ""
        return None
    if isinstance(node, float):
        if math.isnan(node):
            return "NaN", "at", _NOT_FINITE
        if math.isinf(node):
            return f"{'-' if node < 0 else ''}Infinity", "at", _NOT_FINITE
        return None
    return (
        f"a value of type {type(node).__name__}",
        "at",
        " (JSON holds dicts, lists, strings, numbers, booleans and None)",
    )


def _key_problem(key: Any) -> tuple[str, str, str] | None:
    if isinstance(key, str):
        problem = _text_problem(key)
        return None if problem is None else (problem, "in a key at", "")
    if isinstance(key, float) and not math.isfinite(key):
        return f"{key!r}", "as a key at", _NOT_FINITE
    if key is None or isinstance(key, int | float):
        return None
    return f"a key of type {type(key).__name__}", "at", " (keys must be strings)"


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "a NUL character (\\x00)"
    if not text.isascii():
        for char in text:
            if "\ud800" <= char <= "\udfff":
                return f"an unpaired surrogate (\\u{ord(char):04x})"
    return None


def _key_repr(key: Any) -> str:
    text = repr(key) if isinstance(key, str | int | float | bool) or key is None else type(key).__name__
    return text if len(text) <= _MAX_KEY_REPR else text[: _MAX_KEY_REPR - 4] + "...'"


def _short(path: str) -> str:
    return path if len(path) <= _MAX_PATH else path[:20] + "..." + path[-(_MAX_PATH - 23) :]
