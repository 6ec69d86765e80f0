"""The x86 CPUID instruction, read from Python: the features the processor itself reports.

Runtimes (oneDNN, ONNX Runtime's MLAS, OpenVINO) choose their kernels from CPUID, not from
/proc/cpuinfo. The two differ under an emulator: QEMU's user mode runs a program as another
CPU (``qemu-x86_64 -cpu Haswell-v4``) but shows it the host's /proc/cpuinfo. Nano's
capability model trusts a feature only where both agree.

The instruction runs from a few bytes of machine code in an executable page (no compiler,
no extension module). Where that is not allowed (a hardened kernel refusing writable and
executable pages, a non-x86 machine) ``cpuid_flags()`` returns None and the caller uses
/proc/cpuinfo alone.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import platform
from typing import Optional

# void cpuid(uint32 leaf /*edi*/, uint32 subleaf /*esi*/, uint32 out[4] /*rdx*/):
# push rbx; mov eax,edi; mov ecx,esi; mov r8,rdx; cpuid;
# mov [r8],eax; mov [r8+4],ebx; mov [r8+8],ecx; mov [r8+12],edx; pop rbx; ret
_CODE = bytes.fromhex("53" "89f8" "89f1" "4989d0" "0fa2"
                      "418900" "41895804" "41894808" "4189500c" "5b" "c3")

# (leaf, subleaf, register index in eax/ebx/ecx/edx, bit) -> the name Linux gives the flag
FEATURES = {
    "avx": (1, 0, 2, 28), "fma": (1, 0, 2, 12), "f16c": (1, 0, 2, 29),
    "avx2": (7, 0, 1, 5), "avx512f": (7, 0, 1, 16), "avx512dq": (7, 0, 1, 17),
    "avx512bw": (7, 0, 1, 30), "avx512vl": (7, 0, 1, 31),
    "avx512_vnni": (7, 0, 2, 11),
    "amx_bf16": (7, 0, 3, 22), "avx512_fp16": (7, 0, 3, 23), "amx_tile": (7, 0, 3, 24),
    "amx_int8": (7, 0, 3, 25),
    "avx_vnni": (7, 1, 0, 4), "avx512_bf16": (7, 1, 0, 5), "amx_fp16": (7, 1, 0, 21),
}


def _is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def _registers(call, leaf: int, subleaf: int) -> tuple:
    out = (ctypes.c_uint32 * 4)()
    call(leaf, subleaf, out)
    return tuple(out)


@functools.lru_cache(maxsize=1)
def cpuid_flags() -> Optional[frozenset]:
    """The FEATURES names this processor's CPUID reports, or None where CPUID cannot run."""
    if not _is_x86_64():
        return None
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE,
                         prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError, AttributeError):  # W^X policy, or no mmap protections
        return None
    try:
        page.write(_CODE)
        address = ctypes.addressof(ctypes.c_char.from_buffer(page))
        call = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32,
                                ctypes.POINTER(ctypes.c_uint32))(address)
        highest = _registers(call, 0, 0)[0]
        leaves: dict[tuple, tuple] = {}
        for leaf, subleaf in {(f[0], f[1]) for f in FEATURES.values()}:
            leaves[leaf, subleaf] = (_registers(call, leaf, subleaf) if leaf <= highest
                                     else (0, 0, 0, 0))
        flags = frozenset(name for name, (leaf, sub, reg, bit) in FEATURES.items()
                          if leaves[leaf, sub][reg] >> bit & 1)
        del call, address  # the page can only close once no pointer into it is alive
        return flags
    finally:
        try:
            page.close()
        except BufferError:  # a ctypes view still exported: the page lives until exit
            pass
