"""Whether a trace of the model would bake in a decision its inputs make.

A tracer records the one path ``forward`` took on the sample: an ``if`` on tensor values
(``if x.abs().max() > 10``) or on the size of a dimension that may vary (``if x.shape[0] >
4``) is frozen at the sample's side. Checking on sampled inputs cannot prove such a branch
absent: fresh values on the same side pass, and the model is wrong on the other side
(off by 86-184 on jit, ONNX Runtime and OpenVINO before). ``torch.export`` can prove it: it
refuses data-dependent control flow and a guard on a dim declared dynamic. So a
conversion that traces asks ``baked_decision`` first; TorchScript then compiles the branch
with ``torch.jit.script`` instead, and the graph runtimes refuse with the reason.

Export failing for another reason (an operator it does not know) proves nothing either way;
the fresh-values check (``nano.runtimes.verify``) stays the guard there. The answer is
asked once per search (``conversions.shared_answer``).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Optional

import torch

from nano.noise import quiet_console, quiet_third_party

if TYPE_CHECKING:
    from nano.runtimes.prepare import BuildInputs

# the loggers torch.export prints a failed export through (a dump of the FX graph, the
# symbolic-shapes guards): Nano's error says what matters in one line
EXPORT_LOGGERS = ("torch.fx.experimental.symbolic_shapes", "torch._dynamo", "torch.export",
                  "torch._export", "torch._subclasses.fake_tensor", "torch.onnx")


def classify(error: BaseException) -> Optional[str]:
    """What an export error says about the model's control flow, as a phrase, or None when
    the error is about something else."""
    kind, text = type(error).__name__, str(error)
    if ("DataDependent" in kind or "data-dependent" in text.lower()
            or "data dependent" in text.lower()):
        return ("depends on tensor values in Python (an if on them, or an .item(), int() or "
                "bool() of one)")
    if ("ConstraintViolation" in kind or "Constraints violated" in text
            or "specialized" in text.lower()):
        return ("depends on the size of a dimension that may vary (an if on x.shape, a loop "
                "over it, or a number made of it)")
    return None


def baked_decision(inputs: BuildInputs) -> Optional[str]:
    """Why a trace of ``inputs.model`` would freeze a decision of ``forward`` at the sample's
    values, as a phrase ("depends on tensor values ..."), or None (no such branch shown).
    Computed once per BuildInputs."""
    if inputs.control_flow is None:
        from nano.runtimes.conversions import shared_answer

        inputs.control_flow = shared_answer(inputs, "control_flow", lambda: _probe(inputs))
    return inputs.control_flow or None


def _probe(inputs: BuildInputs) -> str:
    """Export the model as the conversions would and read what the export says ("" for
    nothing found)."""
    from nano.runtimes.prepare import export_dynamic_shapes

    try:
        # quiet_console: a data-dependent failure prints the FX graph, ~40 lines, to stderr
        with torch.no_grad(), warnings.catch_warnings(), quiet_third_party(*EXPORT_LOGGERS), \
                quiet_console():
            warnings.simplefilter("ignore")
            program = torch.export.export(
                inputs.flat_module(), tuple(inputs.export_sample()),
                dynamic_shapes=(export_dynamic_shapes(inputs.dynamic_dims()),), strict=False)
    except Exception as e:
        return classify(e) or ""
    return bounded_dim(program, inputs) or ""


def bounded_dim(program: Any, inputs: BuildInputs) -> Optional[str]:
    """A dim declared dynamic that the exported program holds only for some sizes (an ``if
    x.shape[0] > 4`` traced at 2 bounds it to 2..4), as a phrase, or None."""
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    users = [placeholders[name] for name in program.graph_signature.user_inputs]
    for name, node, dims in zip(inputs.signature.tensor_names, users, inputs.dynamic_dims()):
        shape = getattr(node.meta.get("val"), "shape", ())
        for d in dims:
            size = shape[d] if d < len(shape) else None
            expr = getattr(getattr(size, "node", None), "expr", None)  # a symbolic size's
            if expr is not None and getattr(expr, "is_number", False):
                size = int(expr)  # a symbol the export specialized to one value
            if isinstance(size, int):
                return (f"depends on the size of dim {d} of input {name!r} (an if, a loop or "
                        f"a number made of it): the trace holds only for size {size}")
            bounds = program.range_constraints.get(expr) if expr is not None else None
            if bounds is not None and float(bounds.upper) != float("inf"):
                return (f"depends on the size of dim {d} of input {name!r} (an if, a loop or "
                        f"a number made of it): the trace holds only for sizes {bounds.lower} "
                        f"to {bounds.upper}")
    return None


SCRIPT_IT = "use accelerator='jit' (TorchScript compiles the branch)"


def refusal(what: str, reason: str, remedy: str = SCRIPT_IT) -> str:
    """The one line a conversion that cannot keep the branch refuses with."""
    return (f"{what} would freeze one path through forward, which {reason}: Nano cannot "
            f"prove the result right for every input; {remedy}, or make the branch a tensor "
            f"operation (torch.where)")
