# Shared set-up for scripts/test and scripts/serve (sourced, not run).

PYTHON=${PYTHON:-python3}
VENV_STAMP=.venv/.autoglm-installed

# venv_install_plan STAMP HASH WANTED: the extras to install into .venv (comma-separated), or nothing when the
# stamp shows WANTED installed from the pyproject.toml whose hash is HASH. The stamp is "HASH EXTRAS" as
# setup_venv writes it; a bare HASH (from before the extras were recorded) stands for dev,server, which was always
# installed then. Under the same HASH the extras installed before are kept: scripts/test after scripts/serve adds
# the test tools once, and scripts/serve after scripts/test finds its own among them. Under another HASH only
# WANTED is installed and recorded (pyproject.toml may have changed any extra; scripts/test adds its own again).
# No side effects: tests/test_setup_script.py runs it.
venv_install_plan() {
  local stamp=$1 hash=$2 wanted=$3 stamped="" had="" extra
  read -r stamped had <<<"$stamp" || true
  if [ -n "$stamped" ] && [ -z "$had" ]; then had=dev,server; fi
  if [ "$stamped" != "$hash" ]; then
    echo "$wanted"
    return 0
  fi
  for extra in ${wanted//,/ }; do
    case ",$had," in
      *",$extra,"*) ;;
      *)
        printf '%s\n' ${had//,/ } ${wanted//,/ } | sort -u | paste -sd, -
        return 0
        ;;
    esac
  done
}

# What an extra brings, for the line that says what is being installed.
_extra_purpose() {
  case $1 in
    server) echo "what the example server needs" ;;
    dev) echo "the test tools (pytest, ruff, mypy and what the tests import)" ;;
    *) echo "the [$1] extra" ;;
  esac
}

# setup_venv EXTRAS: .venv with autoglm-runtime (editable) and EXTRAS (comma-separated extras of pyproject.toml:
# scripts/serve asks for server, scripts/test for dev,server). Installs only when the stamp does not show them
# installed from this pyproject.toml, and says what it installs and that it is done once.
setup_venv() {
  local wanted=${1:?setup_venv needs the extras to install, such as server or dev,server}
  local started=$SECONDS hash plan extra what=""
  if [ ! -x .venv/bin/python ]; then
    rm -f "$VENV_STAMP" # a stamp that outlived its interpreter would skip the install
    echo "== creating .venv with $($PYTHON --version): once, later runs reuse it"
    "$PYTHON" -m venv .venv
  fi
  hash=$(sha256sum pyproject.toml | cut -c1-16)
  plan=$(venv_install_plan "$(cat "$VENV_STAMP" 2>/dev/null)" "$hash" "$wanted")
  [ -n "$plan" ] || return 0
  for extra in ${plan//,/ }; do what+="${what:+ and }$(_extra_purpose "$extra")"; done
  echo "== installing autoglm-runtime and $what" \
    "([$plan] in pyproject.toml) into .venv: a one-time step, repeated only when pyproject.toml changes"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$plan]"
  echo "$hash $plan" >"$VENV_STAMP"
  echo "== .venv is ready ($((SECONDS - started)) s)"
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
