from django.db import connection

from documents.models import Project


def test_tests_run_as_the_runtime_role(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        user, is_super, bypass = cursor.fetchone()
    assert (user, is_super, bypass) == ("agentic_app", False, False)


def test_a_tenant_sees_its_project(in_tenant_a):
    Project.objects.create(tenant=in_tenant_a, name="p")
    assert Project.objects.count() == 1
