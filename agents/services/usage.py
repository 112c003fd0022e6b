"""Quotas: a tenant's monthly limits, set by its owners, and the refusal of new executions
past them (docs/operations.md, "Usage and quotas").

A limit is reached when the month's usage, read from the rollup that the database keeps
(execution_usage_daily), is at or above it: then execution_create and execution_retry
refuse a new execution with a ValidationError naming the quota's field, until the next
UTC month or a higher limit. Usage is recorded when an execution finishes, so
executions already running when the limit is reached still finish and count; the
quota stops new ones.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from agents.models import TenantQuota
from agents.selectors import quota_usage
from agents.services._common import clean
from tenancy.context import require_tenant, tenant_context
from tenancy.models import Membership, MembershipRole, TenantRef, User

logger = logging.getLogger(__name__)

QUOTA_FIELDS = ("monthly_token_limit", "monthly_cost_limit_usd", "warn_at_percent")


def _require_owner(tenant_id: uuid.UUID, by: Any) -> None:
    """PermissionDenied unless `by` is an active owner of the tenant or a superuser."""
    if isinstance(by, User) and by.is_active and by.is_superuser:
        return
    if not isinstance(by, User) or not (
        by.is_active
        and Membership.objects.filter(
            tenant_id=tenant_id, user_id=by.pk, role=MembershipRole.OWNER
        ).exists()
    ):
        raise PermissionDenied("Only the tenant's owners may change its quota.")


def tenant_quota_set(*, tenant: TenantRef, by: User, **values: Any) -> TenantQuota:
    """Set the tenant's quota: keyword arguments named as its fields
    (`monthly_token_limit=5_000_000`, `monthly_cost_limit_usd="250.00"`,
    `warn_at_percent=80`); None for no limit; fields not given stay as they are.

    Owners only (PermissionDenied). A negative amount, one above MAX_MONTHLY_TOKENS or
    MAX_MONTHLY_COST_USD (agents.models.usage), a threshold outside 1..100, a value that
    is not a number, or an unknown field is a ValidationError naming it; nothing is
    written.
    """
    tenant_id = require_tenant(tenant)
    errors = {
        name: f"Not a quota field; one of {', '.join(QUOTA_FIELDS)}."
        for name in values
        if name not in QUOTA_FIELDS
    }
    errors |= {
        name: "A number, not true or false."
        for name, value in values.items()
        if name in QUOTA_FIELDS and isinstance(value, bool)
    }
    if errors:
        raise ValidationError(errors)
    with tenant_context(tenant_id, user=by if isinstance(by, User) else None):
        with transaction.atomic():
            _require_owner(tenant_id, by)
            quota = TenantQuota.objects.select_for_update().filter(
                tenant_id=tenant_id
            ).first() or TenantQuota(tenant_id=tenant_id)
            for name, value in values.items():
                setattr(quota, name, value)
            clean(quota)
            if quota._state.adding:
                quota.save(force_insert=True)
            else:
                quota.save(update_fields=[*values, "updated_at"])
    logger.info(
        "tenant quota set",
        extra={"tenant_id": str(tenant_id), "by": str(by.pk), "fields": sorted(values)},
    )
    return quota


def require_within_quota(tenant_id: uuid.UUID, *, now: datetime | None = None) -> None:
    """ValidationError naming the quota's field when the tenant has reached a limit of
    its quota this UTC month; nothing otherwise (no quota, or room left)."""
    reached = {
        use.quota: (
            f"The tenant's monthly quota is reached: {use.describe()}. New executions are "
            "refused until the next month (UTC) or until an owner raises the quota."
        )
        for use in quota_usage(tenant=tenant_id, now=now)
        if use.reached
    }
    if reached:
        logger.info(
            "execution refused by quota",
            extra={"tenant_id": str(tenant_id), "quotas": sorted(reached)},
        )
        raise ValidationError(reached)
