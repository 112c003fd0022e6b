"""Erasure (docs/security.md, "Erasure"): one module per subject."""

from erasure.services.documents import erase_document

__all__ = ["erase_document"]
