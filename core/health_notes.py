"""Notes that /health/ shows without failing, registered by the apps (docs/operations.md,
"Health").

core imports no app, yet an app may have something an operator should see in /health/
that is not a failure (agents: tenants near or at their monthly quota). The app
registers a provider from its AppConfig.ready(): a function of a database cursor (the
health check's own short connection, as the runtime role) returning sentences. The
`notes` check (core.ops.health.Notes) runs every provider and passes whatever they say,
or when one fails; a note never turns /health/ unhealthy. /health/ answers anyone, so a
note names no tenant, user or row: counts only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

NoteProvider = Callable[[Any], list[str]]

_providers: dict[str, NoteProvider] = {}


def register_health_note(name: str, provider: NoteProvider) -> None:
    """Add (or replace) the provider `name`; its sentences are prefixed with the name."""
    _providers[name] = provider


def health_note_providers() -> dict[str, NoteProvider]:
    return dict(_providers)
