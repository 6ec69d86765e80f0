"""Everything a backend needs to build a model: a private eval copy, the sample, the signature."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Union

import torch

from nano.errors import NanoTypeError, NanoValueError
from nano.runtimes.data import check_fits, sample_call
from nano.runtimes.model import check_thread_num
from nano.runtimes.structure import FlatModule, InputSignature, map_tensors, output_spec



class HeldOut(Protocol):
    """Held-out data and how outputs on it are judged, as an INT8 builder that measures which
    layers cost accuracy uses it (the search's ``judgement.HeldOut`` is the one in use): the
    samples ``(args, kwargs)``, ``score`` (1 at the original's outputs, 0 at the edge of the
    tolerance) and ``accepts``; with the user's metric, that metric, its targets and the
    allowed drop."""

    @property
    def samples(self) -> list: ...

    @property
    def metric(self) -> Optional[Callable]: ...

    @property
    def targets(self) -> Optional[list]: ...

    @property
    def max_drop(self) -> float: ...

    @property
    def drop_type(self) -> str: ...

    def score(self, outputs: list, precision: str = "int8",
              indexes: Optional[list] = None) -> float: ...

    def accepts(self, outputs: list) -> bool: ...


@dataclass
class BuildInputs:
    """A private, eval-mode copy of the user's model plus its sample call and output structure."""

    model: torch.nn.Module
    args: tuple
    kwargs: dict
    signature: InputSignature
    output: dict
    thread_num: Optional[int]
    dynamic_axes: Union[bool, dict] = True
    calib: Optional[list] = None  # calibration inputs as (args, kwargs), for INT8 builders
    conversion_cache: Optional[str] = None  # a directory builds of these inputs share
    held_out: Optional[HeldOut] = None  # for INT8 that measures which layers cost accuracy
    # why a trace would freeze a branch ("" none shown; None not asked yet): see control_flow
    control_flow: Optional[str] = None

    def require_held_out(self, what: str) -> HeldOut:
        """The held-out data, or an error saying ``what`` needs it."""
        if self.held_out is None:
            raise NanoValueError(f"{what} measures each layer's cost on held-out data: it is "
                                 f"one of optimize()'s INT8 ladder steps, which has that data")
        return self.held_out

    def flat_sample(self) -> list:
        return self.signature.flatten(self.args, self.kwargs)

    def export_sample(self) -> list:
        """``flat_sample`` with size-1 dynamic dims repeated to 2: exporters specialize a dim
        of size 1 to a constant, which would freeze the batch size at 1."""
        sample = []
        for t, dyn in zip(self.flat_sample(), self.dynamic_dims()):
            for d in dyn:
                if t.shape[d] == 1:
                    t = torch.cat([t, t], dim=d)
            sample.append(t)
        return sample

    def flat_module(self) -> FlatModule:
        return FlatModule(self.model, self.signature)

    def flat_calib(self) -> list[list]:
        """Calibration inputs flattened like ``flat_sample``; an error if there are none."""
        if not self.calib:
            raise ValueError("INT8 needs calibration data (calib_data) and none was given")
        return [self.signature.flatten(args, kwargs) for args, kwargs in self.calib]

    def dynamic_dims(self) -> list[list[int]]:
        """For each flat input, which dims may vary: dim 0 when True, none when False,
        or the axes listed per input name in a dict."""
        dims = []
        for name, owner, t in zip(self.signature.tensor_names, self.signature.tensor_owners(),
                                  self.flat_sample()):
            if self.dynamic_axes is True:
                dims.append([0] if t.dim() > 0 else [])
            elif not self.dynamic_axes:
                dims.append([])
            else:  # by the flat input's name, or for every tensor of a nested parameter
                axes = self.dynamic_axes.get(name, self.dynamic_axes.get(owner, []))
                dims.append(sorted(axes.keys()) if isinstance(axes, dict) else list(axes))
        return dims


def export_dynamic_shapes(dims: list[list[int]]) -> tuple:
    """``torch.export``'s dynamic_shapes for inputs whose varying dims are ``dims`` (one
    list per input, as ``BuildInputs.dynamic_dims`` gives): torch decides each size."""
    from torch.export import Dim

    return tuple({d: Dim.AUTO for d in ds} or None for ds in dims)


def private_eval_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy in eval mode: Nano never changes the user's module (mode, weights, layout)."""
    return copy.deepcopy(model).eval()


def prepare(model: torch.nn.Module, input_sample: Any, thread_num: Optional[int] = None,
            dynamic_axes: Union[bool, dict] = True, calib: Optional[list] = None) -> BuildInputs:
    """Copy ``model`` (the user's stays untouched), run the sample once, record the structure."""
    if not isinstance(model, torch.nn.Module):
        raise NanoTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if input_sample is None:
        raise NanoValueError("input_sample is required: pass one example input (a tensor, a "
                             "tuple of inputs, a dict of keyword inputs or a DataLoader)")
    check_thread_num(thread_num)
    if not isinstance(dynamic_axes, (bool, dict)):
        raise NanoTypeError("dynamic_axes must be True, False, or a dict {input_name: [axes]}")
    # a copy: a forward that writes into its inputs (x.mul_(2)) must not change the user's
    # sample, nor the sample every check compares against
    args, kwargs = map_tensors(torch.Tensor.clone, sample_call(model, input_sample))
    private = private_eval_copy(model)
    signature = InputSignature.from_sample(private, args, kwargs)
    if isinstance(dynamic_axes, dict):
        known = set(signature.tensor_names) | set(signature.tensor_owners())
        unknown = set(dynamic_axes) - known
        if unknown:
            raise NanoValueError(f"dynamic_axes names unknown input(s) {sorted(unknown)}; "
                                 f"inputs are {signature.tensor_names}")
    out = check_fits(private, map_tensors(torch.Tensor.clone, (args, kwargs)), "input_sample")
    return BuildInputs(private, args, kwargs, signature, output_spec(out), thread_num,
                       dynamic_axes, calib)
