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

# promtool checks the alerting rules and the example server's /metrics (Debian's prometheus package has it).
setup_promtool() {
  if command -v promtool >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing promtool from Debian's prometheus package"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "== no promtool found and not root: the rule and exposition checks need" \
         "'sudo apt-get install prometheus' (or promtool on PATH)" >&2
  fi
}

# The container pass of scripts/test runs unless the first pass used the container backend already, or the
# arguments select no test of the container slice (asked of pytest only when there are arguments).
container_pass_wanted() {
  [ "${AUTOGLM_ZK_BACKEND:-}" = container ] && return 1
  [ $# -eq 0 ] && return 0
  .venv/bin/python -m pytest --collect-only -q -m zk_container "$@" >/dev/null 2>&1
}

docker_engine_answers() {
  .venv/bin/python -c 'import sys
from autoglm_runtime.testing._container import docker_unreachable_reason
sys.exit(0 if docker_unreachable_reason() is None else 1)'
}

# A container engine for the container pass: a Docker engine that answers is used as it is; otherwise, as root
# with apt-get, scripts/container-zookeeper sets up podman and a ZooKeeper image, and serves the Docker API on a
# socket of this run's own, which teardown_container_engine (on exit) stops after removing what was left.
# Otherwise nothing: the container tests then say how to get an engine (and fail under CI=true).
CONTAINER_SOCKET=""
setup_container_engine() {
  if docker_engine_answers; then return 0; fi
  if [ "${AUTOGLM_ZK_CONTAINER_SETUP:-1}" = 0 ]; then
    echo "== no Docker engine answers, and AUTOGLM_ZK_CONTAINER_SETUP=0: no container engine is set up"
    return 0
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "== no Docker engine answers, and only root with apt-get can set up podman here" \
         "(see 'Without Docker Hub' in docs/testing.md)" >&2
    return 0
  fi
  echo "== setting up podman and a ZooKeeper image (scripts/container-zookeeper)"
  CONTAINER_SOCKET=$(mktemp -d /tmp/autoglm-podman.XXXXXX)/podman.sock
  trap teardown_container_engine EXIT
  local exports
  if exports=$(bash scripts/container-zookeeper up --socket "$CONTAINER_SOCKET"); then
    eval "$exports"
  else
    echo "== scripts/container-zookeeper failed (above); the container tests will say so" >&2
  fi
}

# On exit: fail the run if a harness container outlived its test process, then remove it and stop podman.
teardown_container_engine() {
  local status=$? left
  [ -n "$CONTAINER_SOCKET" ] || return 0
  left=$(bash scripts/container-zookeeper leftovers)
  if [ -n "$left" ]; then
    echo "== FAILED: the test run left harness containers behind: $(echo $left)" >&2
    status=1
  fi
  bash scripts/container-zookeeper down --socket "$CONTAINER_SOCKET"
  rm -rf "$(dirname "$CONTAINER_SOCKET")"
  exit "$status"
}
