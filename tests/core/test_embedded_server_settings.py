"""The embedded server's tuning (SERVER_SETTINGS) reaches data folders made before it.

Each test runs its own embedded server in a temporary folder, first under the settings
an older version of the project wrote (initdb's defaults but the preload), then under
the current ones.
"""

import json
import logging
import subprocess
import sys

import pytest
from django.conf import settings

from core.ops import embedded

OLD_SETTINGS = {"shared_preload_libraries": "'pg_stat_statements'"}


def shown(server: embedded.EmbeddedServer, *names: str) -> dict[str, str]:
    with embedded._connect(server.socket_dir, "postgres") as conn:
        return {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in names}


@pytest.fixture
def old_data_folder(tmp_path, monkeypatch):
    """A data folder bootstrapped, and left running, under the old settings."""
    with monkeypatch.context() as old:
        old.setattr(embedded, "SERVER_SETTINGS", OLD_SETTINGS)
        server = embedded.ensure_running(tmp_path)
    assert shown(server, "maintenance_work_mem", "shared_buffers") == {
        "maintenance_work_mem": "64MB",
        "shared_buffers": "128MB",
    }
    try:
        yield tmp_path
    finally:
        embedded.stop(tmp_path)


NEXT_COMMAND = """
import json, sys
from pathlib import Path
from core.ops import embedded
server = embedded.ensure_running(Path(sys.argv[1]))
with embedded._connect(server.socket_dir, "postgres") as conn:
    print(json.dumps({name: conn.execute(f"SHOW {name}").fetchone()[0] for name in sys.argv[2:]}))
"""


def test_an_existing_data_folder_gets_the_tuning_at_its_next_start(old_data_folder):
    embedded.stop(old_data_folder)
    # The next command is another process, as `make db-stop` then any command would be.
    names = ["maintenance_work_mem", "shared_buffers", "max_wal_size"]
    started = subprocess.run(
        [sys.executable, "-c", NEXT_COMMAND, str(old_data_folder), *names],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(started.stdout.splitlines()[-1]) == {
        "maintenance_work_mem": "2GB",
        "shared_buffers": "512MB",
        "max_wal_size": "4GB",
    }


def test_a_running_server_reloads_what_it_can_and_names_what_waits_for_a_restart(
    old_data_folder, caplog
):
    with caplog.at_level(logging.WARNING, logger=embedded.logger.name):
        server = embedded.ensure_running(old_data_folder)
    # Reloaded at once; shared_buffers can only change with the next start.
    assert shown(server, "maintenance_work_mem", "shared_buffers") == {
        "maintenance_work_mem": "2GB",
        "shared_buffers": "128MB",
    }
    assert "shared_buffers apply when it next starts" in caplog.text
