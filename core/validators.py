"""Text PostgreSQL cannot store, refused as a ValidationError before it reaches the driver.

PostgreSQL's text and jsonb hold no NUL character (\\x00), and UTF-8 has no encoding for
an unpaired surrogate (\\ud800-\\udfff, which Python strings may hold): the driver would
raise a DataError or UnicodeEncodeError mid-write. BaseModel.clean_fields applies
`validate_storable` to every field, so every full_clean() refuses such input naming
the field; services use it directly for text that is no model field (an uploaded
text, template variables). The database stays the last line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from django.core.exceptions import ValidationError

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


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
    """
    if isinstance(value, str):
        found = _UNSTORABLE.search(value)
        return _reason(found.group(), f" at {path}" if path else "") if found else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and (found := _UNSTORABLE.search(key)):
                return _reason(found.group(), f" in the key {path}[{key!r}]")
            if reason := unstorable(item, f"{path}[{key!r}]"):
                return reason
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if reason := unstorable(item, f"{path}[{index}]"):
                return reason
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
