"""What a refused call must leave unchanged: rows of every table of ours, and stored files."""

from __future__ import annotations

from pathlib import Path

from django.apps import apps

from tenancy.context import tenant_context

OUR_APPS = ("tenancy", "documents", "agents", "exports", "retention", "erasure")


def written(tenant, root: Path) -> tuple[dict[str, int], list[str]]:
    """Rows per table of ours (the tenant's, and all users and tenants) and files under root."""
    counts = {}
    with tenant_context(tenant):
        for label in OUR_APPS:
            for model in apps.get_app_config(label).get_models():
                counts[model._meta.db_table] = model._base_manager.count()
    files = sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())
    return counts, files
