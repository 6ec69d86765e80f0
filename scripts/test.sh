#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
"${PYTHON:-python3}" -m mypy  # type-checks nano/ ([tool.mypy] in pyproject.toml)
# pytest exits 5 when it collected no test: that is a failure here, not a pass.
exec "${PYTHON:-python3}" -m pytest -q "$@"
