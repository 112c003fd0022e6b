"""A small file system of the test's own, to fill up: a tmpfs mounted in a temporary
folder (root only, as the tests run in CI) and unmounted by the test.

Locally, where mounting is not permitted, its tests skip saying so; under `.ci/run`
(REQUIRE_SYSTEM_PROGRAMS=1) they fail instead, like tests/system_programs.py.
"""

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.system_programs import REQUIRED, require


@contextmanager
def small_filesystem(folder: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of `size_kib` KiB mounted at `folder` for the block."""
    mount = require("mount", "mount")
    umount = require("umount", "mount")
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0777", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        message = f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}"
        if REQUIRED:
            pytest.fail(f"{message} (REQUIRE_SYSTEM_PROGRAMS=1: CI runs as root)")
        pytest.skip(message)
    try:
        yield folder
    finally:
        subprocess.run([umount, str(folder)], check=True)


def fill(folder: Path, leave_bytes: int = 0) -> None:
    """Write a filler file until the file system at `folder` is full, then free
    `leave_bytes` of it again."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    if leave_bytes:
        os.truncate(filler, max(0, filler.stat().st_size - leave_bytes))
