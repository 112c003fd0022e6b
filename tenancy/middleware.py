"""Sets the tenant context of each request from the logged-in user's memberships."""

from __future__ import annotations

from django.db import transaction

from tenancy.context import request_scope
from tenancy.selectors import tenant_access_for_user


class TenantContextMiddleware:
    """Runs an authenticated request in one transaction scoped to the user's tenants.

    The user may read their own memberships (app.user_id); those give the tenants
    for app.tenant_ids. A superuser is scoped to every tenant. The settings are
    transaction-local, so they vanish with the request's transaction and never leak
    to the next request on the same pooled connection.
    """

    # Paths that read no tenant data: the health check must answer fast even with a
    # session cookie and a database that is down (no membership lookup, no pool wait).
    exempt_prefixes = ("/health/",)

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if request.path.startswith(self.exempt_prefixes):
            request.tenant_ids = []
            return self.get_response(request)
        if user is None or not user.is_authenticated:
            request.tenant_ids = []
            return self.get_response(request)
        # The user may read their own memberships; they give the tenants to scope to.
        with request_scope(user, tenant_access_for_user) as tenant_ids:
            request.tenant_ids = tenant_ids
            response = self.get_response(request)
            # A view's exception reaches us as an error response (Django converts it
            # inside every middleware): roll back, a failed request writes nothing.
            # Refusals below 500 commit: a refused login's axes records must persist.
            if response.status_code >= 500:
                transaction.set_rollback(True)
        return response

    def process_exception(self, request, exception) -> None:
        """Any exception of the view (also 403 and 404 ones) undoes the request's writes."""
        if transaction.get_connection().in_atomic_block:
            transaction.set_rollback(True)
