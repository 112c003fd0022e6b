"""Document-version creation throughput with 1 and N concurrent writers.

    .venv/bin/python benchmarks/versions.py [--writers 1 8] [--versions 200]

Writers share one (project, document type), the worst case: they serialise on the
version allocator's advisory lock. A second run gives each writer its own project.
Runs against the development database in a throw-away tenant, removed afterwards.
"""

from __future__ import annotations

import argparse
import threading
import time

from common import setup_django


def run(writers: int, versions: int, shared: bool) -> float:
    from django.db import connection

    from documents.services import document_version_create, project_create
    from tenancy.models import Tenant

    tenant = Tenant.objects.get(slug="bench")
    projects = [project_create(tenant=tenant, name=f"bench {n}") for n in range(writers)]
    barrier = threading.Barrier(writers + 1)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        project = projects[0] if shared else projects[n]
        try:
            barrier.wait()
            for i in range(versions):
                document_version_create(
                    tenant=tenant,
                    project=project,
                    document_type="plan",
                    content=f"writer {n} revision {i}\n" * 20,
                )
        except BaseException as error:  # noqa: BLE001 - reported after the run
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return writers * versions / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--versions", type=int, default=200, help="versions per writer")
    args = parser.parse_args()
    setup_django()
    from tenancy.context import system_context
    from tenancy.models import Tenant

    Tenant.objects.filter(slug="bench").delete()
    Tenant.objects.create(name="Benchmark", slug="bench")
    try:
        for shared in (True, False):
            for writers in args.writers:
                rate = run(writers, args.versions, shared)
                where = "one shared document" if shared else "one project each"
                print(f"{writers} writer(s), {where}: {rate:8.1f} versions/s")
    finally:
        with system_context("benchmark clean-up"):
            from documents.models import Project

            Project.all_objects.filter(tenant__slug="bench").delete()
            Tenant.objects.filter(slug="bench").delete()


if __name__ == "__main__":
    main()
