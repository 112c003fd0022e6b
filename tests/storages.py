"""Storage aliases pointed at a test's own folders, so no test writes under var/.

Most tests take the `file_storages` fixture (tests/conftest.py); `point_storages` is
for the few that need another place (a full or unwritable folder, a restore target).
"""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileStorages:
    """The folders of the `default` (uploads) and `exports` storages during a test."""

    media: Path
    exports: Path


def point_storages(settings, **locations: Path | str) -> None:
    """Point each named storage alias (`default`, `exports`) at a FileSystemStorage there."""
    settings.STORAGES = {
        **settings.STORAGES,
        **{
            alias: {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": location},
            }
            for alias, location in locations.items()
        },
    }
