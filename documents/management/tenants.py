"""What the documents app's commands share: finding the tenant an option names."""

from __future__ import annotations

import uuid

from django.core.management.base import CommandError

from tenancy.models import Tenant


def tenant_option(value: str) -> Tenant:
    """The tenant of `--tenant` (its slug or id), or a CommandError saying none has it.
    Tenants are not tenant-owned rows (no row-level security): no context needed."""
    lookup: dict[str, object]
    try:
        lookup = {"pk": uuid.UUID(value)}
    except ValueError:
        lookup = {"slug": value}
    tenant = Tenant.objects.filter(**lookup).first()
    if tenant is None:
        raise CommandError(f"Unknown tenant. --tenant: no tenant has the slug or id {value!r}.")
    return tenant


def refusal(error, options: dict[str, str]) -> CommandError:
    """A service's ValidationError as a CommandError naming the options of its fields."""
    if not hasattr(error, "error_dict"):
        return CommandError(" ".join(error.messages))
    return CommandError(
        " ".join(
            f"{options.get(field, field)}: {' '.join(messages)}"
            for field, messages in error.message_dict.items()
        )
    )
