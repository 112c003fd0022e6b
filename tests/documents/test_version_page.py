"""A version's page (documents.admin.versions): view only, the content first, a diff with
any other version of the same document (`?compare=`), the run that wrote it and the
sources that run read (the agents' panel, agents.admin.page_panels).

Requests go through the tenant middleware; rows are made through the services.
"""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.services import (
    execution_create,
    execution_finish,
    execution_record_sources,
    execution_start,
)
from documents.models import Chunk, DocumentVersion
from documents.services import (
    document_ingest,
    document_reingest,
    document_version_create,
    project_create,
)
from tenancy.context import tenant_context
from tests.admin_helpers import REFUSED, admin_url, logged_in
from tests.factories import make_member

pytestmark = pytest.mark.django_db(transaction=True)

CHUNKING = {"chunk_size": 4, "chunk_overlap": 0}
TEXT = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"


@pytest.fixture
def plan(tenant_a, alice) -> list[DocumentVersion]:
    """Three versions of Apollo's plan, and a specification of the same project."""
    project = project_create(tenant=tenant_a, name="Apollo", by=alice)
    contents = [
        "# Plan\n\nBuild the rocket\nFuel <it>\nLaunch",
        "# Plan\n\nBuild the rocket\nLaunch\nLand on the Moon",
        "# Plan\n\nBuild the rocket\nLaunch\nLand on the Moon\nCome back",
    ]
    versions = [
        document_version_create(
            tenant=tenant_a, project=project, document_type="plan", content=content
        )
        for content in contents
    ]
    document_version_create(
        tenant=tenant_a, project=project, document_type="specification", content="Spec"
    )
    return versions


def page(client, user, version: DocumentVersion, **params):
    return logged_in(client, user).get(admin_url(DocumentVersion, "change", version.pk), params)


def body(response) -> str:
    """The page's main content (after the styles, which name the classes too)."""
    return response.content.decode().split("</style>")[-1]


def test_the_page_is_a_view_titled_by_version_and_document(client, alice, plan):
    response = page(client, alice, plan[1])
    assert response.status_code == 200
    html = response.content.decode()
    assert "<title>View version 2 of the plan of Apollo |" in html
    assert "<h1>View version 2 of the plan of Apollo</h1>" in html
    assert 'name="_save"' not in html
    assert not response.context["has_change_permission"]


def test_the_content_comes_first_as_text_then_the_diff_then_the_details(client, alice, plan):
    html = body(page(client, alice, plan[0]))
    content = html.index('<pre class="version-content" tabindex="0">')
    diff = html.index("Compare with another version")
    details = html.index("Details")
    assert content < diff < details
    # Escaped, as written: Markdown is shown as its text, never as markup.
    assert "# Plan\n\nBuild the rocket\nFuel &lt;it&gt;\nLaunch</pre>" in html


def test_the_default_diff_is_with_the_previous_version(client, alice, plan):
    html = body(page(client, alice, plan[1]))
    assert "Changes from plan v1 to plan v2" in html
    assert '<span class="diff-add">+Land on the Moon</span>' in html
    assert '<span class="diff-del">-Fuel &lt;it&gt;</span>' in html
    assert f'href="{admin_url(DocumentVersion, "change", plan[0].pk)}">open plan v1</a>' in html


@pytest.mark.parametrize("asked", ["number", "id"])
def test_the_diff_compares_with_any_version_by_number_or_id(client, alice, plan, asked):
    first = plan[0]
    value = "1" if asked == "number" else str(first.pk)
    html = body(page(client, alice, plan[2], compare=value))
    assert "Changes from plan v1 to plan v3" in html
    assert '<span class="diff-add">+Come back</span>' in html
    assert '<span class="diff-del">-Fuel &lt;it&gt;</span>' in html
    assert '<option value="1" selected>' in html


def test_a_later_version_is_the_new_side(client, alice, plan):
    html = body(page(client, alice, plan[0], compare="3"))
    assert "Changes from plan v1 to plan v3" in html
    assert '<span class="diff-add">+Come back</span>' in html


def test_the_compare_form_offers_the_documents_other_versions_only(client, alice, plan):
    html = body(page(client, alice, plan[1]))
    form = html[html.index('<form method="get" class="version-compare">') :]
    form = form[: form.index("</form>")]
    assert re.findall(r'<option value="(\d+)"', form) == ["3", "1"]
    assert 'name="compare"' in form


def test_the_first_version_has_no_default_diff_and_says_so(client, alice, plan):
    html = body(page(client, alice, plan[0]))
    assert "This is the first version: choose a later one to compare." in html
    assert '<pre class="version-diff"' not in html


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        ("9", "The plan of Apollo has no version “9”"),
        ("0", "“0” is neither a version number"),
        ("-1", "“-1” is neither a version number"),
        ("99999999999999999999", "“99999999999999999999” is neither a version number"),
        ("latest", "“latest” is neither a version number"),
        ("²", "“²” is neither a version number"),
        ("1" * 5000, f"“{'1' * 100}” is neither a version number"),
        ("2", "That is this version"),
    ],
)
def test_a_bad_compare_says_what_to_do_and_shows_no_diff(client, alice, plan, asked, message):
    response = page(client, alice, plan[1], compare=asked)
    assert response.status_code == 200
    html = body(response)
    assert message in html
    assert '<pre class="version-diff"' not in html


def test_another_documents_version_is_not_compared(client, alice, plan):
    with tenant_context(plan[0].tenant_id):
        spec = DocumentVersion.objects.get(document_type="specification")
    html = body(page(client, alice, plan[1], compare=str(spec.pk)))
    assert f"The plan of Apollo has no version “{spec.pk}”" in html
    assert "Spec" not in html.split("Compare with another version")[1].split("Details")[0]


def test_another_tenants_version_is_never_read(client, alice, bob, tenant_b, plan):
    theirs_project = project_create(tenant=tenant_b, name="Zeus", by=bob)
    theirs = document_version_create(
        tenant=tenant_b, project=theirs_project, document_type="plan", content="Their secret"
    )
    html = body(page(client, alice, plan[1], compare=str(theirs.pk)))
    assert "has no version" in html
    assert "Their secret" not in html
    # And their version's own page is missing for alice, as before.
    assert page(client, alice, theirs).status_code in REFUSED


def test_a_viewer_sees_it_read_only_and_a_forged_post_is_refused(client, tenant_a, plan):
    viewer = make_member(tenant_a, "vera@example.com", role="viewer", is_staff=True)
    response = page(client, viewer, plan[1], compare="3")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="_save"' not in html
    assert "Changes from plan v2 to plan v3" in html
    url = admin_url(DocumentVersion, "change", plan[1].pk)
    forged = client.post(url, {"readability_score": "10", "metadata": "{}"})
    assert forged.status_code == 403
    with tenant_context(tenant_a):
        assert DocumentVersion.objects.get(pk=plan[1].pk).readability_score is None


def test_an_editor_cannot_change_a_version_either(client, alice, tenant_a, plan):
    editor = make_member(tenant_a, "ed@example.com", role="editor", is_staff=True)
    url = admin_url(DocumentVersion, "change", plan[1].pk)
    assert logged_in(client, editor).post(url, {"readability_score": "10"}).status_code == 403


# --- The run that wrote it and what it read ------------------------------------------------


@pytest.fixture
def written_by_a_run(tenant_a, alice, file_storages):
    """A document of three chunks; a run whose retriever read them and whose writer wrote
    version 1 of the project's about; then the document's middle chunk changed."""
    document = document_ingest(tenant=tenant_a, title="Handbook", text=TEXT, **CHUNKING)
    project = project_create(tenant=tenant_a, name="Gemini", by=alice)
    root = execution_start(
        tenant=tenant_a,
        execution=execution_create(
            tenant=tenant_a, project=project, agent_type="planner", model="model-x"
        ),
    )
    retriever = execution_start(
        tenant=tenant_a,
        execution=execution_create(
            tenant=tenant_a, project=project, agent_type="retriever", parent=root
        ),
    )
    with tenant_context(tenant_a):
        chunks = list(Chunk.objects.filter(document=document).order_by("ordinal"))
    execution_record_sources(
        tenant=tenant_a,
        execution=retriever,
        results=[{"chunk": chunk, "score": 0.9 - i / 10} for i, chunk in enumerate(chunks)],
    )
    execution_finish(tenant=tenant_a, execution=retriever)
    writer = execution_start(
        tenant=tenant_a,
        execution=execution_create(
            tenant=tenant_a, project=project, agent_type="writer", parent=root, model="model-w"
        ),
    )
    version = document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="From the handbook."
    )
    execution_finish(
        tenant=tenant_a,
        execution=writer,
        produced_version=version,
        prompt_tokens=100,
        completion_tokens=20,
    )
    execution_finish(tenant=tenant_a, execution=root)
    changed = "alpha beta gamma delta EPSILON ZETA ETA THETA iota kappa lambda mu"
    document_reingest(tenant=tenant_a, document=document, text=changed, **CHUNKING)
    return {"version": version, "writer": writer, "root": root, "chunks": chunks}


def run_panel(html: str) -> str:
    return html[html.index("The run that wrote this version") : html.index("Details")]


def test_the_page_shows_the_run_that_wrote_it(client, alice, written_by_a_run):
    html = body(page(client, alice, written_by_a_run["version"]))
    panel = run_panel(html)
    writer = written_by_a_run["writer"]
    assert f"/admin/agents/agentexecution/{writer.pk}/change/" in panel
    assert ">writer</a>" in panel
    assert "model-w" in panel
    assert "Succeeded" in panel
    assert "<td>120</td>" in panel  # its tokens
    assert f"/admin/agents/agentexecution/run/{writer.correlation_id}/" in panel  # its story
    assert "3 steps" in panel


def test_the_page_shows_the_sources_the_run_read_and_which_changed(client, alice, written_by_a_run):
    panel = run_panel(body(page(client, alice, written_by_a_run["version"])))
    rows = re.findall(r"<tr><td><a [^>]*>retriever</a></td>(.*?)</tr>", panel, re.S)
    assert len(rows) == 3
    scores = [re.findall(r"<td>([\d.]+)</td>", row)[1] for row in rows]
    assert scores == ["0.9000", "0.8000", "0.7000"]
    assert "alpha beta gamma delta" in rows[0]
    assert "epsilon zeta eta theta" in rows[1]
    # Only the middle chunk changed since the run read it.
    assert ["Re-ingested" in row for row in rows] == [False, True, False]
    for chunk in written_by_a_run["chunks"]:
        assert f"/admin/documents/chunk/{chunk.pk}/change/" in panel


def test_a_version_no_run_wrote_says_so(client, alice, plan):
    panel = run_panel(body(page(client, alice, plan[1])))
    assert "No agent run is recorded as writing this version" in panel


def test_a_viewer_sees_the_run_too(client, tenant_a, written_by_a_run):
    viewer = make_member(tenant_a, "vera@example.com", role="viewer", is_staff=True)
    response = page(client, viewer, written_by_a_run["version"])
    assert response.status_code == 200
    assert ">writer</a>" in run_panel(body(response))
    assert 'name="_save"' not in response.content.decode()


def test_the_page_reads_a_bounded_number_of_queries(client, alice, tenant_a, written_by_a_run):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert page(client, alice, written_by_a_run["version"]).status_code == 200
        return len(captured)

    queries()  # the first request of a session reads more (the session, the user)
    before = queries()
    # Ten more runs' worth of versions and sources do not add a query.
    project = written_by_a_run["version"].project
    with tenant_context(tenant_a):
        chunks = list(Chunk.objects.all())
    for _ in range(10):
        run = execution_start(
            tenant=tenant_a,
            execution=execution_create(tenant=tenant_a, project=project, agent_type="writer"),
        )
        execution_record_sources(
            tenant=tenant_a, execution=run, results=[{"chunk": c, "score": 0.5} for c in chunks]
        )
        execution_finish(
            tenant=tenant_a, execution=run, produced_version=written_by_a_run["version"]
        )
        document_version_create(
            tenant=tenant_a, project=project, document_type="about", content=f"v {run.pk}"
        )
    assert queries() == before
