"""System programs that some tests start themselves (qemu-user, pgbouncer, chromium).

Locally, a missing program skips its tests with the Debian package to install. Under
`.ci/run`, which installs the packages and sets REQUIRE_SYSTEM_PROGRAMS=1, the same
absence fails them instead, so CI always runs them.
"""

import os
import shutil
from typing import NoReturn

import pytest

REQUIRED = os.environ.get("REQUIRE_SYSTEM_PROGRAMS") == "1"
# Debian installs daemons such as pgbouncer in the sbin folders, which are not on a
# normal user's PATH: an installed program must not look missing there.
SBIN_FOLDERS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def require(program: str, package: str) -> str:
    """The program's path; skip (locally) or fail (CI) when it is not installed."""
    search_path = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN_FOLDERS])
    path = shutil.which(program, path=search_path)
    if path:
        return path
    missing(f"{program} is not installed: apt-get install {package}")


def missing(message: str) -> NoReturn:
    """Skip (locally) or fail (CI) a test whose system program or file is absent."""
    if REQUIRED:
        pytest.fail(f"{message} (REQUIRE_SYSTEM_PROGRAMS=1: .ci/run should have installed it)")
    pytest.skip(message)
