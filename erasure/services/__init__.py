"""Erasure (docs/security.md, "Erasure"): one module per subject."""

from erasure.services.documents import erase_document
from erasure.services.users import erase_user

__all__ = ["erase_document", "erase_user"]
