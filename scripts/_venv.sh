# Sourced by scripts/serve and scripts/test: a virtual environment in .venv with voicegate
# installed (editable) and the extras named in $VOICEGATE_EXTRAS, at the versions pinned in
# constraints.txt. Idempotent and quick when nothing changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "voicegate needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$python" -m venv .venv
fi
stamp=".venv/.installed-${VOICEGATE_EXTRAS:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "==> installing voicegate${VOICEGATE_EXTRAS:+[$VOICEGATE_EXTRAS]} into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
    -e ".${VOICEGATE_EXTRAS:+[$VOICEGATE_EXTRAS]}"
  touch "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
