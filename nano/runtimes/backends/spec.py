"""What a backend module declares about itself, and the contract its functions follow.

Each backend module holds one frozen :class:`BackendSpec` named ``SPEC``. The
method table, the accelerator names and aliases, the INT8 routing of
``quantize()`` and the wording of failures are all read from these specs, so a
new runtime is its module plus one entry in ``backends.BACKENDS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Protocol, runtime_checkable

from nano.errors import NanoValueError
from nano.runtimes.quant_config import QuantConfig

if TYPE_CHECKING:
    from nano.runtimes.methods import Method
    from nano.runtimes.model import AcceleratedModel
    from nano.runtimes.prepare import BuildInputs


# What builds import beyond torch (``BackendSpec.preload``): dynamo traces for torch.export,
# the ONNX exporter and OpenVINO's converter; inductor compiles; onnxscript writes ONNX.
# "module:function" also calls the function: inductor's probe of the CPU's vector
# instructions compiles and loads ten programs (2 s here), cached per process.
DYNAMO = ("torch._dynamo",)
INDUCTOR = (*DYNAMO, "torch._inductor.compile_fx", "torch._inductor.cpu_vec_isa:valid_vec_isa_list")
ONNX_EXPORT = (*DYNAMO, "onnx", "onnxscript")


@dataclass(frozen=True)
class Flavour:
    """One candidate a backend offers to optimize(): precision, memory format, variant."""

    precision: str = "fp32"
    channels_last: bool = False
    variant: str = ""


@dataclass(frozen=True)
class QuantizerSpec:
    """How an INT8 builder is driven.

    ``variants``: the flavours BigDL-Nano's ``method=`` picks (first: the
    default); ``dynamic_variant``: the variant that serves ``approach="dynamic"``
    (None: static only); ``fixed``: QuantConfig knobs this quantizer cannot turn,
    as (field, value) pairs; ``keep_fp32``: the layer-keeping modes it can do;
    ``accuracy_control``: it has its own accuracy-aware algorithm
    (``build_with_accuracy_control``); ``tuner``: an external tuner that can
    search its configurations ("neural_compressor") or "".
    """

    variants: tuple[str, ...] = ("",)
    dynamic_variant: Optional[str] = None
    fixed: tuple[tuple[str, Any], ...] = ()
    keep_fp32: tuple[str, ...] = ("none", "first_last", "sensitive")
    accuracy_control: bool = False
    tuner: str = ""

    def refusal(self, config: "QuantConfig") -> Optional[str]:
        """Why this quantizer cannot do ``config`` (a knob it cannot turn), or None."""
        for knob, value in self.fixed:
            if getattr(config, knob) != value:
                return f"{knob}={getattr(config, knob)!r} (fixed at {value!r})"
        if config.keep_fp32 not in self.keep_fp32:
            return f"keep_fp32={config.keep_fp32!r}"

        return None

    def supports(self, config: "QuantConfig") -> bool:
        """Whether ``config`` is one this quantizer can build."""
        return self.refusal(config) is None


@dataclass(frozen=True)
class BackendSpec:
    """A backend's frozen description.

    ``accelerator``: the name in method names and ``accelerator=``; ``aliases``:
    other spellings users pass; ``precisions``: what it builds; ``candidates``:
    what optimize() tries, in order; ``use_ipex``: it builds the ``*_ipex``
    methods of its accelerator; ``converts``: it converts the model to another
    format, so a build failure reads "failed to convert"; ``channels_last``: it
    honours the channels_last memory format; ``options``: the runtime options it
    reads from a Method; ``reads_onnx``: it can run an ONNX file given as the
    model; ``quantizer``: set for INT8 builders; ``serves``: other accelerators
    whose INT8 this builder provides (PyTorch INT8 runs through torch.compile);
    ``variants``: the only variants it builds, where two backends share an accelerator
    and precision (None: every variant); ``preload``: modules its builds import that the
    search's zygote imports once for all its children ("module:function" also calls
    the function); nothing that starts a thread, as the zygote forks.
    """

    accelerator: str
    precisions: tuple[str, ...]
    candidates: tuple[Flavour, ...] = ()
    aliases: tuple[str, ...] = ()
    use_ipex: bool = False
    converts: bool = False
    channels_last: bool = False
    options: tuple[str, ...] = ()
    reads_onnx: bool = False
    quantizer: Optional[QuantizerSpec] = None
    serves: tuple[str, ...] = ()
    variants: Optional[tuple[str, ...]] = None
    preload: tuple[str, ...] = ()

    def quant_config(self, method: "Method") -> QuantConfig:
        """The INT8 configuration ``method`` carries, refused (ValueError) when this
        backend's quantizer cannot turn one of the knobs it sets."""
        config = QuantConfig.from_options(method.option_dict, self.options)
        refusal = self.quantizer.refusal(config) if self.quantizer else "INT8 (no quantizer)"
        if refusal:
            raise NanoValueError(f"{method.name} does not support {refusal}")
        return config

    def builds(self, method: "Method") -> bool:
        """Whether ``method`` is this backend's to build (its precision checked apart)."""
        return (method.accelerator == self.accelerator and method.use_ipex == self.use_ipex
                and (method.precision == "int8") == (self.quantizer is not None)
                and (self.variants is None or method.variant in self.variants))


@runtime_checkable
class Backend(Protocol):
    """The contract of a backend module.

    ``build`` turns prepared inputs into a model; ``MODEL_CLASS.load_artifacts``
    loads a saved one; ``unavailable_reason`` says why a method cannot run here
    (a missing package, a CPU without the instructions), or None;
    ``INSTALL_HINT`` is the pip line for its packages; ``SPEC`` says what it
    supports. A backend that can build with no input sample also defines
    ``without_sample(model, method, thread_num)``.
    """

    SPEC: BackendSpec
    MODEL_CLASS: type
    INSTALL_HINT: str

    def build(self, method: "Method", inputs: "BuildInputs") -> "AcceleratedModel": ...

    def unavailable_reason(self, method: "Method") -> Optional[str]: ...
