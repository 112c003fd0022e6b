"""System programs that some tests start themselves (qemu-user, pgbouncer, chromium).

Locally, a missing program skips its tests with the Debian package to install. Under
`.ci/run`, which installs the packages and sets REQUIRE_SYSTEM_PROGRAMS=1, the same
absence fails them instead, so CI always runs them.
"""

import os
import shutil

import pytest

REQUIRED = os.environ.get("REQUIRE_SYSTEM_PROGRAMS") == "1"


def require(program: str, package: str) -> str:
    """The program's path; skip (locally) or fail (CI) when it is not installed."""
    path = shutil.which(program)
    if path:
        return path
    message = f"{program} is not installed: apt-get install {package}"
    if REQUIRED:
        pytest.fail(f"{message} (REQUIRE_SYSTEM_PROGRAMS=1: .ci/run should have installed it)")
    pytest.skip(message)
