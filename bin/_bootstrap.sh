# Sourced by bin/vigil, bin/test and bin/bench: make .venv on first use and keep
# it in step with pyproject.toml. Needs only Python >= 3.11 and the package index.
# Usage: source bin/_bootstrap.sh runtime|dev

VIGIL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VIGIL_VENV="$VIGIL_ROOT/.venv"
VIGIL_PY="$VIGIL_VENV/bin/python"

_vigil_find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "vigil: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

_vigil_bootstrap() {
    local extras="$1" python want have
    # The stamp records what was installed: the pyproject.toml hash and the extras.
    want="$(sha256sum "$VIGIL_ROOT/pyproject.toml" | cut -d' ' -f1)"
    have="$(cat "$VIGIL_VENV/.vigil-installed" 2>/dev/null || true)"
    if [ "$have" = "$want dev" ] || [ "$have" = "$want $extras" ]; then
        return 0
    fi
    if [ ! -x "$VIGIL_PY" ]; then
        python="$(_vigil_find_python)" || return 1
        echo "vigil: creating .venv with $("$python" --version 2>&1)" >&2
        "$python" -m venv "$VIGIL_VENV" || return 1
    fi
    echo "vigil: installing the project into .venv ($extras)" >&2
    local target="$VIGIL_ROOT"
    [ "$extras" = "dev" ] && target="$VIGIL_ROOT[dev]"
    "$VIGIL_PY" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2 || return 1
    "$VIGIL_PY" -m pip install --quiet --disable-pip-version-check -e "$target" >&2 || return 1
    echo "$want $extras" > "$VIGIL_VENV/.vigil-installed"
}

_vigil_bootstrap "${1:-runtime}" || exit 1
