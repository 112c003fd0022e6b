#!/bin/sh
# Start PgBouncer for docker-compose.yml: write the auth file for the two roles that
# connect through it (the owner and the runtime role, DESIGN.md section 7) from the
# environment, then run PgBouncer with the mounted pgbouncer.ini. Passwords go to a
# file readable only by PgBouncer's user, never into the repository or the image.
# Format: one `"role" "password"` line per role; a `"` inside a value is doubled.
set -eu

: "${OWNER_USER:?}" "${OWNER_PASSWORD:?}" "${RUNTIME_USER:?}" "${RUNTIME_PASSWORD:?}"

quote() {
    printf '"%s"' "$(printf '%s' "$1" | sed 's/"/""/g')"
}

umask 077
mkdir -p /tmp/pgbouncer
{
    printf '%s %s\n' "$(quote "$OWNER_USER")" "$(quote "$OWNER_PASSWORD")"
    printf '%s %s\n' "$(quote "$RUNTIME_USER")" "$(quote "$RUNTIME_PASSWORD")"
} > /tmp/pgbouncer/userlist.txt

exec pgbouncer /etc/pgbouncer-agentic/pgbouncer.ini
