"""The database platform (docs/architecture.md): what sits between Django and PostgreSQL.

- `connections`: the owner and runtime roles' connections, libpq options, the server's start.
- `roles`: the runtime role's attributes, grants and settings; the system-bypass guard.
- `locks`: transaction-scoped advisory locks.
- `errors`: refusals by triggers turned into validation errors naming the field.
- `backend`: the database backend (`ENGINE`), vectors and the embedded server's start.
- `replicas`: streaming replicas behind a router, with a lag bound.
- `partitions`: monthly partitions on a UUIDv7 id.
- `operations`: every custom migration operation, and our migrations' base class.

Import the module you need (`from core.db.locks import advisory_xact_lock`); this package
re-exports nothing, so each name has one home.
"""
