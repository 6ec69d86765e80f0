"""Intel Extension for PyTorch, eager (``fp32_ipex``, ``bf16_ipex``), only where it imports
beside this torch; ``ipex_jit`` and ``ipex_int8`` build the traced and INT8 IPEX methods, and
all three share the probe here.

IPEX's last release (2.8) requires torch 2.8 exactly; with another torch its
import fails with an AttributeError rather than an ImportError, so the check
compares versions first and catches everything.
"""

from __future__ import annotations

import os
from typing import Optional, TYPE_CHECKING

import torch

from nano.runtimes.backends.spec import BackendSpec, Flavour
from nano.runtimes.backends.torch_common import TorchModuleModel, prepare_module
from nano.runtimes.methods import Method
from nano.launcher.capability import current

if TYPE_CHECKING:
    from nano.runtimes.prepare import BuildInputs
    from nano.runtimes.structure import InputSignature

INSTALL_HINT = "pip install intel-extension-for-pytorch (needs the matching torch release)"
SPEC = BackendSpec(accelerator="pytorch", use_ipex=True, precisions=("fp32", "bf16"),
                   candidates=(Flavour(), Flavour("bf16")), channels_last=True)
_reason_cache: dict = {}


def _major_minor(version: str) -> tuple:
    return tuple(int(p) for p in version.split("+")[0].split(".")[:2])


def _import_ipex() -> None:
    # IPEX starts an inductor compile worker pool at import; one thread is plenty on the
    # machines IPEX targets here, and the variable is put back afterwards
    had = "TORCHINDUCTOR_COMPILE_THREADS" in os.environ
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    try:
        import intel_extension_for_pytorch  # noqa: F401
    finally:
        if not had:
            os.environ.pop("TORCHINDUCTOR_COMPILE_THREADS", None)


def ipex_unavailable() -> Optional[str]:
    """Why IPEX cannot be used with this torch, or None (then it is imported). The one
    probe for inference and training."""
    if "reason" in _reason_cache:
        return _reason_cache["reason"]
    reason = None
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            ipex_version = version("intel_extension_for_pytorch")
        except PackageNotFoundError:
            ipex_version = None
        if ipex_version is None:
            reason = f"missing dependency: {INSTALL_HINT}"
        elif _major_minor(ipex_version) != _major_minor(torch.__version__):
            reason = (f"intel_extension_for_pytorch {ipex_version} needs torch "
                      f"{'.'.join(map(str, _major_minor(ipex_version)))}, this is torch "
                      f"{torch.__version__}")
        else:
            _import_ipex()
    except Exception as e:  # a mismatched build raises AttributeError and friends
        reason = f"intel_extension_for_pytorch does not import: {type(e).__name__}: {e}"
    _reason_cache["reason"] = reason
    return reason


class IpexModel(TorchModuleModel):
    """A module optimized by ``ipex.optimize``, saved as a state dict."""

    accelerator = "ipex"
    _source_state: dict  # the weights before ipex.optimize, which is what save() writes

    def source_state(self) -> dict:
        return self._source_state

    @classmethod
    def from_module(cls, module: torch.nn.Module, method: Method,
                    signature: Optional[InputSignature], output: Optional[dict],
                    thread_num: Optional[int]) -> "IpexModel":
        import intel_extension_for_pytorch as ipex

        state = {k: v.clone() for k, v in module.state_dict().items()}
        dtype = torch.bfloat16 if method.precision == "bf16" else torch.float32
        optimized = ipex.optimize(prepare_module(module, method), dtype=dtype,
                                  weights_prepack=weights_prepack(method.precision == "bf16"))
        model = cls(optimized, method, signature, output, thread_num)
        model._source_state = state
        return model


def weights_prepack(bf16: bool) -> bool:
    """Whether ipex.optimize may prepack weights: its bf16 prepack refuses CPUs without
    native bf16 (it asks for avx512bw/vl/dq or avx_ne_convert); bf16 then runs emulated on
    the plain weights."""
    return not bf16 or current().native("bf16")


def unavailable_reason(method: Method) -> Optional[str]:
    return ipex_unavailable()


def build(method: Method, inputs: BuildInputs) -> IpexModel:
    return IpexModel.from_module(inputs.model, method, inputs.signature, inputs.output,
                                 inputs.thread_num)


MODEL_CLASS = IpexModel
