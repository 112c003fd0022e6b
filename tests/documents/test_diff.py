"""version_diff, content_diff and previous_version: what changed between two versions of a
document, or between a version and content not stored as one."""

import pytest
from django.core.exceptions import ValidationError

from documents import selectors, services
from documents.admin import diff_html


@pytest.fixture
def project(tenant_a):
    return services.project_create(tenant=tenant_a, name="Apollo")


def version(tenant, project, content, document_type="about", **metadata):
    return services.document_version_create(
        tenant=tenant,
        project=project,
        document_type=document_type,
        content=content,
        metadata=metadata,
    )


def test_diff_is_a_unified_diff_labelled_with_the_versions(tenant_a, project):
    v1 = version(tenant_a, project, "Goal\nShip it\nEnd")
    v2 = version(tenant_a, project, "Goal\nShip it soon\nEnd")
    diff = selectors.version_diff(tenant=tenant_a, old=v1, new=v2)
    assert diff.text.splitlines() == [
        "--- about v1",
        "+++ about v2",
        "@@ -1,3 +1,3 @@",
        " Goal",
        "-Ship it",
        "+Ship it soon",
        " End",
    ]
    assert diff.has_changes


def test_content_diff_compares_a_version_with_unstored_content(tenant_a, project):
    v1 = version(tenant_a, project, "Goal\nShip it\nEnd")
    diff = selectors.content_diff(
        tenant=tenant_a, base=v1, content="Goal\nShip it now\nEnd", label="proposal"
    )
    assert diff.text.splitlines()[:2] == ["--- about v1", "+++ proposal"]
    assert "+Ship it now" in diff.text.splitlines()
    assert diff.metadata == {"added": {}, "removed": {}, "changed": {}}


def test_diff_lists_metadata_added_removed_and_changed(tenant_a, project):
    v1 = version(tenant_a, project, "a", author="ann", words=1, draft=True)
    v2 = version(tenant_a, project, "b", author="bob", words=1, reviewed=True)
    diff = selectors.version_diff(tenant=tenant_a, old=v1, new=v2)
    assert diff.metadata == {
        "added": {"reviewed": True},
        "removed": {"draft": True},
        "changed": {"author": {"old": "ann", "new": "bob"}},
    }


def test_diff_of_a_version_with_itself_is_empty(tenant_a, project):
    v1 = version(tenant_a, project, "same")
    diff = selectors.version_diff(tenant=tenant_a, old=v1, new=v1)
    assert (diff.text, diff.has_changes) == ("", False)


def test_diff_html_escapes_the_content(tenant_a, project):
    v1 = version(tenant_a, project, "safe")
    v2 = version(tenant_a, project, "<script>alert(1)</script>")
    html = diff_html(selectors.version_diff(tenant=tenant_a, old=v1, new=v2))
    assert "<script>" not in html
    assert '<span class="diff-add">+&lt;script&gt;alert(1)&lt;/script&gt;</span>' in html


def test_versions_of_different_types_are_refused(tenant_a, project):
    about = version(tenant_a, project, "a")
    plan = version(tenant_a, project, "p", document_type="plan")
    with pytest.raises(ValidationError) as error:
        selectors.version_diff(tenant=tenant_a, old=about, new=plan)
    assert "new" in error.value.message_dict


def test_versions_of_different_projects_are_refused(tenant_a, project):
    other = services.project_create(tenant=tenant_a, name="Gemini")
    with pytest.raises(ValidationError) as error:
        selectors.version_diff(
            tenant=tenant_a, old=version(tenant_a, project, "a"), new=version(tenant_a, other, "a")
        )
    assert "new" in error.value.message_dict


def test_versions_of_another_tenant_are_refused(tenant_a, tenant_b, project):
    v1 = version(tenant_a, project, "a")
    with pytest.raises(ValidationError) as error:
        selectors.version_diff(tenant=tenant_b, old=v1, new=v1)
    assert "old" in error.value.message_dict


def test_previous_version_is_the_one_before_of_the_same_type(tenant_a, project):
    v1 = version(tenant_a, project, "one")
    version(tenant_a, project, "plan one", document_type="plan")
    v2 = version(tenant_a, project, "two")
    assert selectors.previous_version(tenant=tenant_a, version=v2) == v1
    assert selectors.previous_version(tenant=tenant_a, version=v1) is None


def test_diff_lines_say_what_each_line_is_for_the_template(tenant_a, project):
    v1 = version(tenant_a, project, "kept\nold")
    v2 = version(tenant_a, project, "kept\nnew")
    lines = selectors.version_diff(tenant=tenant_a, old=v1, new=v2).lines
    assert lines == [
        ("del", "--- about v1"),
        ("add", "+++ about v2"),
        ("hunk", "@@ -1,2 +1,2 @@"),
        ("context", " kept"),
        ("del", "-old"),
        ("add", "+new"),
    ]
