"""The admin driven in a real headless Chromium, as its operators use it.

A live server on the test database, the demo seeded through `manage.py seed`, then two
people log in through the login form: the demo owner (a superuser) and a staff member
with the viewer role in the demo tenant. Each opens the admin index, every changelist
registered with the admin (admin.site._registry, so a new model is covered without
touching this test) and the change page of its first row, and the health page, in a
1400-pixel window where every list must fit without a sideways scroll bar, then the
pages a first row may not reach (PAGES_WITH_PANELS: a version written by a run, compared
with another version and with one that does not exist; a knowledge document with
outputs built on it). Any
unexpected status, browser console error, page error or failed request (static files
included; a request Chromium cancelled on leaving a page is fetched again and must be
served) fails the test; the pages visited, their status and load time are printed
(`pytest -s`) and written to `browser-pages.txt` in the test's tmp folder.

On each admin page opened, axe-core (tests/accessibility.py) checks accessibility: a
violation of impact serious or critical is a problem too. Its summary per page is
printed and written to `axe-summary.txt` beside the pages' list.

Playwright drives Debian's chromium (`executable_path`): it cannot download a browser of
its own here. Without chromium the test skips naming the package, and fails under
.ci/run (tests/system_programs.py).
"""

import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.utils import timezone
from playwright.sync_api import Page, sync_playwright

from agents.admin.executions import run_story_url
from agents.models import AgentExecution, StaleSource
from agents.selectors import usage_of_month
from agents.services import tenant_quota_set
from documents.models import (
    Chunk,
    ChunkEmbedding,
    Document,
    DocumentVersion,
    EmbeddingCacheEntry,
    Project,
    SearchQuery,
)
from documents.services import (
    BACKFILL_TASK,
    document_access_grant,
    document_create,
    document_ingest,
    document_reingest,
    document_restrict,
    embedding_backfill_start,
    embeddings_backfill,
    project_access_grant,
    project_restrict,
    project_template_create,
)
from erasure.models import ErasureReceipt
from erasure.services import erase_document
from retention.models import RetentionPolicy, RetentionRun
from retention.services import retention_enforce, retention_policy_set
from tenancy.context import job_scope, tenant_context
from tenancy.models import AuditChainAnchor, AuditEvent, GlobalAuditEvent, Tenant, User
from tests.accessibility import PageCheck, check_page
from tests.factories import PASSWORD, make_member
from tests.system_programs import require

pytestmark = pytest.mark.slow

OWNER_EMAIL = "owner@demo.example.com"
VIEWER_EMAIL = "viewer@demo.example.com"
# Apps whose admins decide by tenant role: a viewer reads there and changes nothing.
TENANT_APPS = {"tenancy", "documents", "agents", "exports", "retention", "erasure"}
# The viewer's answer elsewhere (the login lockout's records): Django's own permission
# check, which a staff member without model permissions does not pass.
REFUSED = 403
# Tenant models whose lists are not for a viewer: the tenant's audit log and its anchors,
# retention and erasure receipts (owners and admins) and the global log (superusers).
MANAGERS_ONLY = {
    AuditEvent,
    EmbeddingCacheEntry,
    ChunkEmbedding,  # the tenant's index data
    AuditChainAnchor,
    GlobalAuditEvent,
    RetentionPolicy,
    RetentionRun,
    ErasureReceipt,
    SearchQuery,  # people's queries
}
# The usage page with its other chart and a longer period.
USAGE_TOKENS_90_DAYS = "/admin/agents/executionusagedaily/?period=90&chart=tokens"
# The screen the lists must fit, beside their filters (issue 11).
SCREEN = {"width": 1400, "height": 900}
# How far a changelist's table scrolls sideways in its `.results` box: 0 when it fits.
LIST_OVERFLOW_JS = """() => {
    const results = document.querySelector('#changelist .results');
    return results ? results.scrollWidth - results.clientWidth : 0;
}"""


@dataclass
class Visit:
    user: str
    url: str
    status: int
    milliseconds: float


@dataclass
class Browser:
    """One logged-in browser page that records every problem it sees."""

    page: Page
    base_url: str
    user: str
    visits: list[Visit] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Requests Chromium itself cancelled: checked once served (check_cancelled).
    cancelled: set[str] = field(default_factory=set)
    # Answers the test expects (the viewer's refusals): not problems when seen.
    expected_statuses: dict[str, int] = field(default_factory=dict)
    # axe-core's findings on each admin page opened (tests/accessibility.py).
    accessibility: list[PageCheck] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.on("requestfailed", self._on_request_failed)
        self.page.on("response", self._on_response)

    def _expected(self, url: str, status: int) -> bool:
        return self.expected_statuses.get(url.removeprefix(self.base_url)) == status

    def _on_console(self, message) -> None:
        if message.type != "error":
            return
        # Chromium also logs a refused page as a console error; an expected refusal is none.
        url = message.location.get("url", "")
        if self._expected(url, REFUSED) and str(REFUSED) in message.text:
            return
        self.problems.append(f"console error on {self.page.url}: {message.text} ({url})")

    def _on_request_failed(self, request) -> None:
        # Some fetches start after the load event (the page's icon, the calendar and
        # clock icons the admin's date widgets add) and Chromium cancels them when the
        # next page is opened first. Such a cancel is no failure of ours, but the file
        # must still be served: check_cancelled fetches it again. Any other failure counts.
        if request.failure == "net::ERR_ABORTED":
            self.cancelled.add(request.url)
            return
        self.problems.append(f"request failed: {request.url} ({request.failure})")

    def _on_response(self, response) -> None:
        if response.status >= 400 and not self._expected(response.url, response.status):
            self.problems.append(f"{response.status} for {response.url} (on {self.page.url})")

    def open(self, path: str) -> int:
        started = time.perf_counter()
        response = self.page.goto(self.base_url + path, wait_until="load")
        milliseconds = (time.perf_counter() - started) * 1000
        self.visits.append(Visit(self.user, path, response.status, milliseconds))
        if path.startswith("/admin/"):
            check = check_page(self.page, self.user, path)
            self.accessibility.append(check)
            self.problems.extend(check.failures)
        return response.status

    def check_list_fits(self, path: str) -> None:
        """The changelist open fits the screen without a sideways scroll bar."""
        overflow = self.page.evaluate(LIST_OVERFLOW_JS)
        if overflow > 0:
            self.problems.append(f"{path} is {overflow} px too wide for {SCREEN['width']} px")

    def check_cancelled(self) -> None:
        """Each request Chromium cancelled, fetched again: it must be served."""
        for url in sorted(self.cancelled):
            status = self.page.request.get(url).status
            if status != 200:
                self.problems.append(f"{status} for {url} (a cancelled request, fetched again)")

    def submit_login(self, email: str, password: str) -> None:
        self.open("/admin/login/?next=/admin/")
        self.page.fill("#id_username", email)
        self.page.fill("#id_password", password)
        with self.page.expect_navigation():
            self.page.click("input[type=submit]")

    def log_in(self, email: str, password: str) -> None:
        self.submit_login(email, password)
        assert self.page.url == self.base_url + "/admin/", f"{email} could not log in"

    def first_change_link(self, model) -> str | None:
        """The path of the first row's change page in the changelist shown, if any."""
        prefix = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        for href in self.page.eval_on_selector_all(
            "#result_list tbody tr:first-child a", "links => links.map(a => a.getAttribute('href'))"
        ):
            if href.startswith(prefix) and href.endswith("/change/"):
                return href
        return None

    def has_save_button(self) -> bool:
        return self.page.locator("input[name=_save]").count() > 0


def registered_models() -> list:
    return sorted(admin.site._registry, key=lambda model: model._meta.label)


def changelist(model) -> str:
    return f"/admin/{model._meta.app_label}/{model._meta.model_name}/"


@pytest.fixture
def seeded_demo(transactional_db, file_storages, no_model_index_left) -> dict[str, str]:
    """The demo seeded, with a viewer in its tenant: each one's email and password."""
    owner_password = secrets.token_urlsafe(18)
    # One argument with "=": a token that starts with "-" would read as an option.
    call_command("seed", f"--owner-password={owner_password}", stdout=StringIO())
    demo = Tenant.objects.get(slug="demo")
    viewer = make_member(demo, VIEWER_EMAIL, role="viewer", is_staff=True)
    # The seed writes no project template nor grant; each changelist needs a row to open.
    with tenant_context(demo):
        project_template_create(
            tenant=demo, name="Browser test", files={"about.md": "About {project_name}"}
        )
        project, document = Project.objects.first(), Document.objects.first()
    owner = User.objects.get(email=OWNER_EMAIL)
    project_restrict(tenant=demo, project=project, by=owner)
    project_access_grant(tenant=demo, project=project, user=viewer, by=owner)
    document_restrict(tenant=demo, document=document, by=owner)
    document_access_grant(tenant=demo, document=document, user=viewer, by=owner)
    # Nor a retention policy, nor a run of it, nor an audit chain cut by one: the demo's
    # events are a day past a one-day policy two days from now (nothing else is).
    retention_policy_set(tenant=demo, by=owner, exports_days=90, audit_events_days=1)
    retention_enforce(now=timezone.now() + timedelta(days=2))
    # Nor an erasure and its receipt.
    with tenant_context(demo):
        forgotten = document_ingest(tenant=demo, title="To forget", text="forget me")
    erase_document(document_id=forgotten.pk, requested_by="the browser test")
    # Nor a run built on changed sources: a document a seeded run read is re-ingested.
    with tenant_context(demo):
        read = Chunk.objects.filter(execution_sources__isnull=False).select_related("document")
        document = read.first().document
    # As the owner: a shorter text deletes chunks, and clearing them from the sources of
    # the restricted project's runs takes someone who sees those runs.
    with tenant_context(demo, user=owner):
        document_reingest(tenant=demo, document=document, text="Rewritten for the browser test.")
    # Nor another embedding model: the demo backfilled with hashing-v2 (as the worker's
    # job would), which gives the tenant's models and their vectors a row each.
    embedding_backfill_start(tenant=demo, model="hashing-v2", by=owner)
    with job_scope(BACKFILL_TASK, demo):
        embeddings_backfill(tenant=demo, model="hashing-v2")
    # Nor a quota: one the demo has used 90% of this month, so the warning banner shows.
    used = usage_of_month(tenant=demo).tokens
    tenant_quota_set(tenant=demo, by=owner, monthly_token_limit=max(used * 10 // 9, 1))
    # Nor a job for the worker (none runs here): an upload waits in the queue.
    document_create(tenant=demo, title="Waiting for the worker", text="Queued, not yet read.")
    return {OWNER_EMAIL: owner_password, VIEWER_EMAIL: PASSWORD}


@pytest.fixture
def pages_with_panels(seeded_demo) -> list[str]:
    """A version a run wrote, compared by default, with its first version, and with one
    that does not exist; the knowledge document whose re-ingestion flagged the runs that
    read it (seeded_demo), with the outputs built on it."""
    demo = Tenant.objects.get(slug="demo")
    with tenant_context(demo):
        version = (
            DocumentVersion.objects.filter(produced_by__isnull=False, version__gt=1)
            .order_by("-id")
            .first()
        )
        flagged = StaleSource.objects.exclude(document_id=None).order_by("-id").first()
    assert version is not None and flagged is not None, "the seed wrote no run's version"
    version_page = f"/admin/documents/documentversion/{version.pk}/change/"
    return [
        version_page,
        f"{version_page}?compare=1",
        f"{version_page}?compare=999999",
        f"/admin/documents/document/{flagged.document_id}/change/",
    ]


@pytest.fixture
def chromium() -> str:
    return require("chromium", "chromium")


def run_stories() -> list[str]:
    """The story pages of two seeded runs: one with a failed step, one that read a chunk
    re-ingested since (both in view of the viewer, granted the restricted project)."""
    demo = Tenant.objects.get(slug="demo")
    with tenant_context(demo, user=User.objects.get(email=OWNER_EMAIL)):
        failed = AgentExecution.objects.filter(status=AgentExecution.Status.FAILED).first()
        flag = StaleSource.objects.select_related("execution").first()
    assert failed and flag, "the demo has a failed run and one built on changed sources"
    return sorted(
        {run_story_url(failed.correlation_id), run_story_url(flag.execution.correlation_id)}
    )


def test_every_admin_page_loads_cleanly_for_the_owner_and_a_viewer(
    seeded_demo, pages_with_panels, live_server, chromium, tmp_path, settings
):
    # The upload seeded_demo leaves queued must not age past the worker_queue check's
    # limit while the pages are visited: on a loaded machine the visits pass 5 minutes.
    settings.WORKER_QUEUE_MAX_AGE_SECONDS = 3600
    models = registered_models()
    stories = run_stories()
    browsers: list[Browser] = []
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            for email, password in seeded_demo.items():
                context = launched.new_context(viewport=SCREEN)
                browser = Browser(context.new_page(), live_server.url, email)
                browsers.append(browser)
                viewer = email == VIEWER_EMAIL
                if not viewer:
                    # One wrong password first, so the lockout's records have rows to
                    # open; far below AXES_FAILURE_LIMIT, the logins below still pass.
                    browser.submit_login(email, "not-the-password")
                    assert "Please enter the correct" in browser.page.content()
                browser.log_in(email, password)
                assert browser.open("/admin/") == 200
                for model in models:
                    refused = viewer and (
                        model._meta.app_label not in TENANT_APPS or model in MANAGERS_ONLY
                    )
                    if refused:
                        browser.expected_statuses[changelist(model)] = REFUSED
                        assert browser.open(changelist(model)) == REFUSED, changelist(model)
                        continue
                    assert browser.open(changelist(model)) == 200, changelist(model)
                    browser.check_list_fits(changelist(model))
                    link = browser.first_change_link(model)
                    assert link, f"{email} sees no row to open in {changelist(model)}"
                    assert browser.open(link) == 200, link
                    if viewer:
                        assert not browser.has_save_button(), f"a viewer may change {link}"
                for path in pages_with_panels:
                    assert browser.open(path) == 200, path
                    if viewer:
                        assert not browser.has_save_button(), f"a viewer may change {path}"
                for story in stories:  # the run's story (issue 23): read-only for all
                    assert browser.open(story) == 200, story
                    assert "What each step did" in browser.page.content(), story
                    assert not browser.has_save_button(), f"{email} may change {story}"
                # The usage page's other chart and period (the defaults are opened above).
                assert browser.open(USAGE_TOKENS_90_DAYS) == 200
                assert browser.open("/health/") == 200
                browser.check_cancelled()
                context.close()
        finally:
            launched.close()

    visits = [visit for browser in browsers for visit in browser.visits]
    report = "\n".join(
        f"{visit.user:<26} {visit.status}  {visit.milliseconds:7.1f} ms  {visit.url}"
        for visit in visits
    )
    report_file = tmp_path / "browser-pages.txt"
    report_file.write_text(report + "\n")
    print(f"\n{len(visits)} pages, written to {report_file}:\n{report}")
    checks = [check for browser in browsers for check in browser.accessibility]
    axe_report = "\n".join(check.summary() for check in checks)
    axe_file = tmp_path / "axe-summary.txt"
    axe_file.write_text(axe_report + "\n")
    print(
        f"\naxe-core on {len(checks)} admin pages (rules violated/elements by impact),"
        f" written to {axe_file}:\n{axe_report}"
    )
    problems = [problem for browser in browsers for problem in browser.problems]
    assert problems == [], "\n".join(problems)
