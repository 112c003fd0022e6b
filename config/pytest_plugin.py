"""Loaded by pytest before Django (pyproject `-p config.pytest_plugin`).

The suite runs with development settings (a dev SECRET_KEY) unless the environment
says otherwise, so a bare `pytest` works as well as `make test`.
"""

import os

os.environ.setdefault("DJANGO_DEBUG", "true")
