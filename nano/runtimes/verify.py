"""Accept a traced or converted model only after it matched the original on fresh inputs.

Tracers record one path through ``forward``: a data-dependent ``if``, a Python
number returned from ``forward`` or a list whose length follows the batch are
frozen at their traced values, and the converted model then returns wrong
numbers for other inputs without a word. So every graph a backend builds is
called on two inputs unlike the traced sample -- one with another batch size
(where dim 0 is dynamic) and perturbed values, one with the signs of its
floating values flipped, padding in its 0/1 masks and its other integer values
moved along the last dim -- and compared with the original; a mismatch is a
``TraceError`` that says what differs and repeats what the tracer warned.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Callable, Iterator, Optional, TYPE_CHECKING

import torch

from nano.errors import TraceError
from nano.runtimes.structure import map_tensors

if TYPE_CHECKING:
    from nano.runtimes.prepare import BuildInputs

# Largest relative difference (max |a - b| / max |b|) a conversion may show on fresh inputs.
# Wrong traces differ by O(1); these leave room for the precision's own rounding.
CHECK_TOLERANCE = {"fp32": 1e-3, "bf16": 1e-1, "fp16": 1e-1}


def fresh_calls(inputs: BuildInputs, seed: int = 0) -> list[tuple[tuple, dict]]:
    """Two ``(args, kwargs)`` calls with the sample's structure and other values."""
    flat, dims = inputs.flat_sample(), inputs.dynamic_dims()
    g = torch.Generator().manual_seed(seed)
    sizes = {t.shape[0] for t, d in zip(flat, dims) if 0 in d}
    rows = None
    if len(sizes) == 1:  # one more row, drawn from the sample's rows, in every batched input
        n = sizes.pop()
        rows = torch.cat([torch.randperm(n, generator=g), torch.randint(0, n, (1,), generator=g)])
    grown, flipped = [], []
    for t, d in zip(flat, dims):
        a = t[rows] if rows is not None and 0 in d else t
        b = t
        if t.is_floating_point():
            spread = float(t.float().std()) if t.numel() > 1 else float(t.abs().max())
            scale = 0.1 * (spread if math.isfinite(spread) and spread > 0 else 1.0)
            a = a + (torch.randn(a.shape, generator=g) * scale).to(t.dtype)
            b = -(t + (torch.randn(t.shape, generator=g) * scale).to(t.dtype))
        elif t.dim() >= 2 and t.numel() and t.shape[-1] > 1:
            b = _padded(t) if _is_mask(t) else _shuffled_rows(t, g)
        grown.append(a.contiguous())
        flipped.append(b.contiguous())
    return [inputs.signature.rebuild(grown), inputs.signature.rebuild(flipped)]


def _is_mask(t: torch.Tensor) -> bool:
    return t.dtype == torch.bool or bool(((t == 0) | (t == 1)).all())


def _padded(mask: torch.Tensor) -> torch.Tensor:
    """An attention-style mask with the tail of every other row cleared (the first position
    kept): models often take another path when a batch has no padding at all."""
    out = mask.clone()
    keep = max(1, mask.shape[-1] // 2)
    out[..., 0] = True if mask.dtype == torch.bool else 1
    out[::2, ..., keep:] = False if mask.dtype == torch.bool else 0
    return out


def _shuffled_rows(t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Integer values (token ids, indexes) moved around along the last dim: the same
    values, so still valid, in other places."""
    return t[..., torch.randperm(t.shape[-1], generator=g)]


def difference(got: Any, want: Any, tolerance: float, where: str = "output") -> Optional[str]:
    """Why ``got`` is not ``want`` (structure, shapes, Python values, numbers), or None."""
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{where} is a tensor in the original, {type(got).__name__} here"
        if got.shape != want.shape:
            return (f"{where} has shape {tuple(got.shape)} here, {tuple(want.shape)} in the "
                    f"original")
        if want.numel() == 0:
            return None
        if not want.is_floating_point():
            wrong = (got != want).float().mean().item()
            return f"{where} differs in {wrong:.0%} of its values" if wrong > tolerance else None
        a, b = got.float(), want.float()
        if not torch.equal(torch.isnan(a), torch.isnan(b)):
            return f"{where} has NaN where the original has none, or the other way round"
        keep = ~torch.isnan(b)
        a, b = a[keep], b[keep]
        if b.numel() == 0:
            return None
        scale = max(b.abs().max().item(), 1e-6)
        err = (a - b).abs().max().item() / scale
        if not err <= tolerance:
            return f"{where} differs by {err:.3g} (relative to its largest value; allowed " \
                   f"{tolerance:g})"
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict) or list(got) != list(want):
            return (f"{where} has keys {list(want)} in the original, "
                    f"{list(got) if isinstance(got, dict) else type(got).__name__} here")
        for key in want:
            reason = difference(got[key], want[key], tolerance, f"{where}[{key!r}]")
            if reason:
                return reason
        return None
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            n = len(got) if isinstance(got, (tuple, list)) else type(got).__name__
            return (f"{where} has {len(want)} items in the original but {n} here: the number "
                    f"of items was fixed when the model was traced")
        for i, (g, w) in enumerate(zip(got, want)):
            reason = difference(g, w, tolerance, f"{where}[{i}]")
            if reason:
                return reason
        return None
    if got != want:
        return (f"{where} is the Python value {want!r} in the original but {got!r} here: a "
                f"Python value returned by forward() is fixed when the model is traced; "
                f"return a tensor instead")
    return None


@contextlib.contextmanager
def tracer_warnings() -> Iterator[list]:
    """Record the warnings of a trace or export; yields the list of TracerWarning texts.

    Exporters repeat deprecation notices on every call: those are dropped. What
    the tracer says about the model (a tensor turned into a Python value, a
    data-dependent branch) is kept for the error message of a failed check.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found: list[str] = []
        try:
            yield found
        finally:
            for w in caught:
                if w.category.__name__ == "TracerWarning":
                    text = f"{w.filename}:{w.lineno}: {str(w.message).splitlines()[0]}"
                    if text not in found:
                        found.append(text)


def flat_runner(fn: Callable, inputs: BuildInputs) -> Callable[..., Any]:
    """A structured call of ``fn``, which takes flat tensors and returns flat outputs."""
    from nano.runtimes.structure import unflatten_output

    def run(*args, **kwargs):
        return unflatten_output(inputs.output, list(fn(*inputs.signature.flatten(args, kwargs))))

    return run


def check_conversion(run: Callable[..., Any], inputs: BuildInputs, precision: str, what: str,
                     warned: Optional[list] = None,
                     reference: Optional[Callable[..., Any]] = None) -> None:
    """Call ``run(*args, **kwargs)`` on fresh inputs and compare it with the original
    (``inputs.model``, or ``reference``: what was converted, where that is not the original,
    such as an eager INT8 module before its trace); raise ``TraceError`` saying what
    differs."""
    original = inputs.model if reference is None else reference
    tolerance = CHECK_TOLERANCE.get(precision, CHECK_TOLERANCE["bf16"])
    kept: list = []
    eager_errors: list = []
    for args, kwargs in fresh_calls(inputs):
        try:
            with torch.no_grad():  # each call on its own copy: forward may write into them
                want = original(*map_tensors(torch.Tensor.clone, args),
                                **map_tensors(torch.Tensor.clone, kwargs))
        except Exception as e:  # the original itself refuses these values: nothing to compare
            eager_errors.append(f"{type(e).__name__}: {_first_line(e)}")
            continue
        try:
            with torch.no_grad():
                got = run(*map_tensors(torch.Tensor.clone, args),
                          **map_tensors(torch.Tensor.clone, kwargs))
        except Exception as e:
            raise TraceError(_message(what, f"it fails on an input the original runs "
                                            f"({_describe(args, kwargs)}): {type(e).__name__}: "
                                            f"{_first_line(e)}", warned)) from e
        reason = difference(got, want, tolerance)
        if reason:
            raise TraceError(_message(what, f"on an input unlike the traced sample "
                                            f"({_describe(args, kwargs)}) its {reason}", warned))
        kept.append((args, kwargs, got, want))
    if not kept:
        raise TraceError(f"{what} could not be checked: the original model fails on inputs "
                         f"other than the sample ({eager_errors[0]}), so Nano cannot show the "
                         f"conversion is right")
    # One more call: a runtime that hands back tensors over its own buffers would have it
    # overwrite the outputs above (outputs a caller keeps in a list would all be the last).
    with torch.no_grad():
        run(*map_tensors(torch.Tensor.clone, inputs.args),
            **map_tensors(torch.Tensor.clone, inputs.kwargs))
    for args, kwargs, got, want in kept:
        if difference(got, want, tolerance):
            raise TraceError(_message(what, f"its outputs do not stay as returned: the next "
                                            f"call overwrote the output for "
                                            f"({_describe(args, kwargs)})", warned))


def _first_line(error: BaseException) -> str:
    from nano.runtimes.error_summary import summarize_error

    return summarize_error(error, 300)


def _describe(args, kwargs) -> str:
    from nano.runtimes.data import describe_values

    parts = [describe_values(a) for a in args] + [f"{k}={describe_values(v)}"
                                                  for k, v in kwargs.items()]
    return ", ".join(parts)


def _message(what: str, reason: str, warned: Optional[list]) -> str:
    text = f"{what} does not compute what the original model does: {reason}"
    if warned:
        text += f". The tracer warned: {warned[0]}"
        if len(warned) > 1:
            text += f" (and {len(warned) - 1} more)"
    return text
