"""``AcceleratedModel``: the one interface every runtime's model presents.

It is called exactly like the original module and returns torch tensors in the
original output structure. It applies its own thread count (and, in the torch
backends, autocast and memory format) inside each call, so no context manager
is needed for correctness. ``save(dir)`` writes a self-describing directory:
``nano_model.json`` (method, signature, output structure, file checksums) plus
standard artifacts that deploy without Nano.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, ClassVar, Iterator, Optional

import torch

from nano.errors import NanoIndexError, NanoValueError
from nano.launcher.capability import current
from nano.runtimes.methods import Method
from nano.runtimes.model_files import save_directory
from nano.runtimes.structure import InputSignature, unflatten_output


@contextlib.contextmanager
def torch_threads(n: Optional[int]) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (and put the old count back)."""
    if not n:
        yield
        return
    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if old != n:
            torch.set_num_threads(old)


class AcceleratedModel(torch.nn.Module):
    """Base class of every backend's model.

    Subclasses set ``accelerator`` and implement ``run(flat_inputs)`` (graph
    runtimes) or override ``forward`` (torch backends), plus ``save_artifacts``
    and the classmethod ``load_artifacts``.
    """

    accelerator: ClassVar[str] = ""
    artifact: ClassVar[str] = ""  # the file load_artifacts reads first (checked before loading)
    needs_model_to_load: ClassVar[bool] = False
    # kinds saved as a state dict can store their weights in bf16 (save(compression="bf16"))
    state_dict_saved: ClassVar[bool] = False
    # a TorchScript graph: compression="bf16" saves it as it is, with a warning
    frozen_graph: ClassVar[bool] = False

    def __init__(self, method: Method, signature: Optional[InputSignature],
                 output: Optional[dict], thread_num: Optional[int]):
        super().__init__()
        self.method = method
        self.signature = signature  # None: built without a sample (torch kinds only)
        self.output = output  # output spec of the original model (None without a sample)
        self.thread_num = thread_num
        self.output_tensors = True  # False: outputs come back as numpy arrays (BigDL's option)
        self.compression: Optional[str] = None  # set while save() writes a bf16 state dict
        # the CPU it was built for, and for integer INT8 which weights it uses
        # (nano.runtimes.int8_overflow): kept through save and load
        self.built_on: dict = current().to_dict()
        self.int8_scheme: Optional[str] = None
        self.traced_shapes: list = []  # see record_shapes
        self.index_bounds: dict = {}  # see record_index_bounds
        self.dynamic_dims: list = []
        object.__setattr__(self, "_nano_original", None)  # not a submodule: not saved
        self.train(False)

    # the original module -----------------------------------------------------------

    def attach_original(self, model: Optional[torch.nn.Module]) -> "AcceleratedModel":
        """Remember the user's module, so that its attributes and methods stay reachable
        here (``acc.num_classes``, ``acc.preprocess(x)``) and quantize() can start from it."""
        if model is not None and not isinstance(model, AcceleratedModel):
            object.__setattr__(self, "_nano_original", model)
        return self

    @property
    def original(self) -> Optional[torch.nn.Module]:
        """The module this model was built from (None when loaded without it)."""
        return self.__dict__.get("_nano_original")

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            original = self.__dict__.get("_nano_original")
            if original is None or name.startswith("__"):
                raise
            return getattr(original, name)

    # calling -------------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        signature, output = self.recorded_io()
        flat = signature.flatten(args, kwargs)
        self.check_ids(flat)
        try:
            outputs = self.run(flat)
        except Exception:
            mismatch = self.fixed_dim_mismatch(flat)
            if mismatch:  # the runtime's own words run to several lines of C++ or TorchScript
                raise NanoValueError(mismatch) from None
            raise
        return self.finish(unflatten_output(output, outputs))

    def record_shapes(self, shapes: list, dynamic_dims: list) -> "AcceleratedModel":
        """Remember the traced sample's input shapes and which dims may vary (the rest are
        fixed in the graph), to say so in one line when a call breaks that."""
        self.traced_shapes = [list(s) for s in shapes]
        self.dynamic_dims = [list(d) for d in dynamic_dims]
        return self

    def record_index_bounds(self, bounds: dict) -> "AcceleratedModel":
        """Remember which flat inputs are ids of an embedding, and how many rows it has."""
        self.index_bounds = {int(i): int(n) for i, n in bounds.items()}
        return self

    def check_ids(self, flat: list) -> None:
        """Refuse ids an embedding does not have, as eager PyTorch does (ONNX Runtime and
        OpenVINO would return another row for -1, zeros for too large an id)."""
        for i, bound in self.index_bounds.items():
            ids = flat[i] if i < len(flat) else None
            if ids is None or not ids.numel():
                continue
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= bound:
                name = self.signature.tensor_names[i] if self.signature else str(i)
                bad = low if low < 0 else high
                raise NanoIndexError(f"input {name!r} holds id {bad}, and the embedding it "
                                     f"feeds has rows 0 to {bound - 1}: the original model "
                                     f"raises IndexError for it too")

    def fixed_dim_mismatch(self, flat: list) -> Optional[str]:
        """Which input has another size in a dimension the traced graph fixed, or None."""
        if not self.traced_shapes or self.signature is None:
            return None
        for name, t, shape, dims in zip(self.signature.tensor_names, flat, self.traced_shapes,
                                        self.dynamic_dims):
            if t.dim() == len(shape) and any(t.shape[d] != size for d, size in enumerate(shape)
                                             if d not in dims):
                fixed = [d for d in range(len(shape)) if d not in dims]
                return (f"input {name!r} was traced with shape {tuple(shape)}, and dim(s) "
                        f"{fixed} are fixed in the {self.method.name} graph; got shape "
                        f"{tuple(t.shape)}: call it with those sizes, or trace with "
                        f"dynamic_axes={{{name!r}: [...]}} naming the dims that vary")
        return None

    def recorded_io(self) -> tuple[InputSignature, dict]:
        """The input signature and output structure recorded from the sample (a runtime
        that runs flat tensors is always built from one)."""
        if self.signature is None or self.output is None:
            raise NanoValueError(f"{self.method.name} was built without an input sample and "
                                 f"cannot flatten its inputs")
        return self.signature, self.output

    def finish(self, outputs: Any) -> Any:
        """Outputs as the caller asked for them: tensors, or numpy arrays with
        ``output_tensors=False``."""
        return outputs if self.output_tensors else _to_numpy(outputs)

    def run(self, inputs: list) -> list:
        """Run the runtime on flat tensor inputs, returning flat outputs."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> "AcceleratedModel":
        if mode:
            raise RuntimeError(f"{type(self).__name__} is an inference model; it cannot be put "
                               f"in training mode")
        return super().train(False)

    def extra_repr(self) -> str:
        return f"method={self.method.name}, threads={self.thread_num}"

    # saving --------------------------------------------------------------------

    def save_artifacts(self, directory: str) -> dict:
        """Write the runtime's files into ``directory``; return extra metadata."""
        raise NotImplementedError

    @classmethod
    def load_artifacts(cls, directory: str, meta: dict,
                       model: Optional[torch.nn.Module]) -> "AcceleratedModel":
        """Rebuild the model from files written by ``save_artifacts``."""
        raise NotImplementedError

    def save(self, directory: str, compression: Optional[str] = None) -> None:
        """Save to ``directory`` (created if needed) with metadata and checksums.

        ``compression="bf16"`` stores the weights of state-dict kinds (plain
        PyTorch, compile) in bf16, half the size; load() casts them back. A TorchScript
        model is saved as it is, with a warning; other graph kinds refuse it.
        """
        if compression not in (None, "fp32", "bf16"):
            raise NanoValueError(f"compression must be None, 'fp32' or 'bf16', got "
                                 f"{compression!r}")
        if compression == "bf16" and self.frozen_graph:
            warnings.warn(f"save(compression='bf16'): {self.method.name} is a TorchScript graph "
                          f"whose weights are part of the graph; it is saved as it is (BigDL-Nano "
                          f"took the option for jit models too)", stacklevel=3)
            compression = None
        if compression == "bf16" and not self.state_dict_saved:
            raise NanoValueError(f"compression='bf16' applies to models saved as state dicts "
                                 f"(plain PyTorch, compile); {self.method.name} is saved as a "
                                 f"{self.accelerator} graph whose weights keep their precision")
        save_directory(directory, lambda staging: self._write(staging, compression))

    def _write(self, staging: str, compression: Optional[str]) -> dict:
        """Write the runtime's files into ``staging``; return the metadata describing them."""
        self.compression = compression
        try:
            extra = self.save_artifacts(staging)
        finally:
            self.compression = None
        return {
            "accelerator": self.accelerator,
            "method": self.method.to_json(),
            "method_name": self.method.name,
            "thread_num": self.thread_num,
            "signature": self.signature.to_json() if self.signature is not None else None,
            "output": self.output,
            "output_tensors": self.output_tensors,
            "needs_model": self.needs_model_to_load,
            "extra": extra,
            "built_on": self.built_on,
            "int8_scheme": self.int8_scheme,
            "traced_shapes": self.traced_shapes,
            "index_bounds": self.index_bounds,
            "dynamic_dims": self.dynamic_dims,
        }


def check_thread_num(thread_num: Any) -> None:
    """A NanoValueError unless ``thread_num`` is None or a whole number >= 1 (a runtime would
    otherwise take -3 silently, or fail later in its own words)."""
    if thread_num is not None and (isinstance(thread_num, bool)
                                   or not isinstance(thread_num, int) or thread_num < 1):
        raise NanoValueError(f"thread_num must be a whole number >= 1 (or None for the usable "
                             f"cores), got {thread_num!r}")


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().numpy()
    if isinstance(value, dict):
        return type(value)({k: _to_numpy(v) for k, v in value.items()}) \
            if type(value) is dict else {k: _to_numpy(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_to_numpy(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_to_numpy(v) for v in value)
    return value
