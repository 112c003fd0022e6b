"""Sets the tenant context of each request from the logged-in user's memberships."""

from __future__ import annotations

from django.db import connection, transaction

from tenancy.context import TENANT_IDS_SETTING, USER_ID_SETTING, _set_local


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
        with transaction.atomic():
            request.tenant_ids = self._scope(user)
            return self.get_response(request)

    @staticmethod
    def _scope(user) -> list:
        from tenancy.selectors import tenant_ids_for_user

        with connection.cursor() as cursor:
            _set_local(cursor, USER_ID_SETTING, str(user.pk))
            tenant_ids = tenant_ids_for_user(user)
            _set_local(cursor, TENANT_IDS_SETTING, ",".join(str(pk) for pk in tenant_ids))
        return tenant_ids
