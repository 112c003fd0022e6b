#!/bin/sh
# Start PgBouncer for docker-compose.yml: write the auth file for the one role that
# connects through it (the runtime role, docs/security.md; the owner goes straight
# to PostgreSQL) from the environment, then run PgBouncer with the mounted
# pgbouncer.ini. The password goes to a file readable only by PgBouncer's user, never
# into the repository or the image.
# Format: one `"role" "password"` line per role; a `"` inside a value is doubled.
set -eu

: "${RUNTIME_USER:?}" "${RUNTIME_PASSWORD:?}"

quote() {
    printf '"%s"' "$(printf '%s' "$1" | sed 's/"/""/g')"
}

umask 077
mkdir -p /tmp/pgbouncer
printf '%s %s\n' "$(quote "$RUNTIME_USER")" "$(quote "$RUNTIME_PASSWORD")" \
    > /tmp/pgbouncer/userlist.txt

exec pgbouncer /etc/pgbouncer-agentic/pgbouncer.ini
