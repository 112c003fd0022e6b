"""Splitting a document's text into overlapping chunks of tokens.

A token is a run of non-space characters (a word with its punctuation). Chunks are
slices of the original text, so whitespace and line breaks inside a chunk survive
and each chunk records where it starts and ends in the document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError

TOKEN_RE = re.compile(r"\S+")


@dataclass(frozen=True)
class TextChunk:
    """One piece of a text: its position, its content and how many tokens it holds."""

    ordinal: int
    content: str
    token_count: int
    start: int
    end: int


def default_chunk_size() -> int:
    return settings.CHUNK_SIZE_TOKENS


def default_chunk_overlap() -> int:
    return settings.CHUNK_OVERLAP_TOKENS


def resolve_chunking(chunk_size: int | None, chunk_overlap: int | None) -> tuple[int, int]:
    """Size and overlap from the arguments, else the settings, validated.

    A default overlap that would not fit a smaller given size shrinks to a fifth of it.
    """
    size = default_chunk_size() if chunk_size is None else chunk_size
    if chunk_overlap is None:
        chunk_overlap = default_chunk_overlap()
        if isinstance(size, int) and chunk_overlap >= size:
            chunk_overlap = size // 5
    validate_chunking(size, chunk_overlap)
    return size, chunk_overlap


def validate_chunking(chunk_size: int, chunk_overlap: int) -> None:
    """Refuse a size below 1, a negative overlap, or an overlap that would not advance."""
    errors = {}
    if not isinstance(chunk_size, int) or chunk_size < 1:
        errors["chunk_size"] = f"chunk_size must be an integer >= 1, not {chunk_size!r}."
    if not isinstance(chunk_overlap, int) or chunk_overlap < 0:
        errors["chunk_overlap"] = f"chunk_overlap must be an integer >= 0, not {chunk_overlap!r}."
    elif not errors and chunk_overlap >= chunk_size:
        errors["chunk_overlap"] = (
            f"chunk_overlap ({chunk_overlap}) must be smaller than chunk_size ({chunk_size})."
        )
    if errors:
        raise ValidationError(errors)


def has_tokens(text: str) -> bool:
    """Whether split_text would make any chunk of `text`, without splitting it."""
    return TOKEN_RE.search(text) is not None


def split_text(text: str, *, chunk_size: int, chunk_overlap: int) -> list[TextChunk]:
    """Windows of `chunk_size` tokens, each starting `chunk_size - chunk_overlap` later.

    The last window ends at the last token; no window is wholly inside the previous one.
    """
    validate_chunking(chunk_size, chunk_overlap)
    spans = [match.span() for match in TOKEN_RE.finditer(text)]
    step = chunk_size - chunk_overlap
    chunks: list[TextChunk] = []
    first = 0
    while first < len(spans):
        last = min(first + chunk_size, len(spans)) - 1
        start, end = spans[first][0], spans[last][1]
        chunks.append(
            TextChunk(
                ordinal=len(chunks),
                content=text[start:end],
                token_count=last - first + 1,
                start=start,
                end=end,
            )
        )
        if last == len(spans) - 1:
            break
        first += step
    return chunks
