"""`make bench`: the project against its raw reference on each hot path (issue 10).

One module per concern: scales (volumes), database (the benchmark's own database),
data (generation by binary COPY), timing (interleaved measurement), reference (raw
psycopg under the same tenant), reads / search / admin_lists / writes / schema (the
paths), report (table and JSON), plots (PNGs, matplotlib imported only there), run (the
command line). Entry: `python -m benchmarks`.
"""
