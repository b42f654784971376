#!/usr/bin/env bash
# Prepare the local PostgreSQL 15 cluster for the store test battery (idempotent).
#  - starts the cluster if it is down
#  - switches `host all all 127.0.0.1/32` and `::1/128` to trust auth, then reloads
#  - creates the `test` database owned by postgres if it is missing
# Tests connect to postgres://postgres@127.0.0.1:5432/test. Must run as root (or a user
# allowed to edit pg_hba.conf and become postgres).
set -euo pipefail

VER="${PG_VERSION:-15}"
CLUSTER="${PG_CLUSTER:-main}"
HBA="/etc/postgresql/${VER}/${CLUSTER}/pg_hba.conf"

as_postgres() {
  if command -v runuser >/dev/null 2>&1; then
    runuser -u postgres -- "$@"
  else
    su postgres -c "$(printf '%q ' "$@")"
  fi
}

if ! pg_lsclusters -h | awk -v v="$VER" -v c="$CLUSTER" '$1==v && $2==c {print $4}' | grep -q online; then
  pg_ctlcluster --skip-systemctl-redirect "$VER" "$CLUSTER" start
fi

if [ ! -f "$HBA" ]; then
  echo "pg-test-setup: $HBA not found" >&2
  exit 1
fi

changed=0
if grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+(127\.0\.0\.1/32|::1/128)[[:space:]]+(scram-sha-256|md5|password|peer|ident)' "$HBA"; then
  sed -i -E 's/^(host[[:space:]]+all[[:space:]]+all[[:space:]]+(127\.0\.0\.1\/32|::1\/128)[[:space:]]+)(scram-sha-256|md5|password|peer|ident)/\1trust/' "$HBA"
  changed=1
fi
if [ "$changed" = 1 ]; then
  pg_ctlcluster --skip-systemctl-redirect "$VER" "$CLUSTER" reload
fi

# Wait for the server to accept connections.
for _ in $(seq 1 30); do
  if pg_isready -q -h 127.0.0.1 -p 5432; then break; fi
  sleep 0.5
done
pg_isready -h 127.0.0.1 -p 5432 >/dev/null

if ! as_postgres psql -tAc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1; then
  as_postgres createdb test
fi

echo "pg-test-setup: PostgreSQL ${VER}/${CLUSTER} ready at postgres://postgres@127.0.0.1:5432/test"
