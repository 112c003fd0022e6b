"""The embedder as the chunks table sees it: its vectors must fit chunks.embedding."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from documents.embedding import Embedder, get_embedder
from documents.models import EMBEDDING_DIMENSION


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
