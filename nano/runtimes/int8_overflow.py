"""INT8 on processors without an int8 dot product: which weights a build uses, recorded in
the saved model and checked when it is loaded.

x86 without VNNI/AMX adds pairs of u8 x s8 products in 16 bits and saturates; every INT8
builder then uses its runtime's workaround (ONNX Runtime and PT2E ``reduce_range``, NNCF's
``OverflowFix.ENABLE``), which halves the products at a small cost in precision. A model
built the 8-bit way on a VNNI machine returns wrong numbers on an AVX2 one: ``load()`` says
so, once, in one line.
"""

from __future__ import annotations

import warnings
from typing import Optional

from nano.launcher.capability import CpuCapability, current

SEVEN_BIT = "7-bit"   # built with the overflow workaround: right on every x86 CPU
EIGHT_BIT = "8-bit"   # full range: right only where the CPU has an int8 dot product
# None: not an integer kernel at risk (floating point, or an INT8 kind that re-quantizes
# for the CPU it loads on)

_warned: set = set()


def overflow_fix() -> bool:
    """Whether INT8 built now must avoid 16-bit saturation (this CPU has no int8 dot)."""
    return current().int8_saturates


def scheme() -> str:
    """The INT8 scheme a build made now uses."""
    return SEVEN_BIT if overflow_fix() else EIGHT_BIT


def load_warning(meta: dict, directory: str) -> Optional[str]:
    """The one-line warning for loading ``meta``'s model on this CPU, or None."""
    int8 = meta.get("int8_scheme")
    if "built_on" not in meta and meta.get("method", {}).get("precision") == "int8":
        int8 = EIGHT_BIT  # saved before Nano recorded it: every build was 8-bit then
    here = current()
    if int8 != EIGHT_BIT or not here.int8_saturates:
        return None
    built = meta.get("built_on")
    where = (f"a CPU with an int8 dot product ({CpuCapability.from_dict(built).kind})"
             if built else "a CPU with an int8 dot product")
    return (f"{directory}: this INT8 model ({meta.get('method_name')}) was built for {where}; "
            f"this CPU has none ({here.kind}), so its 8-bit weights can saturate and return "
            f"wrong numbers: re-quantize it here (InferenceOptimizer.quantize or optimize)")


def warn_on_load(meta: dict, directory: str) -> None:
    """Warn once per directory (see ``load_warning``)."""
    message = load_warning(meta, directory)
    if message and directory not in _warned:
        _warned.add(directory)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
