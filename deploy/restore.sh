#!/bin/sh
# Restore an archive made by backup.sh into ASSISTANT_DATA_DIR (and, for a PostgreSQL
# backup, into the database at ASSISTANT_DATABASE_URL).
#
#   deploy/restore.sh [--force] ARCHIVE.tar.gz
#
# Stop the web server and the workers first, and run it as the service user with the same
# environment as the application:
#
#   sudo systemctl stop assistant-web assistant-worker
#   sudo -u assistant sh -c 'set -a; . /etc/assistant.env; set +a; \
#       /opt/assistant/deploy/restore.sh /var/backups/assistant/assistant-backup-....tar.gz'
#
# Every file is checked against the archive's SHA-256 manifest before anything is touched.
# A data directory that is not empty (or a PostgreSQL database that has tables) is only
# overwritten with --force. Afterwards: `assistant audit verify` and `assistant reindex --verify`.
set -eu

die() {
    echo "restore: $*" >&2
    exit 1
}

force=no
while [ $# -gt 0 ]; do
    case $1 in
    --force) force=yes ;;
    -h | --help)
        sed -n '2,17p' "$0"
        exit 0
        ;;
    -*) die "unknown option $1" ;;
    *) break ;;
    esac
    shift
done
[ $# -eq 1 ] || die "usage: restore.sh [--force] ARCHIVE.tar.gz"
archive=$1
[ -f "$archive" ] || die "no archive at $archive"

# The same defaults as assistant/settings.py.
data_dir=${ASSISTANT_DATA_DIR:-var}
database_url=${ASSISTANT_DATABASE_URL:-}
key_file=${ASSISTANT_AUDIT__SIGNING_KEY_PATH:-$data_dir/audit/signing-key.pem}
checkpoint_file=${ASSISTANT_AUDIT__CHECKPOINT_FILE:-$data_dir/audit/checkpoints.jsonl}
head_file=${ASSISTANT_AUDIT__HEAD_FILE:-$data_dir/audit/head.json}

umask 077
work=$(mktemp -d "${TMPDIR:-/tmp}/assistant-restore.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# 1. Unpack into a scratch directory and check every file against the manifest.
tar -xzf "$archive" -C "$work" || die "$archive is not a readable tar.gz"
set -- "$work"/assistant-backup-*
if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    die "$archive does not hold one assistant-backup-* folder"
fi
src=$1
[ -f "$src/MANIFEST.sha256" ] || die "the archive has no MANIFEST.sha256"
(cd "$src" && sha256sum --check --strict --quiet MANIFEST.sha256) ||
    die "the archive does not match its manifest: it is damaged or was changed"
listed=$(wc -l <"$src/MANIFEST.sha256")
present=$(cd "$src" && find . -type f ! -name MANIFEST.sha256 | wc -l)
[ "$listed" -eq "$present" ] || die "the archive holds files that its manifest does not list"
others=$(cd "$src" && find . ! -type f ! -type d)
[ -z "$others" ] || die "the archive holds links or special files: refusing it"
backup_kind=$(sed -n 's/^database=//p' "$src/BACKUP-INFO")

# 2. Where the database goes, and whether that matches the backup.
case $database_url in
"") target_kind=sqlite database_file=$data_dir/assistant.db ;;
sqlite*:///*) target_kind=sqlite database_file=${database_url#*:///} ;;
postgres*://*) target_kind=postgresql pg_url="postgresql://${database_url#*://}" ;;
*) die "ASSISTANT_DATABASE_URL: only sqlite:/// and postgresql:// URLs are supported" ;;
esac
[ "$backup_kind" = "$target_kind" ] ||
    die "the backup holds a $backup_kind database but ASSISTANT_DATABASE_URL is $target_kind"

# 3. Refuse to overwrite anything without --force.
if [ -d "$data_dir" ] && [ -n "$(ls -A "$data_dir")" ] && [ "$force" != yes ]; then
    die "$data_dir is not empty: use --force to replace its contents"
fi
if [ "$target_kind" = postgresql ]; then
    if ! command -v pg_restore >/dev/null || ! command -v psql >/dev/null; then
        die "pg_restore and psql are needed (apt-get install postgresql-client)"
    fi
    tables=$(psql --no-psqlrc --tuples-only --no-align --dbname="$pg_url" --command \
        "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()") ||
        die "cannot connect to the database at ASSISTANT_DATABASE_URL"
    if [ "$tables" -gt 0 ] && [ "$force" != yes ]; then
        die "the database already has $tables tables: use --force to replace them"
    fi
fi

# 4. Put everything in place. SQLite's -wal/-shm files belong to the old database: remove.
mkdir -p "$data_dir"
replace_sqlite() { # SOURCE TARGET
    mkdir -p "$(dirname "$2")"
    rm -f "$2" "$2-wal" "$2-shm" "$2-journal"
    cp "$1" "$2"
}
if [ "$target_kind" = sqlite ]; then
    replace_sqlite "$src/database.sqlite3" "$database_file"
else
    # One transaction: either the whole dump is restored or nothing changes.
    pg_restore --clean --if-exists --no-owner --single-transaction --exit-on-error \
        --dbname="$pg_url" "$src/database.pgdump" || die "pg_restore failed"
fi
if [ -f "$src/keywords.sqlite3" ]; then
    replace_sqlite "$src/keywords.sqlite3" "$data_dir/keywords.sqlite3"
fi
for folder in chroma originals; do
    rm -rf "${data_dir:?}/$folder"
    if [ -d "$src/$folder" ]; then
        cp -R "$src/$folder" "$data_dir/$folder"
    fi
done
if [ -f "$src/audit/checkpoints.jsonl" ]; then
    mkdir -p "$(dirname "$checkpoint_file")"
    cp "$src/audit/checkpoints.jsonl" "$checkpoint_file"
fi
# The signed head goes with the database it was copied with (none in older archives).
rm -f "$head_file"
if [ -f "$src/audit/head.json" ]; then
    mkdir -p "$(dirname "$head_file")"
    cp "$src/audit/head.json" "$head_file"
fi
if [ -f "$src/audit/signing-key.pem" ]; then
    mkdir -p "$(dirname "$key_file")"
    rm -f "$key_file"
    cp "$src/audit/signing-key.pem" "$key_file"
else
    echo "restore: the archive has no signing key: put your copy back at $key_file" >&2
    echo "restore: before anything writes to the audit log." >&2
fi
if [ -f "$src/web-secret-key" ]; then
    cp "$src/web-secret-key" "$data_dir/web-secret-key"
fi

echo "restore: restored $archive into $data_dir"
echo "restore: now run 'assistant audit verify' and 'assistant reindex --verify'"
