"""The quota note of /health/ (core.health_notes): how many tenants are past their quota's
warning threshold this UTC month, and how many at a limit. Counts only, never a tenant's
name: /health/ answers anyone. Read by `usage_quota_warnings()` (agents.0025), which
sums every tenant's month as the owner for its own statements, since the health check
connects as the runtime role with no tenant set.
"""

from __future__ import annotations

from typing import Any


def quota_note(cursor: Any) -> list[str]:
    cursor.execute("SELECT warned, at_limit FROM usage_quota_warnings()")
    warned, at_limit = cursor.fetchone()
    if not warned:
        return []
    tenants = "tenant" if warned == 1 else "tenants"
    return [
        f"{warned} {tenants} past the warning threshold of their monthly quota, "
        f"{at_limit} at a limit (new executions refused); see the admin's quotas"
    ]
