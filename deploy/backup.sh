#!/bin/sh
# Dump the database into DIR as <database>-<UTC time>.dump (pg_dump custom format: compressed,
# restored with deploy/restore.sh), then delete all but the newest BACKUP_KEEP dumps.
# The connection comes from libpq's variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE).
#   usage: backup.sh DIR
set -eu

dir=${1:?usage: backup.sh DIR}
keep=${BACKUP_KEEP:-14}
database=${PGDATABASE:?set PGDATABASE (and PGHOST, PGUSER, PGPASSWORD as needed)}
case $keep in
    '' | *[!0-9]* | 0) echo "error: BACKUP_KEEP must be a whole number of at least 1" >&2; exit 2 ;;
esac

mkdir -p "$dir"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
final="$dir/$database-$stamp.dump"
partial="$final.partial"
# Written under a temporary name and renamed once complete, so a dump cut short (disk full,
# connection lost) is never taken for a backup, nor counted when old ones are pruned.
trap 'rm -f "$partial"' EXIT
pg_dump --format=custom --compress=6 --file="$partial" "$database"
mv "$partial" "$final"
trap - EXIT
echo "backup written: $final ($(wc -c <"$final") bytes)"

# The names sort by time (UTC stamps of fixed width): keep the newest $keep.
ls -1 "$dir" | grep -E "^$database-[0-9]{8}T[0-9]{6}Z\.dump\$" | sort -r | tail -n "+$((keep + 1))" |
    while read -r old; do
        rm -f "$dir/$old"
        echo "old backup deleted: $dir/$old"
    done
