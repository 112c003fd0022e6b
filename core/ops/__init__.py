"""The operator's tools (docs/architecture.md): a Django app, label `ops`, that no app imports.

- `health`: the /health/ checks and `manage.py health`.
- `checks`: the system checks on the server's versions (run by `migrate`).
- `backup`, `pitr`: backups that restore, and point-in-time recovery.
- `metrics`: `manage.py db_metrics`.
- `distribution`: readiness to distribute by tenant, and Citus's plan.
- `embedded`: the embedded PostgreSQL server's lifecycle (development and tests).
- `vector_work`, `leakproof`: what proves the server can do the project's vector work,
  and the LEAKPROOF marks our indexes need under row-level security.
- `management/commands/`: the commands an operator runs (backup, restore, health,
  db_metrics, migrate_status, migrate_history, migrate_down, migrations_sql, citus_plan,
  create_runtime_role).

It imports the kernel (core) and the database platform (core.db); they never import it,
except by the dotted paths settings name (the embedded server's starter, the health view).
"""
