"""Embeddings (docs/services.md): the EMBEDDER setting and the default hashing embedder."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.module_loading import import_string

TOKEN_RE = re.compile(r"\w+", re.UNICODE)
HASHING_DIMENSION = 1536


def tokenize(text: str) -> list[str]:
    return TOKEN_RE.findall(text.lower())


def hashing_embedder(texts: Sequence[str], dimension: int = HASHING_DIMENSION) -> list[list[float]]:
    """Feature hashing of words into `dimension` buckets, L2-normalised.

    Deterministic and dependency-free: texts sharing words get a higher cosine
    similarity. A signed hash keeps unrelated words from adding up on collisions.
    A text without words embeds as the zero vector's stand-in, one fixed bucket.
    """
    vectors = []
    for text in texts:
        vector = [0.0] * dimension
        tokens = tokenize(text) or [""]
        for token in tokens:
            digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
            value = int.from_bytes(digest, "big")
            bucket = value % dimension
            sign = 1.0 if (value >> 63) & 1 else -1.0
            vector[bucket] += sign
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        vectors.append([x / norm for x in vector])
    return vectors


@dataclass(frozen=True)
class Embedder:
    """The configured embedder: a callable, the model name stored with each vector, its size."""

    function: Callable[[Sequence[str]], list[list[float]]]
    model: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed texts, refusing any vector whose size is not the configured dimension."""
        vectors = self.function(list(texts))
        if len(vectors) != len(texts):
            raise ValidationError(
                {
                    "embedding": f"embedder {self.model} returned {len(vectors)} vectors "
                    f"for {len(texts)} texts"
                }
            )
        for vector in vectors:
            check_dimension(vector, self.dimension)
        return vectors


def check_dimension(vector: Sequence[float], expected: int) -> None:
    if len(vector) != expected:
        raise ValidationError(
            {"embedding": f"embedding has {len(vector)} dimensions, expected {expected}"}
        )


def get_embedder(config: dict | None = None) -> Embedder:
    """The embedder named by `config`, by default the EMBEDDER setting."""
    config = config or settings.EMBEDDER
    function = config["CALLABLE"]
    if isinstance(function, str):
        function = import_string(function)
    return Embedder(function=function, model=config["MODEL"], dimension=int(config["DIMENSION"]))
