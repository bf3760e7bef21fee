# Shared set-up for scripts/test and scripts/serve (sourced, not run).

PYTHON=${PYTHON:-python3}

setup_venv() {
  local stamp=.venv/.autoglm-installed
  if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
  fi
  # Reinstall only when the dependency list changed: keeps repeat runs fast.
  local want; want=$(sha256sum pyproject.toml | cut -c1-16)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "== installing autoglm-runtime and its test tools into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev,server]'
    echo "$want" > "$stamp"
  fi
}

have_zookeeper() {
  [ -n "${AUTOGLM_ZK_HOSTS:-}" ] && return 0
  [ -f /usr/share/java/zookeeper.jar ] && return 0
  [ -n "${ZOOKEEPER_HOME:-}" ] && [ -d "${ZOOKEEPER_HOME}/lib" ] && return 0
  return 1
}

setup_zookeeper() {
  if have_zookeeper; then return 0; fi
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing ZooKeeper from Debian's packages"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeper >/dev/null
  else
    echo "== no ZooKeeper found and not root: integration tests need a Docker engine," \
         "ZOOKEEPER_HOME, AUTOGLM_ZK_HOSTS, or 'sudo apt-get install zookeeper'" >&2
  fi
}
