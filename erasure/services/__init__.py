"""The erasure services (docs/operations.md, "Offboarding a tenant"): each removes its
subject's rows and files and writes an ErasureReceipt."""

from erasure.services.tenants import erase_tenant

__all__ = ["erase_tenant"]
