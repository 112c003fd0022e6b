"""Shared set-up of the benchmarks: Django on the development database."""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path


def setup_django() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_DEBUG", "true")
    import django

    django.setup()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def describe(values_ms: list[float]) -> str:
    return (
        f"p50 {percentile(values_ms, 0.50):7.2f} ms  p95 {percentile(values_ms, 0.95):7.2f} ms  "
        f"mean {statistics.fmean(values_ms):7.2f} ms  n={len(values_ms)}"
    )
