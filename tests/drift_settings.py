"""The project's settings plus tests.drift_app, a model without its migration."""

from config.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.drift_app"]  # noqa: F405
