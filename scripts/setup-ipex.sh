#!/usr/bin/env bash
# Build the IPEX lane's environment, .venv-ipex (idempotent; fast when already done):
# IPEX 2.8 needs torch 2.8 exactly, and the main environment is torch 2.13. The torch 2.8
# wheel on PyPI is the CUDA build: about 7.7 GB in the venv with its nvidia-* packages
# (measured here: 1:46 for torch + IPEX, 0:48 for the rest). PYTHON selects the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${NANO_IPEX_VENV:-.venv-ipex}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# torch and IPEX first and pinned, then Nano with versions that work on torch 2.8
"$VENV/bin/python" -m pip install -q -c scripts/ipex-constraints.txt \
    torch==2.8.0 intel-extension-for-pytorch==2.8.0
"$VENV/bin/python" -m pip install -q -c scripts/ipex-constraints.txt -e ".[test,minilm]"
"$VENV/bin/python" -c "import intel_extension_for_pytorch" 2>/dev/null \
    || { echo "setup-ipex: IPEX does not import in $VENV" >&2; exit 1; }
