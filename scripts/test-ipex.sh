#!/usr/bin/env bash
# The IPEX lane: build .venv-ipex if needed, then run the tests marked ipex there.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${NANO_IPEX_VENV:-.venv-ipex}
bash scripts/setup-ipex.sh
# -p no:cacheprovider: the main suite's pytest cache is not this environment's
exec "$VENV/bin/python" -m pytest -q -m ipex -p no:cacheprovider "$@"
