#!/bin/sh
# Restore a dump made by deploy/backup.sh into an EMPTY database (create it first, e.g.
# `createdb sbrt_restored`). All or nothing: one transaction, stopped at the first error.
# The connection comes from libpq's variables (PGHOST, PGPORT, PGUSER, PGPASSWORD).
#   usage: restore.sh DUMP DATABASE
set -eu

dump=${1:?usage: restore.sh DUMP DATABASE}
database=${2:?usage: restore.sh DUMP DATABASE}
[ -f "$dump" ] || { echo "error: no dump file at $dump" >&2; exit 2; }

# Refuse a database that already has tables: restoring over live data would mix two states.
tables=$(psql --no-psqlrc --tuples-only --no-align --dbname="$database" \
    --command="SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
if [ "$tables" != "0" ]; then
    echo "error: database $database is not empty ($tables tables); restore into a new one" >&2
    exit 2
fi

# --no-owner: objects belong to whoever restores, so a dump restores under any role.
pg_restore --no-owner --exit-on-error --single-transaction --dbname="$database" "$dump"
echo "restored $dump into $database"
