"""What this processor can compute fast: an int8 dot product, native bf16/fp16, vector width.

These decide how Nano quantizes and what it tries, so every runtime and every report asks
one value, ``CpuCapability``. On x86 it comes from the kernel's flags (/proc/cpuinfo)
checked against CPUID (what the runtimes' kernels dispatch on; see ``nano.launcher.cpuid``);
on aarch64 from /proc/cpuinfo's Features line.

Why an int8 dot product matters: without VNNI (or AMX) x86 INT8 kernels add pairs of
u8 x s8 products in 16 bits (``vpmaddubsw``), which saturates. Static INT8 built the VNNI way
then returns wrong numbers (a one-layer Linear under ONNX Runtime was off by 0.24); every
runtime's workaround is 7-bit weights (ONNX Runtime and PT2E ``reduce_range``, NNCF's overflow
fix), which halves the products so that a pair fits.

``NANO_CPU_IGNORE="avx512f avx_vnni"`` drops features from what Nano believes (never adds
one; without avx512f every AVX-512 and AMX extension goes too): a way to see on a newer
machine what Nano decides on an older one. It changes Nano's choices, not the kernels a
runtime runs (for those, run Python under ``qemu-x86_64 -cpu Haswell-v4``).
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from nano.launcher.cpuid import FEATURES, cpuid_flags

# the first of each tuple that the processor has names the capability
_INT8_DOT = (("amx_int8", "AMX"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"),
             ("i8mm", "I8MM"), ("asimddp", "dot product"))
_BF16 = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("bf16", "BF16"))
_FP16 = (("amx_fp16", "AMX-FP16"), ("avx512_fp16", "AVX512-FP16"), ("asimdhp", "FP16"))
_VECTOR = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("sve", "SVE"), ("asimd", "NEON"),
           ("avx", "AVX"))

IGNORE_VARIABLE = "NANO_CPU_IGNORE"


def _first(flags: frozenset, table) -> Optional[str]:
    return next((label for flag, label in table if flag in flags), None)


@dataclass(frozen=True)
class CpuCapability:
    """The processor's compute features as Nano uses them (see the module docstring).

    ``int8_dot``, ``bf16``, ``fp16``: the instruction set that provides each natively, or
    None; ``vector``: the widest SIMD; ``kind``: a short class name for tables and saved
    models (``amx``, ``avx512_vnni``, ``avx_vnni``, ``avx512``, ``avx2``, ``arm_dot``, ...).
    """

    arch: str
    int8_dot: Optional[str]
    bf16: Optional[str]
    fp16: Optional[str]
    vector: Optional[str]

    @staticmethod
    def from_flags(flags: Iterable[str], arch: str = "x86_64") -> "CpuCapability":
        """The capability of a processor with these (Linux-named) flags."""
        flags = frozenset(flags)
        return CpuCapability(arch, _first(flags, _INT8_DOT), _first(flags, _BF16),
                             _first(flags, _FP16), _first(flags, _VECTOR))

    @property
    def is_x86(self) -> bool:
        return self.arch in ("x86_64", "amd64", "i686")

    @property
    def int8_saturates(self) -> bool:
        """True where static INT8 must use 7-bit weights: x86 without an int8 dot product."""
        return self.is_x86 and self.int8_dot is None

    @property
    def kind(self) -> str:
        if not self.is_x86:
            return "arm_dot" if self.int8_dot else f"{self.arch}"
        if self.int8_dot == "AMX":
            return "amx"
        if self.int8_dot:
            return self.int8_dot.lower().replace("-", "_")
        return {"AVX-512": "avx512", "AVX2": "avx2"}.get(self.vector or "", "x86")

    def native(self, precision: str) -> bool:
        """Whether ``precision`` ("bf16", "fp16", "int8", "fp32") runs natively here."""
        if precision == "bf16":
            return self.bf16 is not None
        if precision == "fp16":
            return self.fp16 is not None
        if precision == "int8":
            return self.int8_dot is not None
        return True

    def emulates(self, precision: str) -> bool:
        """Whether ``precision`` is a floating-point format this CPU lacks (bf16, fp16): PyTorch
        then emulates it, slower than fp32. INT8 runs everywhere (7-bit where it saturates)."""
        return precision in ("bf16", "fp16") and not self.native(precision)

    def emulation_note(self, precision: str) -> str:
        """Why ``precision`` is not native here, in one phrase."""
        return (f"this CPU has no native {precision} ({self.vector or self.arch} only): "
                f"{precision} is emulated and runs slower than fp32")

    def describe(self) -> list[str]:
        """Plain-words lines for ``python -m nano`` and ``bigdl-nano-init --explain``."""
        if self.int8_dot:
            int8 = f"int8 dot product: yes ({self.int8_dot}): INT8 uses full 8-bit weights"
        elif self.is_x86:
            int8 = (f"int8 dot product: no ({self.vector or 'x86'}): INT8 uses 7-bit weights "
                    f"to avoid overflow")
        else:
            int8 = "int8 dot product: no: INT8 runs, with little speed-up"
        bf16 = (f"bf16: native ({self.bf16})" if self.bf16 else
                "bf16: no native support: optimize() leaves bf16 out; asked for, it is "
                "emulated (slower than fp32)")
        fp16 = f"fp16: native ({self.fp16})" if self.fp16 else "fp16: no native support"
        return [f"processor class: {self.kind} (vector width: {self.vector or 'unknown'})",
                int8, bf16, fp16]

    def to_dict(self) -> dict:
        """As saved in a model's metadata."""
        return {"arch": self.arch, "kind": self.kind, "int8_dot": self.int8_dot,
                "bf16": self.bf16, "fp16": self.fp16, "vector": self.vector}

    @staticmethod
    def from_dict(data: Mapping) -> "CpuCapability":
        return CpuCapability(data.get("arch", "x86_64"), data.get("int8_dot"),
                             data.get("bf16"), data.get("fp16"), data.get("vector"))


def proc_flags(root: str = "/") -> tuple[str, frozenset]:
    """The architecture and the kernel's feature flags (x86 "flags", arm "Features")."""
    arch = platform.machine().lower() or "unknown"
    try:
        with open(os.path.join(root, "proc/cpuinfo")) as f:
            text = f.read()
    except OSError:
        return arch, frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return arch, frozenset(value.split())
    return arch, frozenset()


def effective_flags(kernel: frozenset, cpuid: Optional[frozenset],
                    ignore: Iterable[str] = ()) -> frozenset:
    """Kernel flags, less those CPUID can speak for and does not report, less ``ignore``.

    The kernel knows which features the OS enabled; CPUID what the processor (or an
    emulator) really executes. A feature counts only where both say yes.
    """
    flags = set(kernel) - set(ignore)
    if cpuid is not None:
        flags -= set(FEATURES) - cpuid
    if "avx512f" not in flags and any(f.startswith("avx512") for f in kernel):
        # every AVX-512 and AMX extension needs the base
        flags = {f for f in flags if not f.startswith(("avx512", "amx"))}
    return frozenset(flags)


@functools.lru_cache(maxsize=1)
def current() -> CpuCapability:
    """This processor's capability (cached for the process)."""
    arch, kernel = proc_flags()
    cpuid = cpuid_flags()
    if not kernel and cpuid is not None:  # no /proc (a container without it): CPUID alone
        kernel = cpuid
    return CpuCapability.from_flags(effective_flags(kernel, cpuid, ignored_features()), arch)


def ignored_features() -> list[str]:
    """The flags ``NANO_CPU_IGNORE`` drops (space- or comma-separated)."""
    return os.environ.get(IGNORE_VARIABLE, "").replace(",", " ").split()
