"""The embedder as the chunks table sees it: its vectors must fit chunks.embedding."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from documents.embedding import Embedder
from documents.models import EMBEDDING_DIMENSION


def check_embedder_dimension(embedder: Embedder) -> None:
    """Refuse an embedder whose vectors would not fit chunks.embedding, naming 'embedding'."""
    if embedder.dimension != EMBEDDING_DIMENSION:
        raise ValidationError(
            {
                "embedding": f"embedder {embedder.model} makes {embedder.dimension}-dimensional "
                f"vectors; chunks.embedding holds {EMBEDDING_DIMENSION}."
            }
        )
