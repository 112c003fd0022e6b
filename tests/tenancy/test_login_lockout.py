"""Admin login lockout (django-axes) through the whole middleware stack.

Requests go through Django's test client, so the tenant middleware, axes' backend and
middleware all run as in production, against the real database as the runtime role.
`transaction=True`: what a request writes must be committed, not only visible inside
the test's own transaction.
"""

import datetime as dt

import pytest
from axes.models import AccessAttempt, AccessFailureLog
from django.core.management import call_command
from django.db import connection
from django.db.models import F
from django.test import Client

from tests.admin_helpers import admin_url
from tests.factories import PASSWORD, make_member

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 3
IP_LIMIT = 8
LOGIN_URL = "/admin/login/?next=/admin/"
LOCKED_MESSAGE = "Too many failed logins"


@pytest.fixture(autouse=True)
def lockout_settings(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_IP_FAILURE_LIMIT = IP_LIMIT
    settings.AXES_COOLOFF_TIME = dt.timedelta(minutes=15)
    settings.TRUSTED_PROXY_IP_HEADER = ""
    settings.TRUSTED_PROXY_COUNT = 1


def login(client: Client, email: str, password: str, **headers):
    return client.post(LOGIN_URL, {"username": email, "password": password}, **headers)


def logged_in(response) -> bool:
    return response.status_code == 302 and response.url == "/admin/"


def fail(client: Client, times: int, email: str = "alice@example.com", **headers) -> list[int]:
    return [login(client, email, "wrong-password", **headers).status_code for _ in range(times)]


def test_after_the_limit_even_the_right_password_is_refused(client, alice):
    assert fail(client, LIMIT + 1) == [200] * (LIMIT - 1) + [429, 429]

    refused = login(client, alice.email, PASSWORD)

    assert refused.status_code == 429
    assert LOCKED_MESSAGE in refused.content.decode()
    assert "_auth_user_id" not in client.session


def test_the_right_password_is_accepted_again_after_the_cool_off(client, alice, settings):
    fail(client, LIMIT + 1)
    # Time travel: every recorded attempt is now older than the cool-off.
    AccessAttempt.objects.update(
        attempt_time=F("attempt_time") - settings.AXES_COOLOFF_TIME - dt.timedelta(seconds=1)
    )
    assert logged_in(login(client, alice.email, PASSWORD))


def test_a_lock_is_listed_in_the_admin_and_deleting_it_there_unlocks(client, alice, superuser):
    fail(client, LIMIT + 1)
    operator = Client()
    operator.force_login(superuser)
    listing = operator.get(admin_url(AccessAttempt, "changelist"))
    assert listing.status_code == 200
    assert "alice@example.com" in listing.content.decode()

    deleted = operator.post(
        admin_url(AccessAttempt, "changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [a.pk for a in AccessAttempt.objects.all()],
            "post": "yes",
        },
    )

    assert deleted.status_code == 302
    assert logged_in(login(client, alice.email, PASSWORD))


def test_axes_reset_unlocks(client, alice):
    fail(client, LIMIT + 1)
    call_command("axes_reset", verbosity=0)
    assert logged_in(login(client, alice.email, PASSWORD))


def test_failures_for_one_account_do_not_lock_another_account_from_the_same_address(client, alice):
    # Issue 17: a NAT, a proxy or localhost puts many people behind one address.
    assert fail(client, LIMIT + 1, email="bob@example.com") == [200] * (LIMIT - 1) + [429, 429]

    assert logged_in(login(client, alice.email, PASSWORD))


def test_failures_for_an_account_from_one_address_do_not_lock_it_from_another(client, alice):
    fail(client, LIMIT + 1, REMOTE_ADDR="198.51.100.7")

    assert login(client, alice.email, PASSWORD, REMOTE_ADDR="198.51.100.7").status_code == 429
    assert logged_in(login(Client(), alice.email, PASSWORD, REMOTE_ADDR="203.0.113.50"))


def test_failures_count_per_account_however_the_email_is_spelled(client, alice):
    for spelling in ("ALICE@example.com", "Alice@Example.com", " alice@EXAMPLE.COM "):
        fail(client, 1, email=spelling)
    assert login(client, alice.email, PASSWORD).status_code == 429


def test_the_address_limit_locks_every_account_from_that_address(client, alice):
    # Fewer than LIMIT failures for each account, IP_LIMIT for the address in all.
    for n in range(IP_LIMIT):
        fail(client, 1, email=f"guess{n // 2}@example.com", REMOTE_ADDR="198.51.100.7")
    refused = login(client, alice.email, PASSWORD, REMOTE_ADDR="198.51.100.7")

    assert refused.status_code == 429
    assert "_auth_user_id" not in client.session
    assert logged_in(login(Client(), alice.email, PASSWORD, REMOTE_ADDR="203.0.113.50"))


def test_below_the_address_limit_other_accounts_from_that_address_log_in(client, alice):
    for n in range(IP_LIMIT - 1):
        fail(client, 1, email=f"guess{n // 2}@example.com", REMOTE_ADDR="198.51.100.7")

    assert logged_in(login(client, alice.email, PASSWORD, REMOTE_ADDR="198.51.100.7"))


def test_the_lockout_page_says_what_happened_and_how_to_lift_it(client, alice):
    fail(client, LIMIT, REMOTE_ADDR="198.51.100.7")

    page = login(client, alice.email, PASSWORD, REMOTE_ADDR="198.51.100.7")

    assert page.status_code == 429
    text = page.content.decode()
    assert LOCKED_MESSAGE in text
    assert f"{LIMIT} wrong passwords were given for" in text
    assert f"or {IP_LIMIT} for any" in text
    assert "15 minutes after the last attempt" in text
    assert "python manage.py axes_reset_ip_username 198.51.100.7 alice@example.com" in text
    assert "python manage.py axes_reset_ip 198.51.100.7" in text
    assert "python manage.py axes_reset_username alice@example.com" in text
    assert "python manage.py axes_reset " in text


def test_the_commands_on_the_lockout_page_lift_the_lock(client, alice):
    fail(client, LIMIT, REMOTE_ADDR="198.51.100.7")
    call_command("axes_reset_ip_username", "198.51.100.7", "alice@example.com", verbosity=0)
    assert logged_in(login(client, alice.email, PASSWORD, REMOTE_ADDR="198.51.100.7"))


def test_a_forwarded_for_header_is_ignored_unless_trusted(client, alice):
    for n in range(LIMIT):
        fail(client, 1, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"127.0.0.1"}
    assert login(client, alice.email, PASSWORD).status_code == 429


def test_behind_a_trusted_proxy_clients_are_told_apart_by_the_header(client, alice, settings):
    settings.TRUSTED_PROXY_IP_HEADER = "HTTP_X_FORWARDED_FOR"
    proxy = {"REMOTE_ADDR": "10.0.0.2"}
    fail(client, LIMIT, HTTP_X_FORWARDED_FOR="192.0.2.9", **proxy)
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"192.0.2.9"}

    other = login(Client(), alice.email, PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.4", **proxy)

    assert logged_in(other)


def test_failed_logins_of_a_signed_in_user_persist_through_the_tenant_transaction(tenant_a):
    # A member of a tenant: the tenant middleware wraps each of their requests in a
    # transaction, inside which axes records the failures (and answers 429 at the limit).
    member = make_member(tenant_a, "mallory@example.com", role="viewer")
    client = Client()
    client.force_login(member)

    assert fail(client, LIMIT, email="alice@example.com") == [200] * (LIMIT - 1) + [429]

    [attempt] = AccessAttempt.objects.filter(username="alice@example.com")
    assert attempt.failures_since_start == LIMIT
    assert AccessFailureLog.objects.filter(username="alice@example.com").count() == LIMIT


def test_axes_tables_hold_no_tenant_rows_and_the_runtime_role_may_write_them():
    # Tests connect as the runtime role; its grants come from migrate's post_migrate handler.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname::text, c.relrowsecurity, EXISTS ("
            "  SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'"
            "), bool_and(has_table_privilege(c.oid, p)) "
            "FROM pg_class c, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) p "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' "
            "AND c.relname LIKE 'axes\\_%' GROUP BY c.oid, c.relname ORDER BY 1"
        )
        rows = cursor.fetchall()
    assert [table for table, *_ in rows] == [
        "axes_accessattempt",
        "axes_accessattemptexpiration",
        "axes_accessfailurelog",
        "axes_accesslog",
    ]
    assert {(rls, tenant_id, writable) for _, rls, tenant_id, writable in rows} == {
        (False, False, True)
    }
