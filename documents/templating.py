"""Rendering project templates' files: `{name}` placeholders, nothing else.

str.format would let a template reach attributes and items (`{x.__class__}`), so the
placeholders are parsed with string.Formatter and only bare identifiers are allowed;
`{{` and `}}` stand for literal braces, as in str.format.
"""

from __future__ import annotations

import re
import string
from pathlib import PurePosixPath

from documents.models import DocumentType

# Always available to a template; not a declared variable.
BUILTIN_VARIABLES = ("project_name",)
VARIABLE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_formatter = string.Formatter()


def placeholders(text: str) -> list[str]:
    """The variable names a file uses; ValueError for anything but a bare `{name}`."""
    names = []
    for _literal, name, format_spec, conversion in _formatter.parse(text):
        if name is None:
            continue
        if not VARIABLE_NAME_RE.match(name) or format_spec or conversion:
            spec = f"{name}{'!' + conversion if conversion else ''}"
            spec += f":{format_spec}" if format_spec else ""
            raise ValueError(f"placeholder {{{spec}}} is not a plain {{variable_name}}")
        names.append(name)
    return names


def render(text: str, variables: dict[str, str]) -> str:
    """The text with each `{name}` replaced by `variables[name]` (placeholders() first)."""
    parts = []
    for literal, name, _format_spec, _conversion in _formatter.parse(text):
        parts.append(literal)
        if name is not None:
            parts.append(variables[name])
    return "".join(parts)


def document_type_for(file_name: str) -> str | None:
    """The document type a template file becomes ("about.md" -> "about"), else None."""
    stem = PurePosixPath(file_name).stem.lower()
    return stem if stem in DocumentType.values else None
