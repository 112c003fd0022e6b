"""The usage page (the rollup's changelist with its totals and chart) and the quotas'
admin: what an owner and a viewer see, what they may change, and another tenant's rows."""

from __future__ import annotations

import re

import pytest

from agents import services
from agents.models import AgentExecution, ExecutionUsageDaily, TenantQuota
from documents.services import project_create
from tenancy.context import tenant_context
from tests.admin_helpers import admin_url, listed, logged_in
from tests.factories import make_member


def _spend(tenant, project, *, model: str, tokens: int, cost: str) -> None:
    execution = services.execution_create(
        tenant=tenant, project=project, agent_type="writer", model=model
    )
    services.execution_start(tenant=tenant, execution=execution)
    services.execution_finish(
        tenant=tenant, execution=execution, prompt_tokens=tokens, completion_tokens=1,
        cost_usd=cost,
    )  # fmt: skip


@pytest.fixture
def usage(tenant_a, tenant_b):
    """Tenant A: two models, one failure; tenant B: a model of its own."""
    mine = project_create(tenant=tenant_a, name="Mine")
    _spend(tenant_a, mine, model="small", tokens=100, cost="0.25")
    _spend(tenant_a, mine, model="large", tokens=900, cost="2.50")
    failed = services.execution_create(
        tenant=tenant_a, project=mine, agent_type="writer", model="small"
    )
    services.execution_start(tenant=tenant_a, execution=failed)
    services.execution_fail(tenant=tenant_a, execution=failed, error_type="Timeout")
    theirs = project_create(tenant=tenant_b, name="Theirs")
    _spend(tenant_b, theirs, model="secret-model", tokens=5000, cost="99.00")


@pytest.fixture
def viewer(tenant_a):
    return make_member(tenant_a, "viewer@example.com", role="viewer", is_staff=True)


def _page(client) -> str:
    response = client.get(admin_url(ExecutionUsageDaily, "changelist"))
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.parametrize("who", ["alice", "viewer"])
def test_the_usage_page_shows_the_tenants_totals_chart_and_rows(client, usage, alice, viewer, who):
    html = _page(logged_in(client, {"alice": alice, "viewer": viewer}[who]))
    # The period's totals: 3 executions, 1 failure, 1,000 + 2 tokens, $2.75.
    totals = dict(re.findall(r"<dt>([^<]+)</dt><dd>([^<]+)</dd>", html))
    assert totals == {
        "Executions": "3",
        "Failures": "1",
        "Prompt tokens": "1000",
        "Completion tokens": "2",
        "Cost (USD)": "2.75",
    }
    # The chart: inline SVG named and described, a line per model, and its table.
    assert '<svg role="img"' in html
    assert 'aria-labelledby="usage-chart-title usage-chart-desc"' in html
    assert html.count("<polyline") == 2
    assert "<title>large</title>" in html and "<title>small</title>" in html
    assert "Cost (USD) per day and model (the chart&#x27;s figures)" in html
    assert "<script" not in html.split('id="changelist"')[1].split("</form>")[0]
    # Nothing of the other tenant.
    assert "secret-model" not in html and "99.00" not in html


def test_the_chart_plots_tokens_when_asked(client, usage, alice):
    response = logged_in(client, alice).get(
        admin_url(ExecutionUsageDaily, "changelist"), {"chart": "tokens"}
    )
    html = response.content.decode()
    assert "Tokens per day and model" in html
    # large: 900 + 1 tokens on today's row of the table.
    assert "<td>901</td>" in html


def test_the_usage_page_filters_by_period_and_model(client, usage, alice, tenant_a):
    logged_in(client, alice)
    assert len(listed(client, ExecutionUsageDaily)) == 2
    assert len(listed(client, ExecutionUsageDaily, model__exact="large")) == 1
    with tenant_context(tenant_a):
        ExecutionUsageDaily.objects.filter(tenant_id=tenant_a.pk, model="large").update(
            day="2020-01-01"
        )
    assert len(listed(client, ExecutionUsageDaily)) == 1
    assert len(listed(client, ExecutionUsageDaily, period="all")) == 2
    assert len(listed(client, ExecutionUsageDaily, period="bogus")) == 1  # the default


def test_another_tenants_usage_row_is_not_found(client, usage, alice, tenant_b):
    with tenant_context(tenant_b):
        theirs = ExecutionUsageDaily.objects.get(tenant=tenant_b)
    response = logged_in(client, alice).get(admin_url(ExecutionUsageDaily, "change", theirs.pk))
    assert response.status_code == 404
    assert "secret-model" not in response.content.decode()


def test_rows_of_the_rollup_cannot_be_added_changed_or_deleted(client, usage, alice, tenant_a):
    with tenant_context(tenant_a):
        row = ExecutionUsageDaily.objects.filter(tenant=tenant_a).first()
    logged_in(client, alice)
    assert client.get(admin_url(ExecutionUsageDaily, "add")).status_code == 403
    page = client.get(admin_url(ExecutionUsageDaily, "change", row.pk))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert client.post(admin_url(ExecutionUsageDaily, "delete", row.pk)).status_code == 403


# Quotas


QUOTA_FORM = {
    "monthly_token_limit": "1000",
    "monthly_cost_limit_usd": "",
    "warn_at_percent": "80",
}


def test_an_owner_sets_a_quota_and_a_bad_amount_is_refused_on_its_field(
    client, usage, alice, tenant_a
):
    logged_in(client, alice)
    response = client.post(
        admin_url(TenantQuota, "add"),
        {**QUOTA_FORM, "tenant": tenant_a.pk, "monthly_token_limit": "-5"},
    )
    assert response.status_code == 200
    assert "monthly_token_limit" in response.context["adminform"].form.errors
    response = client.post(
        admin_url(TenantQuota, "add"),
        {**QUOTA_FORM, "tenant": tenant_a.pk, "monthly_cost_limit_usd": "99999999"},
    )
    assert "monthly_cost_limit_usd" in response.context["adminform"].form.errors
    with tenant_context(tenant_a):
        assert not TenantQuota.objects.exists()
    response = client.post(admin_url(TenantQuota, "add"), {**QUOTA_FORM, "tenant": tenant_a.pk})
    assert response.status_code == 302
    with tenant_context(tenant_a):
        quota = TenantQuota.objects.get()
    assert (quota.monthly_token_limit, quota.monthly_cost_limit_usd) == (1000, None)
    page = client.get(admin_url(TenantQuota, "change", quota.pk)).content.decode()
    # 1,003 tokens of 1,000 this month: the warning, and the change page says it.
    assert "100% of its monthly tokens quota used" in page


def test_a_viewer_reads_the_quota_and_cannot_change_it(client, alice, viewer, tenant_a):
    quota = services.tenant_quota_set(tenant=tenant_a, by=alice, monthly_token_limit=500)
    logged_in(client, viewer)
    assert quota.pk in listed(client, TenantQuota)
    page = client.get(admin_url(TenantQuota, "change", quota.pk))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    forged = client.post(
        admin_url(TenantQuota, "change", quota.pk), {**QUOTA_FORM, "tenant": tenant_a.pk}
    )
    assert forged.status_code == 403
    assert client.post(admin_url(TenantQuota, "add"), QUOTA_FORM).status_code == 403
    with tenant_context(tenant_a):
        assert TenantQuota.objects.get().monthly_token_limit == 500


def test_another_tenants_quota_is_not_found(client, alice, bob, tenant_b):
    theirs = services.tenant_quota_set(tenant=tenant_b, by=bob, monthly_token_limit=5)
    response = logged_in(client, alice).get(admin_url(TenantQuota, "change", theirs.pk))
    assert response.status_code == 404
    assert theirs.pk not in listed(client, TenantQuota)


@pytest.mark.parametrize("page", [ExecutionUsageDaily, AgentExecution, TenantQuota])
def test_the_warning_banner_shows_near_the_quota(client, usage, alice, tenant_a, page):
    logged_in(client, alice)
    banner = "Tenant A is near its monthly quota"
    services.tenant_quota_set(tenant=tenant_a, by=alice, monthly_cost_limit_usd="100")
    assert banner not in client.get(admin_url(page, "changelist")).content.decode()
    services.tenant_quota_set(tenant=tenant_a, by=alice, monthly_cost_limit_usd="3.00")
    html = client.get(admin_url(page, "changelist")).content.decode()
    assert banner in html
    assert "92% of its monthly cost (USD) quota used" in html
    services.tenant_quota_set(tenant=tenant_a, by=alice, monthly_cost_limit_usd="2.75")
    html = client.get(admin_url(page, "changelist")).content.decode()
    assert "Tenant A has reached its monthly quota" in html
