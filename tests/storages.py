"""Storage aliases pointed at a test's own folders, so no test writes under var/."""

from pathlib import Path


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
