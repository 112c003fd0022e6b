"""core.http.client_ip: the address axes counts failures against."""

import pytest
from django.test import RequestFactory

from core.http import client_ip

PROXY = "10.0.0.2"


def address(settings, header: str, count: int, **meta) -> str | None:
    settings.TRUSTED_PROXY_IP_HEADER = header
    settings.TRUSTED_PROXY_COUNT = count
    return client_ip(RequestFactory().post("/admin/login/", REMOTE_ADDR=PROXY, **meta))


@pytest.mark.parametrize(
    "header, count, forwarded_for, expected",
    [
        # Not trusted: a client could send any header.
        ("", 1, "192.0.2.1", PROXY),
        # One proxy: it appended what it saw; what the client sent stands to its left.
        ("HTTP_X_FORWARDED_FOR", 1, "192.0.2.1", "192.0.2.1"),
        ("HTTP_X_FORWARDED_FOR", 1, "203.0.113.66, 192.0.2.1", "192.0.2.1"),
        # Two proxies: the outer one's entry is second from the right.
        ("HTTP_X_FORWARDED_FOR", 2, "203.0.113.66, 192.0.2.1, 10.0.0.9", "192.0.2.1"),
        ("HTTP_X_FORWARDED_FOR", 1, "2001:db8::1", "2001:db8::1"),
        # Unusable: the nearest proxy's own address.
        ("HTTP_X_FORWARDED_FOR", 2, "192.0.2.1", PROXY),
        ("HTTP_X_FORWARDED_FOR", 1, "not-an-address", PROXY),
        ("HTTP_X_FORWARDED_FOR", 1, "", PROXY),
    ],
)
def test_client_ip(settings, header, count, forwarded_for, expected):
    assert address(settings, header, count, HTTP_X_FORWARDED_FOR=forwarded_for) == expected


def test_a_trusted_single_value_header(settings):
    assert address(settings, "HTTP_X_REAL_IP", 1, HTTP_X_REAL_IP="192.0.2.1") == "192.0.2.1"
