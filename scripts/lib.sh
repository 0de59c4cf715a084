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
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
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
