# Shared by scripts/quickstart and scripts/test. Sourced, not run.

# install_packages installs Debian packages that are missing (as root, via apt).
install_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]} (run as root, or install them)" >&2
    return 1
  fi
  echo "installing: ${missing[*]}" >&2
  # Packages install without starting their services (sshd, PostgreSQL,
  # dockerd would otherwise start on the host): what a test needs, it starts.
  local policy=/usr/sbin/policy-rc.d own_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
  fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || rc=$?
  if [ $rc -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
  fi
  if [ -n "$own_policy" ]; then rm -f "$policy"; fi
  return $rc
}

# require_go makes sure a Go toolchain is on PATH.
require_go() {
  if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
    export PATH="/usr/local/go/bin:$PATH"
  fi
  command -v go >/dev/null 2>&1 || { echo "Go 1.26 or newer is needed (https://go.dev/dl/)" >&2; return 1; }
}

# build_airlock builds bin/airlock.
build_airlock() {
  mkdir -p bin
  # Static (CGO_ENABLED=0): the oci runtime runs this binary as PID 1 inside images.
  CGO_ENABLED=0 go build -trimpath -o bin/airlock ./cmd/airlock
}

# The gVisor release the sandboxes are tested with. Debian 12's runsc (2022)
# cannot give a sandbox a network on current kernels (gvisor#10704), so the
# scripts build this one from the Go module proxy: static, as runsc must be.
RUNSC_MODULE_VERSION=v0.0.0-20260905035102-160fafc42237

# ensure_runsc builds the pinned runsc once (2-3 minutes on 2 cores) into
# ${AIRLOCK_CACHE:-/var/cache/airlock}, links it as /usr/local/bin/runsc when run
# as root, and exports AIRLOCK_RUNSC. An existing AIRLOCK_RUNSC is kept.
ensure_runsc() {
  if [ -n "${AIRLOCK_RUNSC:-}" ] && [ -x "$AIRLOCK_RUNSC" ]; then return 0; fi
  local dir="${AIRLOCK_CACHE:-/var/cache/airlock}/runsc-${RUNSC_MODULE_VERSION##*-}"
  if [ ! -x "$dir/runsc" ]; then
    echo "building gVisor's runsc ${RUNSC_MODULE_VERSION} from the Go module proxy (once; 2-3 minutes)" >&2
    mkdir -p "$dir"
    GOBIN="$dir" CGO_ENABLED=0 go install -trimpath -ldflags='-s -w' "gvisor.dev/gvisor/runsc@${RUNSC_MODULE_VERSION}"
  fi
  export AIRLOCK_RUNSC="$dir/runsc"
  if [ "$(id -u)" -eq 0 ] && [ "$(readlink /usr/local/bin/runsc 2>/dev/null)" != "$AIRLOCK_RUNSC" ]; then
    ln -sfn "$AIRLOCK_RUNSC" /usr/local/bin/runsc
  fi
}

# ensure_postgres starts the local PostgreSQL cluster (Debian's postgresql
# package) and gives root a superuser role, so that tests reach it through
# the Unix socket as AIRLOCK_TEST_POSTGRES (exported) says. An existing
# AIRLOCK_TEST_POSTGRES is kept: point it at another server to test there.
ensure_postgres() {
  if [ -n "${AIRLOCK_TEST_POSTGRES:-}" ]; then return 0; fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "PostgreSQL tests need root to start the local cluster, or AIRLOCK_TEST_POSTGRES set" >&2
    return 0
  fi
  local cluster
  cluster=$(pg_lsclusters -h 2>/dev/null | head -1)
  if [ -z "$cluster" ]; then
    echo "no PostgreSQL cluster (pg_lsclusters is empty)" >&2
    return 1
  fi
  set -- $cluster # version name port status ...
  if [ "$4" != online ]; then
    pg_ctlcluster "$1" "$2" start
  fi
  runuser -u postgres -- psql -p "$3" -qtAc "SELECT 1 FROM pg_roles WHERE rolname = 'root'" | grep -q 1 ||
    runuser -u postgres -- psql -p "$3" -qc "CREATE ROLE root SUPERUSER LOGIN"
  export AIRLOCK_TEST_POSTGRES="host=/var/run/postgresql port=$3 user=root dbname=postgres"
}
