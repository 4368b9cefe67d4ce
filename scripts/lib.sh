# Shared steps of scripts/test, scripts/demo and benchmarks/run (sourced, not run).

# Go's default install place, for the Centrifugo build fallback.
[ -d /usr/local/go/bin ] && case ":$PATH:" in *:/usr/local/go/bin:*) ;; *) PATH="$PATH:/usr/local/go/bin" ;; esac

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

# Debian packages the tests use: Chromium (browser tests), Redis and PostgreSQL (durable and
# multi-node tests). Installed only when missing; needs root (CI and the dev machines are).
ensure_system_packages() {
  local missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# python_for [X.Y]: the interpreter of that version (pyenv's, or pythonX.Y on PATH); python3 if no
# version is asked for.
python_for() {
  local want="$1"
  if [ -z "$want" ]; then command -v python3; return; fi
  local found
  for found in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$want".*/bin/python"$want" \
               "$(command -v "python$want" 2>/dev/null)"; do
    if [ -x "$found" ]; then echo "$found"; return; fi
  done
  log "Python $want is not installed (pyenv install $want, or apt-get install python$want)"
  return 1
}

# ensure_venv DIR GROUPS [REQUIREMENT...] : a virtualenv with the project installed (editable),
# the comma-separated dependency groups of pyproject.toml ("" for none; pip 25.1+ reads them,
# so pip is upgraded first) and the extra requirements (pins such as Django~=5.2.0).
ensure_venv() {
  local venv="$1" groups="$2"; shift 2
  if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv with $(python_for "${PYTHON_VERSION:-}")"
    "$(python_for "${PYTHON_VERSION:-}")" -m venv "$venv"
  fi
  log "installing Python packages into $venv"
  local pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
  "$venv/bin/python" -c 'import sys, pip; sys.exit(tuple(map(int, pip.__version__.split(".")[:2])) < (25, 1))' \
    || "${pip[@]}" "pip>=25.1"
  local args=(-e .) group
  for group in ${groups//,/ }; do args+=(--group "$group"); done
  "${pip[@]}" "${args[@]}" "$@"
}

# The browser client: package-lock.json's centrifuge, sha512-checked, copied by
# build_support/vendor_centrifuge.py into instant_signals/static/instant_signals/vendor/centrifuge/
# (the files the wheel ships). `npm pack` runs only when they are missing or stale; nothing needs
# node_modules any more.
ensure_npm() {
  log "checking the vendored centrifuge client"
  python3 build_support/vendor_centrifuge.py >&2
}

# The pinned Centrifugo through the project's installer (PATH, cache, release, go install).
ensure_centrifugo() {
  local venv="$1"
  log "checking Centrifugo"
  "$venv/bin/python" -m instant_signals.installer
}
