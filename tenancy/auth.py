"""Login helpers for django-axes (settings.AXES_USERNAME_CALLABLE, AXES_HANDLER)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from axes.attempts import get_cool_off_threshold
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_failure_limit
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

if TYPE_CHECKING:

    class AxesRequest(HttpRequest):
        """A request as axes' handlers receive it: with the client address axes resolved."""

        axes_ip_address: str


def login_username(request: HttpRequest, credentials: dict | None) -> str | None:
    """The email a login attempt names, as `users.email` stores it (lower case).

    Emails log in case-insensitively, so the failures against one account must count
    together however an attacker spells its address.
    """
    credentials = credentials or {}
    value = credentials.get("username") or credentials.get(get_user_model().USERNAME_FIELD)
    if value is None:
        value = request.POST.get("username")
    return value.strip().lower() if isinstance(value, str) else None


class AccountAndAddressLockout(AxesDatabaseHandler):
    """django-axes' database handler, locking an account from one address, and an address
    alone only at its own, much higher limit (settings.AXES_HANDLER).

    AXES_LOCKOUT_PARAMETERS counts failures per (account, address), so AXES_FAILURE_LIMIT
    wrong passwords for one account lock that account from that address only: colleagues
    behind the same NAT or proxy can still log in. Axes has a single limit, so the
    address-wide one lives here: once the failures from an address, for any accounts,
    reach AXES_IP_FAILURE_LIMIT, every login from it counts as at the account limit.
    Both of axes' checks (before authenticating, and after a failure) go through here.
    """

    def get_failures(self, request: AxesRequest, credentials: dict | None = None) -> int:
        failures = super().get_failures(request, credentials)
        if settings.AXES_COOLOFF_TIME is None:
            recent = AccessAttempt.objects.all()
        else:
            recent = AccessAttempt.objects.filter(attempt_time__gte=get_cool_off_threshold(request))
        address_failures = (
            recent.filter(ip_address=request.axes_ip_address).aggregate(
                total=Sum("failures_since_start")
            )["total"]
            or 0
        )
        if address_failures >= settings.AXES_IP_FAILURE_LIMIT:
            return max(failures, get_failure_limit(request, credentials))
        return failures


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict | None
) -> HttpResponse:
    """The HTTP 429 page of a refused login (settings.AXES_LOCKOUT_CALLABLE): what locked
    it and the commands that lift the lock, with this account and address filled in."""
    context = {
        "username": login_username(request, credentials) or "",
        "address": getattr(request, "axes_ip_address", None) or "ADDRESS",
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "ip_failure_limit": settings.AXES_IP_FAILURE_LIMIT,
        "cooloff_minutes": f"{settings.AXES_COOLOFF_TIME.total_seconds() / 60:g}",
    }
    return render(request, "axes/lockout.html", context, status=settings.AXES_HTTP_RESPONSE_CODE)
