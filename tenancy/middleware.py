"""Sets the tenant context of each request from the logged-in user's memberships."""

from __future__ import annotations

import re

from django.db import transaction

from core.ids import uuid7
from tenancy.context import ADMIN_ACTOR, request_scope
from tenancy.selectors import tenant_access_for_user

# A request id given by a proxy in front (X-Request-ID) is kept when it is short and plain;
# otherwise the request gets a new one. Either way it is recorded with every audit event
# of the request and returned in the response's X-Request-ID.
REQUEST_ID_HEADER = "X-Request-ID"
_PLAIN_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


def request_id_of(request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _PLAIN_REQUEST_ID.match(given) else uuid7().hex


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
        # Every page is the admin's: its writes are audited as 'admin'.
        request.request_id = request_id_of(request)
        with request_scope(
            user, tenant_access_for_user, actor=ADMIN_ACTOR, request_id=request.request_id
        ) as tenant_ids:
            request.tenant_ids = tenant_ids
            response = self.get_response(request)
            # A view's exception reaches us as an error response (Django converts it
            # inside every middleware): roll back, a failed request writes nothing.
            # Refusals below 500 commit: a refused login's axes records must persist.
            if response.status_code >= 500:
                transaction.set_rollback(True)
        response[REQUEST_ID_HEADER] = request.request_id
        return response

    def process_exception(self, request, exception) -> None:
        """Any exception of the view (also 403 and 404 ones) undoes the request's writes."""
        if transaction.get_connection().in_atomic_block:
            transaction.set_rollback(True)
