#!/bin/sh
# Back up everything the document assistant keeps into one timestamped tar.gz with a SHA-256
# manifest: the database, the Chroma directory, the uploaded originals, the keyword index,
# the audit signing key, checkpoints file and signed head, and the web session key.
#
#   deploy/backup.sh [--no-key] [DEST_DIR]       (DEST_DIR defaults to the current directory)
#
# It reads the same ASSISTANT_* variables as the application, so load the env file first:
#
#   sudo -u assistant sh -c 'set -a; . /etc/assistant.env; set +a; \
#       /opt/assistant/deploy/backup.sh /var/backups/assistant'
#
# The web server may keep running: SQLite files are copied with sqlite3's online ".backup"
# and PostgreSQL with pg_dump, both consistent snapshots. Chroma's vector files are copied
# as they are, so stop (or pause) the ingestion workers while it runs for an exact copy of
# the vector index; if they were running, check the restored copy with
# `assistant reindex --verify` (the database is the source of truth and
# `assistant reindex --all` rebuilds both indexes from it).
#
# The archive contains the audit signing key: whoever holds it can sign forged checkpoints.
# Keep the key separately (for example offline, or on another volume) and use --no-key to
# leave it out of routine archives.
#
# Needs: sh, tar, gzip, sha256sum, sqlite3 (Debian package sqlite3), and pg_dump
# (postgresql-client, the server's major version or newer) when the database is PostgreSQL.
set -eu

die() {
    echo "backup: $*" >&2
    exit 1
}

include_key=yes
while [ $# -gt 0 ]; do
    case $1 in
    --no-key) include_key=no ;;
    -h | --help)
        sed -n '2,25p' "$0"
        exit 0
        ;;
    -*) die "unknown option $1" ;;
    *) break ;;
    esac
    shift
done
[ $# -le 1 ] || die "usage: backup.sh [--no-key] [DEST_DIR]"
dest=${1:-.}

# The same defaults as assistant/settings.py.
data_dir=${ASSISTANT_DATA_DIR:-var}
database_url=${ASSISTANT_DATABASE_URL:-}
key_file=${ASSISTANT_AUDIT__SIGNING_KEY_PATH:-$data_dir/audit/signing-key.pem}
checkpoint_file=${ASSISTANT_AUDIT__CHECKPOINT_FILE:-$data_dir/audit/checkpoints.jsonl}
head_file=${ASSISTANT_AUDIT__HEAD_FILE:-$data_dir/audit/head.json}

[ -d "$data_dir" ] || die "no data directory at $data_dir (set ASSISTANT_DATA_DIR)"
[ -d "$dest" ] || die "no destination directory at $dest"
command -v sqlite3 >/dev/null || die "sqlite3 is needed (apt-get install sqlite3)"

# Copy a live SQLite database safely (a consistent snapshot, even while it is written).
sqlite_copy() {
    sqlite3 "$1" ".backup '$2'" || die "could not back up the SQLite database $1"
}

umask 077 # the archive holds every document and the signing key: readable by its owner only
name=assistant-backup-$(date -u +%Y%m%dT%H%M%SZ)
work=$(mktemp -d "${TMPDIR:-/tmp}/assistant-backup.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
out=$work/$name
mkdir "$out" "$out/audit"

# 0. The audit log's signed head, before the database: the copy of the database then holds
#    at least the records it names (a newer head would look like a truncated log).
if [ -f "$head_file" ]; then
    cp "$head_file" "$out/audit/head.json"
fi

# 1. The database: SQLite (the default, or a sqlite:/// URL) or PostgreSQL.
case $database_url in
"") database_kind=sqlite database_file=$data_dir/assistant.db ;;
sqlite*:///*) database_kind=sqlite database_file=${database_url#*:///} ;;
postgres*://*) database_kind=postgresql ;;
*) die "ASSISTANT_DATABASE_URL: only sqlite:/// and postgresql:// URLs are supported" ;;
esac
if [ "$database_kind" = sqlite ]; then
    [ -f "$database_file" ] || die "no database at $database_file"
    sqlite_copy "$database_file" "$out/database.sqlite3"
else
    command -v pg_dump >/dev/null || die "pg_dump is needed (apt-get install postgresql-client)"
    # libpq knows postgresql://, not SQLAlchemy's postgresql+psycopg:// driver suffix.
    pg_dump --format=custom --file="$out/database.pgdump" \
        --dbname="postgresql://${database_url#*://}" || die "pg_dump failed"
fi

# 2. The keyword index (SQLite FTS).
if [ -f "$data_dir/keywords.sqlite3" ]; then
    sqlite_copy "$data_dir/keywords.sqlite3" "$out/keywords.sqlite3"
fi

# 3. Chroma: its vector files as they are, and its SQLite file through ".backup".
if [ -d "$data_dir/chroma" ]; then
    cp -R "$data_dir/chroma" "$out/chroma"
    rm -f "$out/chroma/chroma.sqlite3" "$out/chroma/chroma.sqlite3-wal" \
        "$out/chroma/chroma.sqlite3-shm" "$out/chroma/chroma.sqlite3-journal"
    if [ -f "$data_dir/chroma/chroma.sqlite3" ]; then
        sqlite_copy "$data_dir/chroma/chroma.sqlite3" "$out/chroma/chroma.sqlite3"
    fi
fi

# 4. The uploaded originals (stored under internal ids).
if [ -d "$data_dir/originals" ]; then
    cp -R "$data_dir/originals" "$out/originals"
fi

# 5. The audit folder: the checkpoints file and (unless --no-key) the signing key.
if [ -f "$checkpoint_file" ]; then
    cp "$checkpoint_file" "$out/audit/checkpoints.jsonl"
fi
if [ -f "$key_file" ]; then
    if [ "$include_key" = yes ]; then
        cp "$key_file" "$out/audit/signing-key.pem"
        echo "backup: WARNING: the archive contains the audit signing key ($key_file)." >&2
        echo "backup: store the key separately from the archives (see --no-key)." >&2
    else
        echo "backup: the signing key was left out (--no-key): keep your own copy of $key_file" >&2
    fi
fi

# 6. The key that signs web sessions (restoring it keeps users signed in).
if [ -f "$data_dir/web-secret-key" ]; then
    cp "$data_dir/web-secret-key" "$out/web-secret-key"
fi

# What this is; restore.sh reads database= from it.
cat >"$out/BACKUP-INFO" <<EOF
format=1
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
host=$(hostname 2>/dev/null || echo unknown)
data_dir=$data_dir
database=$database_kind
signing_key=$include_key
EOF

# The manifest: one "sha256  ./path" line per file, checked by restore.sh (sha256sum -c).
(cd "$out" && find . -type f -exec sha256sum {} + | sort -k 2) >"$work/MANIFEST.sha256"
mv "$work/MANIFEST.sha256" "$out/MANIFEST.sha256"

archive=$dest/$name.tar.gz
tar -C "$work" -czf "$archive.part" "$name"
mv "$archive.part" "$archive"
echo "$archive"
