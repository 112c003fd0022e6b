"""Embeddings (docs/services.md): the EMBEDDER setting and the default hashing embedder."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy
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
    return [_hashed_vector(tokenize(text) or [""], dimension) for text in texts]


# The built-in second model (EMBEDDING_MODELS' default, `hashing-v2`): another dimension
# and another feature set, so a switch to it changes answers as a real one would.
HASHING_V2_DIMENSION = 768


def hashing_embedder_v2(
    texts: Sequence[str], dimension: int = HASHING_V2_DIMENSION
) -> list[list[float]]:
    """Feature hashing of words and of adjacent word pairs into `dimension` buckets:
    texts sharing phrases, not only words, come closer."""
    vectors = []
    for text in texts:
        words = tokenize(text)
        pairs = [f"{first} {second}" for first, second in zip(words, words[1:], strict=False)]
        vectors.append(_hashed_vector([*words, *pairs] or [""], dimension))
    return vectors


def _hashed_vector(features: Sequence[str], dimension: int) -> list[float]:
    vector = [0.0] * dimension
    for feature in features:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "big")
        bucket = value % dimension
        sign = 1.0 if (value >> 63) & 1 else -1.0
        vector[bucket] += sign
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


# The largest magnitude a pgvector component (a 4-byte float) holds; beyond it a
# Python float becomes infinity on the way, which the database refuses.
FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class Embedder:
    """The configured embedder: a callable, the model name stored with each vector, its size."""

    function: Callable[[Sequence[str]], list[list[float]]]
    model: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """The model's answer as it comes, unchecked: the project embeds through
        embed_texts, which checks it."""
        return self.function(list(texts))


def embed_texts(embedder: Embedder, texts: Sequence[str]) -> list[list[float]]:
    """The vectors of `texts`, checked: the one way the project embeds anything.

    The embedder is outside code (a model, a service, a subclass with its own `embed`),
    so its answer is checked before anything uses it: one vector per text, each of the
    embedder's dimension, every component a finite number a pgvector vector can hold.
    Anything else is a ValidationError naming 'embedding' that says what was wrong, so
    no chunk is stored without its vector and no database error stands for it.
    """
    texts = list(texts)
    answer = embedder.embed(texts)
    if not isinstance(answer, Sequence | numpy.ndarray):
        raise _bad_answer(embedder, f"returned {type(answer).__name__}, not a list of vectors")
    if len(answer) != len(texts):
        raise _bad_answer(embedder, f"returned {len(answer)} vectors for {len(texts)} texts")
    for number, vector in enumerate(answer, start=1):
        size = len(vector) if isinstance(vector, Sequence | numpy.ndarray) else None
        if size != embedder.dimension:
            found = "no list of numbers" if size is None else f"{size} dimensions"
            raise _bad_answer(
                embedder, f"returned {found} for vector {number}, expected {embedder.dimension}"
            )
    if not texts:
        return []
    # In one array: a few microseconds per vector where a loop over 1536 floats in
    # Python would cost as much as a simple embedder's own work.
    try:
        values = numpy.asarray(answer, dtype=numpy.float64)
    except (TypeError, ValueError):
        raise _bad_answer(embedder, "returned a vector holding something not a number") from None
    storable = numpy.isfinite(values) & (numpy.abs(values) <= FLOAT32_MAX)
    if not storable.all():
        number, position = (int(index) for index in numpy.argwhere(~storable)[0])
        raise _bad_answer(
            embedder,
            f"returned {float(values[number, position])!r} at position {position} of vector "
            f"{number + 1}: only finite numbers a 4-byte float holds can be stored",
        )
    return values.tolist()


def _bad_answer(embedder: Embedder, problem: str) -> ValidationError:
    return ValidationError({"embedding": f"embedder {embedder.model} {problem}."})


def get_embedder(config: dict | str | None = None) -> Embedder:
    """The embedder named by `config`: by default the EMBEDDER setting; a model's name
    (EMBEDDER's, or one of EMBEDDING_MODELS: documents.embeddings.model_embedder); or a
    configuration {"CALLABLE", "MODEL", "DIMENSION"}."""
    if isinstance(config, str):
        from documents.embeddings import model_embedder  # it builds on this module

        return model_embedder(config)
    config = config or settings.EMBEDDER
    function = config["CALLABLE"]
    if isinstance(function, str):
        function = import_string(function)
    return Embedder(function=function, model=config["MODEL"], dimension=int(config["DIMENSION"]))
