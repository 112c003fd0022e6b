"""The embedding models as the tables see them.

EMBEDDER's model keeps its vectors in chunks.embedding, of EMBEDDING_DIMENSION; the other
models a tenant may switch to (the EMBEDDING_MODELS setting) keep theirs in
chunk_embeddings, one row per chunk and model, each model at its own dimension
(docs/operations.md, "Switching embedding models").
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError

from documents.embedding import Embedder, get_embedder
from documents.models import EMBEDDING_DIMENSION, HNSW_MAX_DIMENSION


def chunk_embedder(embedder: Embedder | None = None) -> Embedder:
    """`embedder`, by default the EMBEDDER setting, once checked to fit chunks.embedding.

    Refused naming 'embedding' before any work starts; its answers are checked as they
    come, by documents.embedding.embed_texts.
    """
    embedder = embedder or get_embedder()
    if embedder.dimension != EMBEDDING_DIMENSION:
        raise ValidationError(
            {
                "embedding": f"embedder {embedder.model} makes {embedder.dimension}-dimensional "
                f"vectors; chunks.embedding holds {EMBEDDING_DIMENSION}."
            }
        )
    return embedder


def default_model() -> str:
    """EMBEDDER's model: a tenant without a model of its own searches it."""
    return str(settings.EMBEDDER["MODEL"])


def in_chunk_embeddings(model: str) -> bool:
    """Whether `model`'s vectors live in chunk_embeddings (one of EMBEDDING_MODELS), not
    in chunks.embedding (EMBEDDER's model, or an embedder a caller passes of that size)."""
    return model in settings.EMBEDDING_MODELS and model != default_model()


def known_models() -> list[str]:
    return [default_model(), *sorted(settings.EMBEDDING_MODELS)]


def model_embedder(model: str) -> Embedder:
    """The embedder of `model`: EMBEDDER's, or one of EMBEDDING_MODELS; any other name is
    a ValidationError naming 'model' that lists the known ones."""
    if model == default_model():
        return chunk_embedder()
    config = settings.EMBEDDING_MODELS.get(model) if isinstance(model, str) else None
    if config is None:
        raise ValidationError(
            {
                "model": f"Unknown embedding model {model!r}; known: "
                f"{', '.join(known_models())} (EMBEDDER and EMBEDDING_MODELS)."
            }
        )
    try:
        dimension = int(config["DIMENSION"])
        embedder = get_embedder(
            {"CALLABLE": config["CALLABLE"], "MODEL": model, "DIMENSION": dimension}
        )
    except (KeyError, TypeError, ValueError, ImportError) as error:
        raise ImproperlyConfigured(
            f"EMBEDDING_MODELS[{model!r}] needs CALLABLE (an importable dotted path) and "
            f"DIMENSION (an integer): {type(error).__name__}: {error}"
        ) from error
    if not 1 <= dimension <= HNSW_MAX_DIMENSION:
        raise ImproperlyConfigured(
            f"EMBEDDING_MODELS[{model!r}]: DIMENSION {dimension} is not from 1 to "
            f"{HNSW_MAX_DIMENSION}, the sizes pgvector's HNSW index takes."
        )
    return embedder
