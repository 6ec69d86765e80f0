#!/bin/sh
# The C++ compiler for torch.compile under scripts/test-emulated.sh: inductor builds its
# kernels with -march=native, which a compiler running on the host resolves to the host's
# CPU (AVX-512) and the emulated one cannot run. Run under the same emulated CPU, g++
# resolves -march=native to it.
exec qemu-x86_64 -cpu "${NANO_QEMU_CPU:?}" "$(command -v "${NANO_HOST_CXX:-g++}")" "$@"
