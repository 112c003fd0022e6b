"""The client's address, also behind reverse proxies (settings.AXES_CLIENT_IP_CALLABLE)."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """REMOTE_ADDR, or the address a trusted proxy wrote into TRUSTED_PROXY_IP_HEADER.

    A header is read only when the deployment says a proxy sets it: otherwise any client
    could name a new address on every attempt and never reach the failure limit. Each
    proxy appends the address it received from, so with TRUSTED_PROXY_COUNT proxies the
    entry that many places from the right is what the outermost one saw; anything left
    of it came from the client. A header that is missing, too short or not an address
    falls back to REMOTE_ADDR (the nearest proxy), which can only make the count stricter.
    """
    remote = request.META.get("REMOTE_ADDR")
    header = settings.TRUSTED_PROXY_IP_HEADER
    if not header:
        return remote
    entries = [entry.strip() for entry in request.META.get(header, "").split(",")]
    entries = [entry for entry in entries if entry]
    count = settings.TRUSTED_PROXY_COUNT
    if len(entries) < count:
        return remote
    try:
        return str(ipaddress.ip_address(entries[-count]))
    except ValueError:
        return remote
