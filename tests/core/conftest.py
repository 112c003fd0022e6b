"""Fixtures of the core tests."""

import pytest

from tests.storages import point_storages


@pytest.fixture
def exports_in_tmp(settings, tmp_path):
    """The health checks write a probe file: keep it out of var/exports."""
    point_storages(settings, exports=tmp_path / "exports")
