"""An app whose model has no migration: `make migrate-check` must fail on it.

Installed only by tests/drift_settings.py, which one subprocess test uses.
"""
