"""chunk_search latency (p50/p95) per mode on the seeded data.

    .venv/bin/python benchmarks/search.py [--tenant demo] [--queries 200] [--k 10]

Run `make seed` (or `manage.py seed --documents 20 --chunks 50 ...`) first. Queries are
built from the tenant's own vocabulary so every mode finds matches.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from common import describe, setup_django

QUERY_WORDS = 4


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenant", default="demo")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    setup_django()
    from documents.models import Chunk
    from documents.selectors import chunk_search
    from tenancy.context import tenant_context
    from tenancy.models import Tenant

    tenant = Tenant.objects.get(slug=args.tenant)
    with tenant_context(tenant):
        chunks = Chunk.objects.filter(tenant=tenant).count()
        contents = Chunk.objects.filter(tenant=tenant).values_list("content", flat=True)[:200]
        sample = [words for words in (content.split() for content in contents) if words]
    if not sample:
        sys.exit(f"tenant {args.tenant} has no chunks with text: run `make seed` first")
    rng = random.Random(1)  # noqa: S311 - benchmark inputs, not secrets
    # Up to QUERY_WORDS words of one chunk: a chunk may be shorter than that.
    queries = [
        " ".join(rng.sample(words, min(QUERY_WORDS, len(words))))
        for words in (rng.choice(sample) for _ in range(args.queries))
    ]
    print(f"tenant {args.tenant}: {chunks} chunks, k={args.k}, {len(queries)} queries per mode")
    for mode in ("semantic", "fulltext", "hybrid"):
        chunk_search(tenant=tenant, query=queries[0], k=args.k, mode=mode)  # warm up
        timings = []
        for query in queries:
            started = time.perf_counter()
            chunk_search(tenant=tenant, query=query, k=args.k, mode=mode)
            timings.append((time.perf_counter() - started) * 1000)
        print(f"{mode:9}  {describe(timings)}")


if __name__ == "__main__":
    main()
