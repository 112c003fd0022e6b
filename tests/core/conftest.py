"""Fixtures of the core tests."""

import pytest


@pytest.fixture
def exports_in_tmp(settings, tmp_path):
    """The health checks write a probe file: keep it out of var/exports."""
    settings.STORAGES = {
        **settings.STORAGES,
        "exports": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "exports"},
        },
    }
