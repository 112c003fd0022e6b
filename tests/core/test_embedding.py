"""The EMBEDDER setting and the default hashing embedder (docs/services.md)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError

from documents.embedding import Embedder, embed_texts, get_embedder, hashing_embedder


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # vectors are unit length


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def three_dimensional(texts):
    return [[1.0, 0.0, 0.0] for _ in texts]


def test_default_embedder_is_the_hashing_embedder_with_1536_dimensions():
    embedder = get_embedder()
    assert embedder.function is hashing_embedder
    assert embedder.model == settings.EMBEDDER["MODEL"]
    assert embedder.dimension == 1536


@pytest.mark.parametrize("text", ["the quick brown fox", "", "!!!", "Grüße 日本語 ✓", "a " * 5000])
def test_vectors_have_1536_dimensions_and_unit_length(text):
    [vector] = get_embedder().embed([text])
    assert len(vector) == 1536
    assert norm(vector) == pytest.approx(1.0)


def test_texts_sharing_words_are_more_similar_than_texts_that_do_not():
    related, close, unrelated = get_embedder().embed(
        [
            "postgres vector index for tenant documents",
            "vector index in postgres for agent documents",
            "lemon cake with sugar and cream",
        ]
    )
    assert cosine(related, close) > cosine(related, unrelated)
    assert cosine(related, close) > 0.5
    assert abs(cosine(related, unrelated)) < 0.2


def test_similarity_grows_with_the_number_of_shared_words():
    base, *others = get_embedder().embed(
        ["alpha beta gamma delta", "alpha beta gamma omega", "alpha beta psi omega", "chi psi"]
    )
    similarities = [cosine(base, other) for other in others]
    assert similarities == sorted(similarities, reverse=True)
    assert similarities[0] > similarities[1] > similarities[2]


def test_embedding_ignores_case_and_punctuation():
    a, b = get_embedder().embed(["Hello, World!", "hello world"])
    assert a == b


def test_embedding_is_deterministic_within_a_process():
    texts = ["same text", "another text"]
    assert get_embedder().embed(texts) == get_embedder().embed(texts)


def test_embedding_is_deterministic_across_processes():
    """Not Python's salted hash(): another interpreter with another seed agrees."""
    code = (
        "import json; from documents.embedding import hashing_embedder; "
        "print(json.dumps(hashing_embedder(['deterministic across runs'])[0]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    output = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=settings.BASE_DIR,
    ).stdout
    assert json.loads(output) == hashing_embedder(["deterministic across runs"])[0]


def refusal(function, texts=("some text",), dimension=1536) -> str:
    """The message embed_texts refuses `function`'s answer with, naming 'embedding'."""
    embedder = Embedder(function=function, model="x", dimension=dimension)
    with pytest.raises(ValidationError) as excinfo:
        embed_texts(embedder, list(texts))
    [message] = excinfo.value.message_dict["embedding"]
    return message


def test_embed_texts_refuses_vectors_of_the_wrong_dimension():
    assert "3 dimensions for vector 1, expected 1536" in refusal(three_dimensional)


@pytest.mark.parametrize("answer", [[], [[0.5] * 3] * 2])
def test_embed_texts_refuses_a_wrong_number_of_vectors(answer):
    assert f"returned {len(answer)} vectors for 1 texts" in refusal(
        lambda texts: answer, dimension=3
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf"), (1e39, "1e+39")],
)
def test_embed_texts_refuses_numbers_a_vector_cannot_hold(value, shown):
    def with_value(texts):
        return [[0.5, value, 0.5] for _ in texts]

    message = refusal(with_value, texts=["a", "b"], dimension=3)
    assert f"returned {shown} at position 1 of vector 1" in message


@pytest.mark.parametrize("answer", [None, iter([[0.5]]), [["a"]], [None]])
def test_embed_texts_refuses_what_is_not_a_list_of_vectors(answer):
    assert refusal(lambda texts: answer, dimension=1).startswith("embedder x returned")


def test_embed_texts_checks_an_embedder_that_overrides_embed():
    """The check is the caller's, not a method an embedder can replace."""

    class Forgetful(Embedder):
        def embed(self, texts):
            return hashing_embedder(texts)[:-1]

    with pytest.raises(ValidationError, match="returned 1 vectors for 2 texts"):
        embed_texts(Forgetful(function=hashing_embedder, model="m", dimension=1536), ["a", "b"])


def test_embed_texts_gives_lists_of_floats():
    [vector] = embed_texts(get_embedder(), ["some text"])
    assert vector == hashing_embedder(["some text"])[0]
    assert all(type(value) is float for value in vector)


def test_a_dotted_path_callable_is_imported():
    embedder = get_embedder(
        {"CALLABLE": "documents.embedding.hashing_embedder", "MODEL": "m", "DIMENSION": "1536"}
    )
    assert (embedder.function, embedder.model, embedder.dimension) == (hashing_embedder, "m", 1536)
