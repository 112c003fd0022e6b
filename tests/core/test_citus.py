"""The project on a real Citus cluster: a coordinator and two workers built from the
vendored Citus source (tests/citus_cluster.py). Skipped locally, naming the Debian
packages, where Citus cannot be built; `.ci/run` installs them and requires these tests.
"""

from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from core.ops import embedded
from tests import citus_cluster as citus


def test_every_node_has_citus_and_the_coordinator_two_active_workers(citus_cluster, citus_database):
    for node in citus_cluster.nodes:
        with node.connect(citus_database) as conn:
            (version,) = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'citus'"
            ).fetchone()
            assert version.startswith("14.0")
    with citus_cluster.coordinator.connect(citus_database) as conn:
        workers = conn.execute(
            "SELECT nodeport FROM pg_dist_node"
            " WHERE noderole = 'primary' AND isactive AND groupid <> 0 ORDER BY nodeport"
        ).fetchall()
    assert [port for (port,) in workers] == sorted(w.port for w in citus_cluster.workers)


def test_migrate_as_the_owner_on_the_coordinator_leaves_nothing_unapplied(
    citus_cluster, citus_database, django_db_blocker
):
    # The fixture ran `migrate` as the non-superuser owner with no manual step.
    with django_db_blocker.unblock(), citus.django_on(citus_cluster, citus_database):
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user, current_setting('is_superuser')")
            assert cursor.fetchone() == (embedded.RUNTIME_ROLE, "off")
        executor = MigrationExecutor(connection)
        unapplied = executor.migration_plan(executor.loader.graph.leaf_nodes())
    assert unapplied == []
    with citus_cluster.coordinator.connect(citus_database) as conn:
        (owner,) = conn.execute(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'django_migrations'"
        ).fetchone()
        (superuser,) = conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = %s", [embedded.OWNER_ROLE]
        ).fetchone()
    assert (owner, superuser) == (embedded.OWNER_ROLE, False)
