# Shared by the bench scripts (sourced, bash): logging, stopping process trees, removing
# what a run made (its temp dir, its PostgreSQL schema), installing missing packages, and
# the traps that run a script's cleanup on any exit. Each script keeps its own cleanup
# function for what only it makes (namespaces, iptables chains, peers).

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { log "error: $*"; exit 1; }

descendants() {            # descendants PID -> PID and all its descendants
  local p=$1; echo "$p"
  for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do descendants "$c"; done
}

stop_tree() {              # stop_tree PID: TERM the main process, wait, KILL what is left
  local p=$1 tree
  kill -0 "$p" 2>/dev/null || return 0
  tree=$(descendants "$p")
  kill -TERM "$p" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  for q in $tree; do kill -0 "$q" 2>/dev/null && kill -KILL "$q" 2>/dev/null; done
  wait "$p" 2>/dev/null
  return 0
}

drop_schema() {            # drop_schema URL SCHEMA (nothing when SCHEMA is empty)
  [ -n "$2" ] || return 0
  psql "$1" -qAtc "DROP SCHEMA IF EXISTS $2 CASCADE" >/dev/null 2>&1 \
    && log "dropped schema $2" || log "warning: could not drop schema $2"
}

remove_tmp() {             # remove_tmp DIR: removed, or kept when KEEP_TMP is set
  [ -n "$1" ] && [ -d "$1" ] || return 0
  if [ -n "${KEEP_TMP:-}" ]; then log "kept $1"; else rm -rf "$1"; fi
}

on_exit() {                # on_exit FUNCTION: FUNCTION runs on exit, Ctrl-C included
  trap "$1" EXIT
  trap 'log "interrupted"; exit 130' INT
  trap 'log "terminated"; exit 143' TERM
}

apt_install() {            # apt_install PACKAGE...: installs them (nothing without any)
  [ $# -gt 0 ] || return 0
  log "installing $* with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q && apt-get install -y -q --no-install-recommends "$@" \
    || die "apt-get install $* failed"
}
