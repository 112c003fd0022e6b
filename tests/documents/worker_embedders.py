"""Embedders a worker subprocess loads by name (EMBEDDER_CALLABLE), for test_worker.py."""

import os
import time

from documents.embedding import hashing_embedder


def broken(texts):
    raise RuntimeError("embedding service unavailable")


def hanging(texts):
    """Never answers within the test's EMBEDDER_TIMEOUT_SECONDS (2 s)."""
    time.sleep(20)
    return hashing_embedder(texts)


def miscounting(texts):
    """One vector fewer than the texts."""
    return hashing_embedder(texts)[:-1]


def slow(texts):
    """Answers after SLOW_EMBEDDER_SECONDS: long enough to kill its worker meanwhile."""
    time.sleep(float(os.environ.get("SLOW_EMBEDDER_SECONDS", "30")))
    return hashing_embedder(texts)
