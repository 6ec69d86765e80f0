"""``patch_cuda()``: run a script written for a CUDA GPU on the CPU, unchanged.

After ``patch_cuda()`` (BigDL-Nano's ``bigdl.nano.pytorch.patching.patch_cuda``):

- moving to CUDA stays on the CPU: ``.cuda()`` of tensors and modules (nested
  modules' parameters and buffers included), ``.to("cuda")`` / ``.to(0)`` /
  ``.to(torch.device("cuda:1"))``, ``device="cuda"`` in the tensor factories,
  ``torch.device("cuda")`` itself (it makes a CPU device), ``pin_memory()``, and the
  legacy ``torch.cuda.FloatTensor``-style types;
- ``torch.load(..., map_location="cuda")`` (or no map_location, for a checkpoint
  saved on a GPU) loads to the CPU;
- ``torch.cuda.amp.autocast`` / ``torch.autocast("cuda")`` become CPU bf16 autocast on
  a CPU with bf16 instructions (fp16 is asked for on GPUs; bf16 is the CPU's half
  type), else plain fp32 with one warning; ``GradScaler`` does not scale (bf16 needs
  no loss scaling): ``scale(loss)`` is ``loss`` and ``step(optimizer)`` steps;
- ``init_process_group("nccl")`` (and ``new_group``) use gloo, and
  ``DistributedDataParallel(model, device_ids=[rank])`` drops the device ids a CPU
  module cannot take;
- ``torch.cuda``'s housekeeping does the harmless CPU thing: ``synchronize``,
  ``empty_cache``, ``set_device``, ``manual_seed``/``manual_seed_all`` (there is no
  CUDA generator; the CPU one is seeded by ``torch.manual_seed`` as before) and the
  peak-memory resets do nothing; the memory queries answer 0.

``torch.cuda.is_available()`` answers **False** and ``device_count()`` 0: libraries
that pick their device from them (Lightning's ``accelerator="auto"``, transformers)
then stay on the CPU instead of starting CUDA code paths, and a script that moves
to CUDA regardless is redirected by the patches above. A script that sizes its
process count by ``device_count()`` should take it from the launcher instead
(``bigdl-nano-run --ninstances N`` / ``torchrun``).

``unpatch_cuda()`` puts back every replaced object (the identical objects); patching
twice is the same as patching once.
"""

from __future__ import annotations

import functools
import logging
import warnings
from typing import Any, Callable

import torch

logger = logging.getLogger(__name__)

_ORIGINAL_DEVICE = torch.device
_CPU = _ORIGINAL_DEVICE("cpu")
_MISSING = object()
_saved: list = []  # (owner, attribute, original or _MISSING), in patching order

# torch functions that take ``device=``
FACTORIES = (
    "tensor", "as_tensor", "asarray", "scalar_tensor", "zeros", "ones", "empty", "full", "rand",
    "randn", "randint", "randperm", "arange", "range", "linspace", "logspace", "eye",
    "empty_strided", "zeros_like", "ones_like", "empty_like", "full_like", "rand_like",
    "randn_like", "randint_like", "tril_indices", "triu_indices", "sparse_coo_tensor",
    "normal", "bartlett_window", "blackman_window", "hamming_window", "hann_window",
    "kaiser_window",
)
LEGACY_TYPES = ("FloatTensor", "DoubleTensor", "HalfTensor", "BFloat16Tensor", "LongTensor",
                "IntTensor", "ShortTensor", "CharTensor", "ByteTensor", "BoolTensor")
_NO_OPS = ("synchronize", "empty_cache", "set_device", "manual_seed", "manual_seed_all", "seed",
           "seed_all", "reset_peak_memory_stats", "reset_max_memory_allocated",
           "reset_max_memory_cached", "reset_accumulated_memory_stats", "ipc_collect")
_ZEROS = ("memory_allocated", "max_memory_allocated", "memory_reserved", "max_memory_reserved",
          "memory_cached", "max_memory_cached")


def is_cuda(device: Any) -> bool:
    """``device`` names a CUDA device: "cuda", "cuda:1", a torch.device of type cuda, or a
    bare GPU index."""
    if isinstance(device, _ORIGINAL_DEVICE):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.split(":")[0].strip().lower() == "cuda"
    return isinstance(device, int) and not isinstance(device, bool)


def cpu_device(device: Any) -> Any:
    """``device``, with a CUDA one replaced by the CPU."""
    return _CPU if is_cuda(device) else device


def is_patched() -> bool:
    """patch_cuda() is in effect."""
    return bool(_saved)


def _replace(owner: Any, name: str, value: Any) -> None:
    _saved.append((owner, name, owner.__dict__.get(name, _MISSING)
                   if isinstance(owner, type) else getattr(owner, name, _MISSING)))
    setattr(owner, name, value)


def _device_kwarg(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def call(*args, **kwargs):
        if "device" in kwargs:
            kwargs["device"] = cpu_device(kwargs["device"])
        return fn(*args, **kwargs)
    return call


def _to(original: Callable) -> Callable:
    """``Tensor.to`` / ``Module.to`` with CUDA devices (positional or ``device=``) made CPU."""
    @functools.wraps(original)
    def to(self, *args, **kwargs):
        if args and not isinstance(args[0], (torch.dtype, torch.Tensor)):
            args = (cpu_device(args[0]),) + args[1:]
        if "device" in kwargs:
            kwargs["device"] = cpu_device(kwargs["device"])
        return original(self, *args, **kwargs)
    return to


def _tensor_cuda(self, device=None, non_blocking=False, memory_format=torch.preserve_format):
    return self.to("cpu", non_blocking=non_blocking, memory_format=memory_format)


def _module_cuda(self, device=None):
    return self.to(_CPU)


def _pin_memory(self, *args, **kwargs):
    return self


class _DeviceType(type):
    def __instancecheck__(cls, obj):
        return isinstance(obj, _ORIGINAL_DEVICE)


class _Device(metaclass=_DeviceType):
    """Stands in for ``torch.device``: makes real ``torch.device`` objects, the CPU for a
    CUDA one; ``isinstance(x, torch.device)`` keeps working."""

    def __new__(cls, *args, **kwargs):
        if args and is_cuda(args[0]) or kwargs.get("type") == "cuda":
            return _CPU
        return _ORIGINAL_DEVICE(*args, **kwargs)


def _load(original: Callable) -> Callable:
    @functools.wraps(original)
    def load(f, map_location=None, *args, **kwargs):
        if map_location is None or is_cuda(map_location):
            map_location = "cpu"  # a checkpoint saved on a GPU, or "cuda" asked for
        return original(f, map_location, *args, **kwargs)
    return load


@functools.lru_cache(maxsize=1)
def _half_dtype() -> torch.dtype | None:
    """The CPU's half type for autocast: bf16 where the CPU has it, else None (fp32)."""
    from nano.launcher.topology import read_topology

    if read_topology().has_bf16:
        return torch.bfloat16
    warnings.warn("patch_cuda: this CPU has no bf16 instructions, so CUDA autocast runs in "
                  "fp32 here", stacklevel=4)
    return None


def _autocast_init(original: Callable) -> Callable:
    @functools.wraps(original)
    def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        if device_type == "cuda":
            half = _half_dtype()
            device_type, dtype = "cpu", half
            enabled = enabled and half is not None
        original(self, device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)
    return __init__


def _scaler_init(original: Callable) -> Callable:
    @functools.wraps(original)
    def __init__(self, device="cuda", *args, **kwargs):
        if is_cuda(device):
            original(self, "cpu", enabled=False)  # passes losses and steps through
        else:
            original(self, device, *args, **kwargs)
    return __init__


def _gloo(original: Callable) -> Callable:
    @functools.wraps(original)
    def call(*args, **kwargs):
        backend = kwargs.get("backend", args[0] if args else None)
        if isinstance(backend, str) and "nccl" in backend.lower():
            if "backend" in kwargs:
                kwargs["backend"] = "gloo"
            else:
                args = ("gloo",) + args[1:]
        return original(*args, **kwargs)
    return call


def _ddp_init(original: Callable) -> Callable:
    @functools.wraps(original)
    def __init__(self, module, *args, **kwargs):
        if not any(p.is_cuda for p in module.parameters()):
            kwargs.pop("device_ids", None)
            kwargs.pop("output_device", None)
            args = (None, None) + args[2:]  # DDP's first two options are those two
        original(self, module, *args, **kwargs)
    return __init__


def _returning(name: str, value: Any) -> Callable:
    """A stand-in for ``torch.cuda.<name>`` answering ``value``: one function object per
    name (torch.compile's trace rules refuse one object under two names)."""
    def stand_in(*args: Any, **kwargs: Any) -> Any:
        return value
    stand_in.__name__ = stand_in.__qualname__ = name
    return stand_in


def _legacy(name: str) -> Callable:
    cpu_type = getattr(torch, name)

    def make(*args, **kwargs):
        return cpu_type(*args, **kwargs)
    make.__name__ = name
    return make


def patch_cuda() -> None:
    """Make CUDA-written code run on the CPU (see the module docstring); twice is once."""
    if _saved:
        return
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    for owner in (torch.Tensor, torch.nn.Module):
        _replace(owner, "to", _to(owner.to))
    _replace(torch.Tensor, "cuda", _tensor_cuda)
    _replace(torch.nn.Module, "cuda", _module_cuda)
    _replace(torch.Tensor, "pin_memory", _pin_memory)
    _replace(torch, "device", _Device)
    for name in FACTORIES:
        if hasattr(torch, name):
            _replace(torch, name, _device_kwarg(getattr(torch, name)))
    _replace(torch, "load", _load(torch.load))
    _replace(torch.amp.autocast_mode.autocast, "__init__",
             _autocast_init(torch.amp.autocast_mode.autocast.__init__))
    _replace(torch.amp.GradScaler, "__init__", _scaler_init(torch.amp.GradScaler.__init__))
    answers = {"is_available": False, "device_count": 0, "current_device": 0,
               "get_device_name": "CPU (patch_cuda)", **dict.fromkeys(_NO_OPS),
               **dict.fromkeys(_ZEROS, 0)}
    for name, value in answers.items():
        _replace(torch.cuda, name, _returning(name, value))
    for name in LEGACY_TYPES:
        _replace(torch.cuda, name, _legacy(name))
    if dist.is_available():
        for name in ("init_process_group", "new_group"):
            _replace(dist, name, _gloo(getattr(dist, name)))
    _replace(DistributedDataParallel, "__init__", _ddp_init(DistributedDataParallel.__init__))
    logger.info("patch_cuda: CUDA calls now run on the CPU")


def unpatch_cuda() -> None:
    """Put back everything patch_cuda() replaced (the identical objects)."""
    while _saved:
        owner, name, original = _saved.pop()
        if original is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, original)
