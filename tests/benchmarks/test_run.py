"""`make bench` at its smallest scale, end to end, so that it cannot rot.

A benchmark, not a test of speed: nothing here asserts a time, only that every path
was measured on both sides and compared.
"""

import importlib.util
import json
import subprocess
import sys

import pytest
from django.conf import settings

from benchmarks import database
from benchmarks.run import PATH_ORDER
from tests.citus_cluster import citus_binaries

pytestmark = [pytest.mark.slow, pytest.mark.system_program]

PLOTS = ("hnsw_recall_latency.png", "tenant_share.png", "ratios.png")
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One `python -m benchmarks --scale tiny` run, in a database of this test run's own."""
    citus_binaries()  # --citus builds Citus: skips (locally) naming what is missing
    out = tmp_path_factory.mktemp("bench")
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "--scale",
        "tiny",
        "--json",
        str(out / "report.json"),
        "--database",
        f"{settings.DATABASES['default']['TEST']['NAME']}_bench",
        # The replica read path too, on its own throwaway primary and standby.
        "--replica",
        # Search and a version write on a Citus cluster beside one plain server.
        "--citus",
    ]
    if HAS_MATPLOTLIB:
        command += ["--plot", str(out / "plots")]
    completed = subprocess.run(
        command, cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=900
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads((out / "report.json").read_text()), completed.stdout, out


def test_every_path_is_measured_on_both_sides_with_a_ratio(tiny_run):
    report, _table, _out = tiny_run
    assert [path["key"] for path in report["paths"]] == list(PATH_ORDER)
    for path in report["paths"]:
        for side in ("project", "reference"):
            assert path[side]["median"] > 0, (path["key"], side)
            assert path[side]["p25"] <= path[side]["median"] <= path[side]["p75"]
        assert path["ratio"] == pytest.approx(
            path["project"]["median"] / path["reference"]["median"]
        )


def test_the_table_shows_every_path(tiny_run):
    report, table, _out = tiny_run
    for path in report["paths"]:
        assert path["title"] in table


def test_recall_is_measured_over_the_ef_search_sweep_and_the_tenant_shares(tiny_run):
    report, _table, _out = tiny_run
    sweep = {point["ef_search"]: point for point in report["recall"]["ef_sweep"]}
    assert {40, 100, 200} <= sweep.keys()
    # Measured smallest tenant first: its prepared statement then serves the bigger ones.
    shares = [share["share"] for share in report["recall"]["by_share"]]
    assert shares == [0.01, 0.10, 0.50]
    recalls = [point["recall"] for point in sweep.values()] + [
        share[side]["recall"]
        for share in report["recall"]["by_share"]
        for side in ("chunk_search", "raw_knn")
    ]
    assert all(0 <= recall <= 1 for recall in recalls)


def test_search_as_a_member_is_measured_at_each_visible_share_with_its_recall(tiny_run):
    report, table, _out = tiny_run
    # Measured from the largest share down: each hides more of the tenant.
    shares = [point["share"] for point in report["recall"]["access"]]
    assert shares == [0.50, 0.10, 0.01]
    for point in report["recall"]["access"]:
        assert 0 < point["visible_share"] <= 0.5 + 0.1
        assert 0 <= point["recall"] <= 1
        assert 0 <= point["unrestricted"]["recall"] <= 1
    paths = {path["key"]: path for path in report["paths"]}
    for share in (1, 10, 50):
        notes = paths[f"chunk_search_restricted_{share}"]["notes"]
        assert notes["visible_chunks"] < notes["tenant_chunks"]
        assert notes["viewer_plans"], share  # the kNN statements, explained
    assert "member sees 1% of the 50% tenant" in table
    assert "(goal >= 0.95" in table


def test_search_on_a_switched_model_is_measured_and_the_model_pruned_after(tiny_run):
    report, table, _out = tiny_run
    notes = {path["key"]: path for path in report["paths"]}["chunk_search_switched_model"]["notes"]
    assert (notes["model"], notes["dimension"]) == ("hashing-v2", 768)
    # Every chunk of the 50% tenant backfilled, switched to, rolled back and pruned (the
    # run stops when the model's index is still there after the prune).
    steps = notes["switch_steps"]
    assert steps["chunks_backfilled"] > 0
    for step in ("backfill_s", "switch_s", "rollback_s", "forget_s", "prune_s"):
        assert steps[step] > 0, step
    # The reference ran under the settings chunk_search set, captured from its statements.
    assert notes["hnsw_settings"]["hnsw.iterative_scan"] == "relaxed_order"
    for side in ("project", "reference"):
        assert 0 <= notes["recall_at_10"][side] <= 1
    assert report["recall"]["switched_model"]["model"] == "hashing-v2"
    assert "switched to hashing-v2" in table


def test_upload_to_ready_is_measured_through_a_worker_process(tiny_run):
    report, _table, _out = tiny_run
    path = {path["key"]: path for path in report["paths"]}["upload_to_ready"]
    notes = path["notes"]
    assert notes["chunks"] > 1
    assert all(size >= 15_000 for size in notes["bytes"])
    # The worker's stages, as the bench saw them: it waited in the queue, then was embedded.
    assert {"queued", "embedding", "upload call"} <= notes["stages_ms"].keys()
    assert path["project"]["median"] > notes["stages_ms"]["upload call"]


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="--plot needs matplotlib (pip install matplotlib)")
def test_the_plots_are_written(tiny_run):
    _report, _table, out = tiny_run
    for name in PLOTS:
        assert (out / "plots" / name).read_bytes().startswith(b"\x89PNG"), name


@pytest.mark.parametrize("name", ["agentic_dev", "test_agentic_dev", "bench'; DROP DATABASE x"])
def test_it_refuses_a_database_it_must_not_drop(name, monkeypatch):
    # The names the benchmark process sees; in this one pytest-django has switched NAME
    # to the test database.
    default = settings.DATABASES["default"]
    monkeypatch.setitem(default, "NAME", "agentic_dev")
    monkeypatch.setitem(default, "TEST", {**default["TEST"], "NAME": "test_agentic_dev"})
    with pytest.raises(SystemExit):
        database.check_name(name)


def test_it_accepts_a_database_of_its_own():
    assert database.check_name("agentic_bench") == "agentic_bench"
