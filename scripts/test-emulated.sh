#!/usr/bin/env bash
# The emulated lane: the tests marked `emulated` (INT8 by CPU kind) again as an AVX2 CPU,
# without an int8 dot product or AVX-512, under QEMU's user mode. QEMU can take a CPU
# down, not up: on a host without an int8 dot product the main suite already ran them as
# such a CPU, and this lane says so and stops. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "$("$PY" -c 'from nano.launcher.capability import current; print(current().int8_saturates)')" = True ]; then
    echo "emulated lane: this CPU has no int8 dot product itself; the main suite ran these tests as such a CPU"
    exit 0
fi
if ! command -v qemu-x86_64 >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user; } \
            >/dev/null 2>&1 || true
    fi
fi
if ! command -v qemu-x86_64 >/dev/null 2>&1; then
    echo "emulated lane skipped: qemu-x86_64 is missing (Debian package qemu-user)" >&2
    exit 0
fi
# the interpreter itself, not a pyenv shim script: QEMU runs ELF binaries (a venv's own
# path keeps the venv)
exe=$("$PY" -c 'import sys; print(sys.executable)')
# Haswell: AVX2 and FMA, no AVX-512, no VNNI (less the system features TCG warns it lacks)
export NANO_QEMU_CPU=Haswell-v4,-pcid,-x2apic,-tsc-deadline,-invpcid,-spec-ctrl
export NANO_TEST_EMULATOR="qemu-x86_64 -cpu $NANO_QEMU_CPU"
# torch.compile's kernels: vectorized for AVX2 (it reads the ISA from the host's
# /proc/cpuinfo otherwise) and compiled by a g++ that runs as the emulated CPU
export ATEN_CPU_CAPABILITY=avx2 CXX="$PWD/scripts/qemu-cxx.sh"
# numpy on the SSE4 level: Debian 12's QEMU 7.2 (its first release emulating AVX2) crashed
# in one of numpy's AVX2 loops (np.maximum, inside NNCF). The runtimes' kernels, which this
# lane is about, keep their AVX2 dispatch.
export NPY_DISABLE_CPU_FEATURES=X86_V3
# The generation tests' small LM, trained natively (15 s here, minutes when emulated)
lm=$(mktemp -d)
trap 'rm -rf "$lm"' EXIT
NANO_CACHE_DIR=off "$PY" -c "
import sys
from nano.models.shakespeare_lm import load_shakespeare_lm
tokenizer, model = load_shakespeare_lm('tiny', progress=False)
model.save_pretrained(sys.argv[1]); tokenizer.save_pretrained(sys.argv[1])" "$lm" >/dev/null 2>&1
export NANO_TEST_LM_DIR=$lm
$NANO_TEST_EMULATOR "$exe" -m pytest -q -m emulated -p no:cacheprovider "$@"
