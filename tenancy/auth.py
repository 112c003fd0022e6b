"""Login helpers for django-axes (settings.AXES_USERNAME_CALLABLE)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.http import HttpRequest


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
