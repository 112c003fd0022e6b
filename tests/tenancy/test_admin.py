"""Tenant isolation in the admin (docs/security.md): alice, bob, charlie and the roles.

alice owns tenant A, bob owns tenant B, charlie is staff with no membership. Requests go
through the tenant middleware (not wrapped in tenant_context); rows are created inside it.
"""

import re

import pytest

from agents.models import AgentExecution
from documents.models import Chunk, Document, DocumentVersion, Project
from exports.models import Export
from tenancy import admin as tenancy_admin
from tenancy.admin_roles import ALL_ROLES, CONTENT_EDITOR_ROLES, TENANT_MANAGER_ROLES
from tenancy.context import tenant_context
from tenancy.models import Membership, MembershipRole, Tenant, User
from tenancy.services import membership_set
from tests.admin_helpers import REFUSED, admin_url, autocomplete, listed, logged_in
from tests.factories import make_member, make_tenant_rows

TENANT_OWNED = [Membership, Project, DocumentVersion, Document, Chunk, AgentExecution, Export]


@pytest.fixture
def rows_a(tenant_a, alice) -> dict:
    return make_tenant_rows(tenant_a, by=alice, label="A")


@pytest.fixture
def rows_b(tenant_b, bob) -> dict:
    return make_tenant_rows(tenant_b, by=bob, label="B")


def member(tenant, email: str, role: str) -> User:
    return make_member(tenant, email, role=role, is_staff=True)


def project_form(name: str) -> dict:
    return {"name": name, "status": "draft", "current_step": 1, "language": "en", "metadata": "{}"}


def project_name(project: Project) -> str:
    with tenant_context(project.tenant_id):
        return Project.all_objects.get(pk=project.pk).name


# --- alice, bob and charlie -------------------------------------------------------------


def test_alice_sees_her_tenants_project_and_not_bobs(client, alice, rows_a, rows_b):
    assert listed(logged_in(client, alice), Project) == [rows_a[Project].pk]


@pytest.mark.parametrize("model", TENANT_OWNED, ids=lambda m: m.__name__)
def test_alice_lists_only_tenant_a_rows(client, alice, rows_a, rows_b, model):
    assert listed(logged_in(client, alice), model) == [rows_a[model].pk]


def test_alice_cannot_open_bobs_project(client, alice, rows_a, rows_b):
    response = logged_in(client, alice).get(admin_url(Project, "change", rows_b[Project].pk))
    assert response.status_code in REFUSED


def test_alice_cannot_change_bobs_project(client, alice, rows_a, rows_b):
    project = rows_b[Project]
    response = logged_in(client, alice).post(
        admin_url(Project, "change", project.pk), project_form("Taken over")
    )
    assert response.status_code in REFUSED
    assert project_name(project) == "Project B"


@pytest.mark.parametrize("model", [Tenant, *TENANT_OWNED], ids=lambda m: m.__name__)
def test_charlie_sees_empty_changelists(client, charlie, rows_a, rows_b, model):
    assert listed(logged_in(client, charlie), model) == []


@pytest.mark.parametrize("model", TENANT_OWNED, ids=lambda m: m.__name__)
def test_charlie_cannot_open_tenant_a_rows(client, charlie, rows_a, model):
    response = logged_in(client, charlie).get(admin_url(model, "change", rows_a[model].pk))
    assert response.status_code in REFUSED


def test_charlie_cannot_open_tenant_a(client, charlie, tenant_a):
    response = logged_in(client, charlie).get(admin_url(Tenant, "change", tenant_a.pk))
    assert response.status_code in REFUSED


def test_charlie_cannot_add_rows(client, charlie, rows_a):
    assert logged_in(client, charlie).get(admin_url(Project, "add")).status_code == 403


def test_superuser_sees_every_tenant(client, superuser, rows_a, rows_b):
    listed_ids = listed(logged_in(client, superuser), Project)
    assert set(listed_ids) == {rows_a[Project].pk, rows_b[Project].pk}


def test_membership_rows_name_their_inputs(client, superuser, tenant_a, alice):
    """A tabular inline row's role and Delete box carry their column's name (aria-label)."""
    response = logged_in(client, superuser).get(admin_url(Tenant, "change", tenant_a.pk))
    assert response.status_code == 200
    page = response.content.decode()
    role = re.search(r'<select [^>]*name="[^"]*-0-role"[^>]*>', page)
    delete = re.search(r'<input [^>]*name="[^"]*-0-DELETE"[^>]*>', page)
    assert role and 'aria-label="Role"' in role.group(), role
    assert delete and 'aria-label="Delete"' in delete.group(), delete


# --- Roles ------------------------------------------------------------------------------


def test_viewer_can_view_a_project(client, tenant_a, rows_a):
    viewer = member(tenant_a, "vera@example.com", "viewer")
    response = logged_in(client, viewer).get(admin_url(Project, "change", rows_a[Project].pk))
    assert response.status_code == 200
    assert not response.context["has_change_permission"]


def test_viewer_cannot_change_a_project(client, tenant_a, rows_a):
    viewer = member(tenant_a, "vera@example.com", "viewer")
    project = rows_a[Project]
    response = logged_in(client, viewer).post(
        admin_url(Project, "change", project.pk), project_form("Renamed")
    )
    assert response.status_code == 403
    assert project_name(project) == "Project A"


def test_viewer_cannot_add_a_project(client, tenant_a, rows_a):
    viewer = member(tenant_a, "vera@example.com", "viewer")
    assert logged_in(client, viewer).get(admin_url(Project, "add")).status_code == 403


def test_editor_can_change_a_project(client, tenant_a, rows_a):
    editor = member(tenant_a, "eddie@example.com", "editor")
    project = rows_a[Project]
    response = logged_in(client, editor).post(
        admin_url(Project, "change", project.pk), project_form("Renamed")
    )
    assert response.status_code == 302
    assert project_name(project) == "Renamed"


def test_editor_cannot_change_memberships(client, tenant_a, alice, rows_a):
    editor = member(tenant_a, "eddie@example.com", "editor")
    membership = rows_a[Membership]
    client = logged_in(client, editor)
    response = client.post(admin_url(Membership, "change", membership.pk), {"role": "viewer"})
    assert response.status_code == 403
    assert client.get(admin_url(Membership, "add")).status_code == 403
    with tenant_context(tenant_a):
        assert Membership.objects.get(pk=membership.pk).role == "owner"


def test_editor_cannot_change_the_tenant(client, tenant_a, rows_a):
    editor = member(tenant_a, "eddie@example.com", "editor")
    response = logged_in(client, editor).post(
        admin_url(Tenant, "change", tenant_a.pk),
        {"name": "Renamed", "slug": "tenant-a", "settings": "{}"},
    )
    assert response.status_code == 403


def test_admin_can_add_a_membership(client, tenant_a, rows_a):
    admin_user = member(tenant_a, "ada@example.com", "admin")
    newcomer = User.objects.create_user(email="newcomer@example.com", password="x" * 12)
    response = logged_in(client, admin_user).post(
        admin_url(Membership, "add"),
        {"tenant": tenant_a.pk, "user": newcomer.pk, "role": "editor"},
    )
    assert response.status_code == 302
    with tenant_context(tenant_a):
        assert Membership.objects.get(tenant=tenant_a, user=newcomer).role == "editor"


def test_admin_can_change_a_membership_role(client, tenant_a, rows_a):
    admin_user = member(tenant_a, "ada@example.com", "admin")
    editor = member(tenant_a, "eddie@example.com", "editor")
    with tenant_context(tenant_a):
        membership = Membership.objects.get(user=editor)
    response = logged_in(client, admin_user).post(
        admin_url(Membership, "change", membership.pk), {"role": "viewer"}
    )
    assert response.status_code == 302
    with tenant_context(tenant_a):
        assert Membership.objects.get(pk=membership.pk).role == "viewer"


def test_admin_cannot_grant_the_owner_role(client, tenant_a, rows_a):
    admin_user = member(tenant_a, "ada@example.com", "admin")
    newcomer = User.objects.create_user(email="newcomer@example.com", password="x" * 12)
    response = logged_in(client, admin_user).post(
        admin_url(Membership, "add"),
        {"tenant": tenant_a.pk, "user": newcomer.pk, "role": "owner"},
    )
    assert response.status_code == 200
    assert "role" in response.context["adminform"].form.errors


def test_admin_cannot_change_an_owners_membership(client, tenant_a, rows_a):
    admin_user = member(tenant_a, "ada@example.com", "admin")
    response = logged_in(client, admin_user).post(
        admin_url(Membership, "change", rows_a[Membership].pk), {"role": "viewer"}
    )
    assert response.status_code == 403


def test_owner_can_grant_the_owner_role(client, tenant_a, alice, rows_a):
    newcomer = User.objects.create_user(email="newcomer@example.com", password="x" * 12)
    response = logged_in(client, alice).post(
        admin_url(Membership, "add"),
        {"tenant": tenant_a.pk, "user": newcomer.pk, "role": "owner"},
    )
    assert response.status_code == 302


def test_owner_can_change_their_tenant(client, tenant_a, alice):
    response = logged_in(client, alice).post(
        admin_url(Tenant, "change", tenant_a.pk),
        {"name": "Tenant A, renamed", "slug": "tenant-a", "settings": "{}"},
    )
    assert response.status_code == 302
    tenant_a.refresh_from_db()
    assert tenant_a.name == "Tenant A, renamed"


def test_staff_cannot_add_or_delete_tenants(client, tenant_a, alice):
    client = logged_in(client, alice)
    assert client.get(admin_url(Tenant, "add")).status_code == 403
    assert client.get(admin_url(Tenant, "delete", tenant_a.pk)).status_code == 403


def test_editor_cannot_write_where_they_only_view(client, tenant_a, tenant_b, rows_a):
    editor = member(tenant_a, "eddie@example.com", "editor")
    with tenant_context(tenant_b):
        Membership.objects.create(tenant=tenant_b, user=editor, role="viewer")
    response = logged_in(client, editor).post(
        admin_url(Project, "add"), {"tenant": tenant_b.pk, **project_form("Sneaky")}
    )
    assert response.status_code == 200
    assert "tenant" in response.context["adminform"].form.errors
    with tenant_context(tenant_b):
        assert not Project.objects.filter(name="Sneaky").exists()


def test_soft_delete_skips_rows_the_user_only_views(client, tenant_a, tenant_b, rows_a, rows_b):
    editor = member(tenant_a, "eddie@example.com", "editor")
    with tenant_context(tenant_b):
        Membership.objects.create(tenant=tenant_b, user=editor, role="viewer")
    selected = [rows_a[Project].pk, rows_b[Project].pk]
    response = logged_in(client, editor).post(
        admin_url(Project, "changelist"), {"action": "soft_delete", "_selected_action": selected}
    )
    assert response.status_code == 302
    with tenant_context(tenant_a, tenant_b):
        deleted = Project.all_objects.filter(pk__in=selected, deleted_at__isnull=False)
        assert list(deleted.values_list("pk", flat=True)) == [rows_a[Project].pk]


def test_only_superusers_hard_delete_projects(client, tenant_a, alice, superuser, rows_a):
    project = rows_a[Project]
    client = logged_in(client, alice)
    assert client.get(admin_url(Project, "delete", project.pk)).status_code == 403
    client.post(
        admin_url(Project, "changelist"),
        {"action": "delete_selected", "_selected_action": [project.pk], "post": "yes"},
    )
    with tenant_context(tenant_a):
        assert Project.all_objects.filter(pk=project.pk).exists()
    client = logged_in(client, superuser)
    assert client.post(admin_url(Project, "delete", project.pk), {"post": "yes"}).status_code == 302
    with tenant_context(tenant_a):
        assert not Project.all_objects.filter(pk=project.pk).exists()


def test_a_version_page_refuses_every_change(client, tenant_a, rows_a):
    """A version's page is a view (issue 23): content, number and metadata alike, a POST
    is refused and nothing is written."""
    editor = member(tenant_a, "eddie@example.com", "editor")
    version = rows_a[DocumentVersion]
    response = logged_in(client, editor).post(
        admin_url(DocumentVersion, "change", version.pk),
        {"content": "Rewritten history", "version": 7, "metadata": '{"reviewed": true}'},
    )
    assert response.status_code == 403
    with tenant_context(tenant_a):
        version.refresh_from_db()
    assert (version.content, version.version, version.metadata) == ("About A", 1, {})


def test_a_row_cannot_point_at_another_tenants_parent(client, superuser, rows_a, rows_b):
    response = logged_in(client, superuser).post(
        admin_url(Document, "add"),
        {"tenant": rows_a[Project].tenant_id, "project": rows_b[Project].pk, "metadata": "{}"},
    )
    assert response.status_code == 200
    assert "project" in response.context["adminform"].form.errors


# --- Choices and autocomplete -----------------------------------------------------------


def test_tenant_choices_are_the_users_tenants(client, alice, tenant_a, tenant_b):
    response = logged_in(client, alice).get(admin_url(Project, "add"))
    choices = response.context["adminform"].form.fields["tenant"].queryset
    assert list(choices) == [tenant_a]


def test_project_autocomplete_offers_only_own_tenants(client, alice, charlie, rows_a, rows_b):
    assert autocomplete(logged_in(client, alice), "exports", "export", "project") == [
        str(rows_a[Project].pk)
    ]
    assert autocomplete(logged_in(client, charlie), "exports", "export", "project") == []


def test_tenant_autocomplete_offers_only_own_tenants(client, alice, tenant_a, tenant_b):
    ids = autocomplete(logged_in(client, alice), "documents", "project", "tenant")
    assert ids == [str(tenant_a.pk)]


def test_tenant_filter_lists_only_own_tenants(client, alice, rows_a, rows_b):
    response = logged_in(client, alice).get(admin_url(Project, "changelist"))
    page = response.content.decode()
    assert "Tenant A" in page
    assert "Tenant B" not in page


def test_membership_user_autocomplete_finds_an_exact_email(client, tenant_a, bob):
    admin_user = member(tenant_a, "ada@example.com", "admin")
    client = logged_in(client, admin_user)
    assert autocomplete(client, "tenancy", "membership", "user", "bob@example.com") == [str(bob.pk)]
    assert autocomplete(client, "tenancy", "membership", "user", "bob") == []


def test_editor_cannot_look_users_up_by_email(client, tenant_a, bob):
    editor = member(tenant_a, "eddie@example.com", "editor")
    ids = autocomplete(
        logged_in(client, editor), "tenancy", "membership", "user", "bob@example.com"
    )
    assert ids == []


# --- Users ------------------------------------------------------------------------------


def test_staff_see_only_themselves_in_users(client, alice, bob):
    assert listed(logged_in(client, alice), User) == [alice.pk]


def test_staff_cannot_open_another_user(client, alice, bob):
    response = logged_in(client, alice).get(admin_url(User, "change", bob.pk))
    assert response.status_code in REFUSED


def test_staff_view_themselves_read_only(client, alice):
    response = logged_in(client, alice).get(admin_url(User, "change", alice.pk))
    assert response.status_code == 200
    assert not response.context["has_change_permission"]


def test_staff_cannot_add_users(client, alice):
    assert logged_in(client, alice).get(admin_url(User, "add")).status_code == 403


def test_superuser_manages_users(client, superuser, alice, bob):
    assert set(listed(logged_in(client, superuser), User)) == {superuser.pk, alice.pk, bob.pk}


# --- Memberships are written through membership_set ---------------------------------------


@pytest.fixture
def service_calls(monkeypatch) -> list[tuple]:
    """Records each call of membership_set by the admin, which still runs the real one."""
    calls = []

    def recording(*, tenant, user, role):
        calls.append((tenant.pk, user.pk, role))
        return membership_set(tenant=tenant, user=user, role=role)

    monkeypatch.setattr(tenancy_admin, "membership_set", recording)
    return calls


def membership_of(tenant, user) -> Membership | None:
    with tenant_context(tenant):
        return Membership.objects.filter(tenant=tenant, user=user).first()


def inline_post(client, url: str, fields: dict, rows: list[dict]) -> object:
    """POST a change form with its one membership inline holding `rows` (existing first)."""
    formset = client.get(url).context["inline_admin_formsets"][0].formset
    prefix = formset.prefix
    data = {
        **fields,
        f"{prefix}-TOTAL_FORMS": len(rows),
        f"{prefix}-INITIAL_FORMS": len(formset.initial_forms),
        f"{prefix}-MIN_NUM_FORMS": 0,
        f"{prefix}-MAX_NUM_FORMS": 1000,
    }
    for index, row in enumerate(rows):
        data.update({f"{prefix}-{index}-{name}": value for name, value in row.items()})
    return client.post(url, data)


TENANT_A_FIELDS = {"name": "Tenant A", "slug": "tenant-a", "settings": "{}", "is_active": "on"}


def test_tenant_inline_adds_a_member_through_the_service(
    client, superuser, tenant_a, alice, bob, service_calls
):
    owner = membership_of(tenant_a, alice)
    response = inline_post(
        logged_in(client, superuser),
        admin_url(Tenant, "change", tenant_a.pk),
        TENANT_A_FIELDS,
        [
            {"id": owner.pk, "user": alice.pk, "role": "owner"},
            {"user": bob.pk, "role": "editor"},
        ],
    )
    assert response.status_code == 302
    assert service_calls == [(tenant_a.pk, bob.pk, "editor")]
    assert membership_of(tenant_a, bob).role == "editor"


def test_tenant_inline_changes_a_role_through_the_service(
    client, superuser, tenant_a, alice, service_calls
):
    owner = membership_of(tenant_a, alice)
    response = inline_post(
        logged_in(client, superuser),
        admin_url(Tenant, "change", tenant_a.pk),
        TENANT_A_FIELDS,
        [{"id": owner.pk, "user": alice.pk, "role": "admin"}],
    )
    assert response.status_code == 302
    assert service_calls == [(tenant_a.pk, alice.pk, "admin")]
    assert membership_of(tenant_a, alice).pk == owner.pk
    assert membership_of(tenant_a, alice).role == "admin"


def test_tenant_inline_cannot_move_a_membership_to_another_user(
    client, superuser, tenant_a, alice, bob, service_calls
):
    owner = membership_of(tenant_a, alice)
    response = inline_post(
        logged_in(client, superuser),
        admin_url(Tenant, "change", tenant_a.pk),
        TENANT_A_FIELDS,
        [{"id": owner.pk, "user": bob.pk, "role": "owner"}],
    )
    assert response.status_code == 200
    (formset,) = [inline.formset for inline in response.context["inline_admin_formsets"]]
    assert formset.errors[0]["user"] == ["Remove this membership and add a new one instead."]
    assert service_calls == []
    assert membership_of(tenant_a, alice).role == "owner"
    assert membership_of(tenant_a, bob) is None


def test_tenant_inline_removes_a_member(client, superuser, tenant_a, alice, bob):
    with tenant_context(tenant_a):
        editor = Membership.objects.create(tenant=tenant_a, user=bob, role="editor")
    owner = membership_of(tenant_a, alice)
    response = inline_post(
        logged_in(client, superuser),
        admin_url(Tenant, "change", tenant_a.pk),
        TENANT_A_FIELDS,
        [
            {"id": owner.pk, "user": alice.pk, "role": "owner"},
            {"id": editor.pk, "user": bob.pk, "role": "editor", "DELETE": "on"},
        ],
    )
    assert response.status_code == 302
    assert membership_of(tenant_a, bob) is None
    assert membership_of(tenant_a, alice).role == "owner"


def test_user_inline_adds_a_membership_through_the_service(
    client, superuser, tenant_a, tenant_b, alice, service_calls
):
    owner = membership_of(tenant_a, alice)
    response = inline_post(
        logged_in(client, superuser),
        admin_url(User, "change", alice.pk),
        {"email": alice.email, "name": alice.name, "profile_data": "{}", "is_active": "on"},
        [
            {"id": owner.pk, "tenant": tenant_a.pk, "role": "owner"},
            {"tenant": tenant_b.pk, "role": "viewer"},
        ],
    )
    assert response.status_code == 302
    assert service_calls == [(tenant_b.pk, alice.pk, "viewer")]
    assert membership_of(tenant_b, alice).role == "viewer"


def test_membership_admin_changes_a_role_through_the_service(
    client, tenant_a, rows_a, service_calls
):
    admin_user = member(tenant_a, "ada@example.com", "admin")
    editor = member(tenant_a, "eddie@example.com", "editor")
    membership = membership_of(tenant_a, editor)
    response = logged_in(client, admin_user).post(
        admin_url(Membership, "change", membership.pk), {"role": "viewer"}
    )
    assert response.status_code == 302
    assert service_calls == [(tenant_a.pk, editor.pk, "viewer")]
    assert membership_of(tenant_a, editor).role == "viewer"


def test_the_admin_roles_cover_every_membership_role_and_nest():
    assert set(MembershipRole.values) == ALL_ROLES
    assert TENANT_MANAGER_ROLES < CONTENT_EDITOR_ROLES < ALL_ROLES
