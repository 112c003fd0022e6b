"""Erasure (docs/security.md, "Erasure"; docs/operations.md, "Offboarding a tenant"): one
module per subject, each removing its subject's rows and files and writing receipts."""

from erasure.services.documents import erase_document
from erasure.services.tenants import erase_tenant
from erasure.services.users import erase_user

__all__ = ["erase_document", "erase_tenant", "erase_user"]
