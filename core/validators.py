"""Values PostgreSQL cannot store, refused as a ValidationError before they reach the driver.

PostgreSQL's text and jsonb hold no NUL character (\\x00), and UTF-8 has no encoding for
an unpaired surrogate (\\ud800-\\udfff, which Python strings may hold): the driver would
raise a DataError or UnicodeEncodeError mid-write. BaseModel.clean_fields applies
`validate_storable` to every field, so every full_clean() refuses such input naming
the field; services use it directly for text that is no model field (an uploaded
text, template variables). The database stays the last line.

Every JSON value the project stores also passes `validate_json_value` (through
core.models.JSONField, the one JSON field class of every app): finite numbers only,
at most JSON_MAX_DEPTH levels of nesting and JSON_MAX_BYTES serialised. jsonb refuses
NaN and Infinity, and json.dumps recurses, so a deeply nested value would raise
RecursionError in Django's own validation. Both walkers here are iterative for that
reason: any depth gives a ValidationError, never a RecursionError.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping

from django.conf import settings
from django.core.exceptions import ValidationError

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Beyond a double's range a JSON number stops being interoperable (RFC 8259 section 6):
# JavaScript and Python's json read 1e999 as Infinity. Integers are held to the same range.
_LARGEST_NUMBER = sys.float_info.max


def _reason(character: str, where: str) -> str:
    found = (
        "a NUL character (\\x00)"
        if character == "\x00"
        else f"an unpaired surrogate (\\u{ord(character):04x})"
    )
    return f"contains {found}{where}, which PostgreSQL cannot store."


def unstorable(value: object, path: str = "") -> str | None:
    """Why PostgreSQL could not store `value` (a string, or JSON-like data), or None.

    Walks dict keys and values and list items, and says where: `at ['steps'][2]`.
    Iterative, for any depth; a value that refers to itself is walked once.
    """
    pending: list[tuple[object, str]] = [(value, path)]
    seen: set[int] = set()
    while pending:
        item, where = pending.pop()
        if isinstance(item, str):
            if found := _UNSTORABLE.search(item):
                return _reason(found.group(), f" at {where}" if where else "")
            continue
        if not isinstance(item, Mapping | list | tuple) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, Mapping):
            children = []
            for key, child in item.items():
                if isinstance(key, str) and (found := _UNSTORABLE.search(key)):
                    return _reason(found.group(), f" in the key {where}[{key!r}]")
                children.append((child, f"{where}[{key!r}]"))
        else:
            children = [(child, f"{where}[{index}]") for index, child in enumerate(item)]
        pending.extend(reversed(children))  # depth first, in order: the first problem
    return None


def validate_storable(value: object) -> None:
    """Raise ValidationError if PostgreSQL could not store `value` (see `unstorable`)."""
    reason = unstorable(value)
    if reason:
        raise ValidationError(f"The value {reason}", code="unstorable")


def validate_storable_arguments(**values: object) -> None:
    """Raise one ValidationError naming every argument PostgreSQL could not store.

    For what a service must check before any model's full_clean() sees it: text it
    hashes, stores as a file or renders first.
    """
    errors = {
        name: f"The value {reason}"
        for name, value in values.items()
        if (reason := unstorable(value))
    }
    if errors:
        raise ValidationError(errors)


def validate_finite(value: object) -> None:
    """Raise ValidationError unless `value` (for a float column) is a finite double.

    NaN and infinities, and an integer beyond a double's range, which float() refuses
    with an OverflowError (shown without its digits: Python will not print them all).
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(
            "%(value)s is not a finite number.", code="not_finite", params={"value": value}
        )
    if isinstance(value, int) and abs(value) > _LARGEST_NUMBER:
        raise ValidationError(
            "The number is beyond the range of a floating-point number (±1.8e308).",
            code="not_finite",
        )


def _number_problem(number: int | float, where: str) -> str | None:
    if isinstance(number, float) and not math.isfinite(number):
        return f"holds {number!r}{where}: only finite numbers can be stored."
    # Compared without converting a huge integer to text (which Python limits).
    if abs(number) > _LARGEST_NUMBER:
        return f"holds a number beyond ±1.8e308{where}, which JSON readers take for Infinity."
    return None


def _scalar_size(item: object) -> int:
    """UTF-8 bytes of a JSON scalar as json.dumps(..., ensure_ascii=False) writes it."""
    return len(json.dumps(item, ensure_ascii=False).encode())


def json_value_problem(value: object, *, max_depth: int, max_bytes: int) -> str | None:
    """Why `value` is no JSON value the project stores, or None.

    A JSON value here is what json.dumps writes without an encoder: dicts (keys text, or
    a number, true, false or null, which JSON writes as text), lists and tuples, text,
    finite numbers, True, False, None. Its depth (a scalar is 0, `{}` and `[1]` are 1) is
    at most `max_depth`, and json.dumps(value, ensure_ascii=False) at most `max_bytes`
    of UTF-8, counted as the walk goes without writing it, so the work is bounded by
    `max_bytes` whatever the value (a structure that repeats or contains itself too).
    Text holds no character PostgreSQL cannot store. The reason says where: `at ['a'][0]`.
    """
    too_large = f"is larger than JSON_MAX_BYTES ({max_bytes} bytes) as JSON."
    size = 0
    pending: list[tuple[object, int, str]] = [(value, 0, "")]
    while pending:
        item, depth, where = pending.pop()
        at = f" at {where}" if where else ""
        if isinstance(item, str):
            if len(item) > max_bytes:
                return too_large
            if found := _UNSTORABLE.search(item):
                return _reason(found.group(), at)
            size += _scalar_size(item)
        elif item is None or isinstance(item, bool):
            size += _scalar_size(item)
        elif isinstance(item, int | float):
            if problem := _number_problem(item, at):
                return problem
            size += _scalar_size(item)
        elif isinstance(item, dict | list | tuple):
            if depth + 1 > max_depth:
                return f"is nested deeper than JSON_MAX_DEPTH ({max_depth} levels)."
            # Brackets, and a separator (", " or ": " with ", ") between items.
            size += 2 + 2 * max(len(item) - 1, 0)
            if size > max_bytes:
                return too_large
            if isinstance(item, dict):
                children = []
                for key, child in item.items():
                    if isinstance(key, str):
                        if found := _UNSTORABLE.search(key):
                            return _reason(found.group(), f" in the key {where}[{key!r}]")
                        if len(key) > max_bytes:
                            return too_large
                        size += _scalar_size(key) + 2
                    elif key is None or isinstance(key, bool | int | float):
                        if isinstance(key, int | float) and (
                            problem := _number_problem(key, f" in a key at {where or 'the top'}")
                        ):
                            return problem
                        size += len(json.dumps(key)) + 4  # written as text: "1": ...
                    else:
                        return (
                            f"has a key of type {type(key).__name__} at {where or 'the top'}: "
                            "JSON keys are text."
                        )
                    children.append((child, depth + 1, f"{where}[{key!r}]"))
            else:
                children = [
                    (child, depth + 1, f"{where}[{index}]") for index, child in enumerate(item)
                ]
            pending.extend(reversed(children))
        else:
            return f"holds a {type(item).__name__}{at}, which is not a JSON value."
        if size > max_bytes:
            return too_large
    return None


def validate_json_value(value: object) -> None:
    """Raise ValidationError if `value` is no JSON value the project stores.

    The limits are the settings JSON_MAX_DEPTH and JSON_MAX_BYTES, read at each call.
    """
    reason = json_value_problem(
        value, max_depth=settings.JSON_MAX_DEPTH, max_bytes=settings.JSON_MAX_BYTES
    )
    if reason:
        raise ValidationError(f"The value {reason}", code="invalid_json_value")


def require_count(name: str, value: object, most: int) -> int:
    """`value`, a whole number from 1 to `most` (a batch size, a sample, a k from a
    caller): anything else (a bool, a float, a number out of range, which would reach
    PostgreSQL as a LIMIT it refuses) is a ValidationError naming `name`."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
        raise ValidationError({name: f"{name} must be an integer from 1 to {most}, not {value!r}."})
    return value
