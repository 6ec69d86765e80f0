#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
"${PYTHON:-python3}" -m mypy  # type-checks nano/ ([tool.mypy] in pyproject.toml)
# pytest exits 5 when it collected no test: that is a failure here, not a pass.
# Two workers (pytest-xdist): most tests wait on processes they start, so two at a time
# finish the suite in 60-80% of the time on 2 cores; -n 0 after the command runs
# it in one process. (pytest-benchmark, where installed, is not used here.)
exec "${PYTHON:-python3}" -m pytest -q -n 2 --dist worksteal -p no:benchmark "$@"
