"""PyTorch INT8 (``compile_int8``): PT2E with torchao's X86InductorQuantizer, lowered by inductor.

export (strict: the non-strict export breaks the conv+add+relu pattern) ->
prepare_pt2e -> calibrate -> convert_pt2e -> torch.compile with freezing, which
fuses the quantize/dequantize pairs into real int8 kernels. The converted graph
is saved as an ExportedProgram (``model.pt2``), loadable without the original class.
"""

from __future__ import annotations

import copy
import os
import warnings
from typing import Optional, Sequence, TYPE_CHECKING

import torch

from nano.runtimes.availability import module_available
from nano.runtimes.backends.spec import BackendSpec, Flavour, QuantizerSpec, INDUCTOR
from nano.runtimes.backends.torch_common import load_exported_program
from nano.runtimes.backends.torch_compile import inductor_config
from nano.runtimes.int8_overflow import overflow_fix, scheme
from nano.runtimes.methods import Method
from nano.runtimes.model import AcceleratedModel, torch_threads
from nano.runtimes.model_files import restore_common
from nano.runtimes.prepare import export_dynamic_shapes
from nano.runtimes.sensitivity import keep_costliest, quantizable_layers

if TYPE_CHECKING:
    from nano.runtimes.prepare import BuildInputs

INSTALL_HINT = "pip install torchao"
# X86InductorQuantizer has fixed schemes (u8 affine activations, s8 per-channel weights), so
# those knobs are not its to turn; it never quantizes norms or softmax ("sensitive" is moot).
# PyTorch INT8 (accelerator=None) is this builder: eager INT8 kernels are not faster on CPU.
QUANTIZER = QuantizerSpec(dynamic_variant="dynamic", fixed=(("symmetric", True),),
                          keep_fp32=("none", "first_last", "measured"),
                          tuner="neural_compressor")
SPEC = BackendSpec(accelerator="compile", serves=("pytorch",), precisions=("int8",),
                   candidates=(Flavour("int8"),), quantizer=QUANTIZER,
                   variants=("", "dynamic"), preload=INDUCTOR)


def count_quantize_nodes(graph_module: torch.fx.GraphModule) -> int:
    """How many quantize ops a converted graph holds (0 means nothing was quantized)."""
    return sum(1 for n in graph_module.graph.nodes
               if n.op == "call_function" and "quantize_per" in str(n.target)
               and "dequantize" not in str(n.target))


class CompiledInt8Model(AcceleratedModel):
    """A PT2E-quantized graph compiled by inductor into int8 kernels."""

    accelerator = "compile"
    artifact = "model.pt2"

    def __init__(self, graph_module, example, dims, method, signature, output, thread_num):
        super().__init__(method, signature, output, thread_num)
        self.graph_module = graph_module
        self.example = [t.clone() for t in example]  # kept for re-export on save()
        self.dims = [list(d) for d in dims]  # which dims of each input may vary
        torch.compiler.reset()
        # Static shapes: inductor's int8 convolution lowering asserted on wrong strides when
        # a dynamic batch size recompiled. A new batch size recompiles (cached per shape).
        self.compiled = torch.compile(graph_module, dynamic=False)

    def run(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        with torch_threads(self.thread_num), torch.no_grad(), \
                inductor_config().patch(freezing=True), warnings.catch_warnings():
            # inductor's int8 lowering warns about its own tensor copy whenever it compiles
            # (the first call, a new batch size): nothing the caller did or can change
            warnings.filterwarnings("ignore", "To copy construct from a tensor",
                                    UserWarning)
            return list(self.compiled(*inputs))

    def save_artifacts(self, directory: str) -> dict:
        # the converted graph takes one argument per input (not *args like FlatModule)
        shapes = export_dynamic_shapes(self.dims)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(self.graph_module, tuple(self.example),
                                          dynamic_shapes=shapes, strict=False)
        torch.export.save(program, os.path.join(directory, "model.pt2"))
        return {"dims": self.dims}

    @classmethod
    def load_artifacts(cls, directory: str, meta: dict,
                       model: Optional[torch.nn.Module]) -> AcceleratedModel:
        import torchao.quantization.pt2e  # noqa: F401 - registers the quantize ops

        program = load_exported_program(os.path.join(directory, "model.pt2"))
        method, signature, output, threads = restore_common(meta)
        example = list(program.example_inputs[0]) if program.example_inputs else []
        return cls(program.module(), example, meta["extra"]["dims"], method, signature, output,
                   threads)


def unavailable_reason(method: Method) -> Optional[str]:
    return module_available("torchao.quantization.pt2e", INSTALL_HINT)


def build(method: Method, inputs: BuildInputs) -> CompiledInt8Model:
    from nano.runtimes.verify import check_conversion, flat_runner

    config = SPEC.quant_config(method)
    sample = tuple(inputs.export_sample())
    dynamic_shapes = (export_dynamic_shapes(inputs.dynamic_dims()),)  # FlatModule takes *inputs
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(inputs.flat_module(), sample,
                                       dynamic_shapes=dynamic_shapes, strict=True).module()
        check_conversion(flat_runner(exported, inputs), inputs, "fp32", "the torch.export graph")
    if config.keep_fp32 == "measured":
        held = inputs.require_held_out("keep_fp32='measured'")
        # X86InductorQuantizer's activations are unsigned with a zero point
        return keep_costliest(inputs.model, inputs.calib or [], held, False,
                              lambda layers: _quantize(method, inputs, copy.deepcopy(exported),
                                                       layers))
    layers = quantizable_layers(inputs.model) if config.keep_fp32 != "none" else []
    return _quantize(method, inputs, exported, sorted({layers[0], layers[-1]}) if layers else [])


def _quantize(method: Method, inputs: BuildInputs, exported: torch.fx.GraphModule,
              keep: list[str]) -> CompiledInt8Model:
    """PT2E INT8 of the ``exported`` graph, the layers named in ``keep`` left in fp32."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config)

    dynamic = method.variant == QUANTIZER.dynamic_variant
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantizer = X86InductorQuantizer()
        # reduce_range: 7-bit activations where the CPU has no int8 dot product, so that
        # oneDNN's u8 x s8 pairs fit 16 bits (inductor's frozen graph runs real INT8 kernels;
        # without freezing the same graph computes in fp32 and looks right)
        quantizer.set_global(get_default_x86_inductor_quantization_config(
            is_dynamic=dynamic, reduce_range=overflow_fix()))
        for name in keep:  # FlatModule holds the user's model as "module"
            quantizer.set_module_name_qconfig(f"module.{name}", None)
        try:
            prepared = prepare_pt2e(exported, quantizer)
        except Exception as e:  # torchao's pattern matcher fails on some graphs (BERT's GELU)
            raise RuntimeError(f"torchao's X86InductorQuantizer could not annotate this graph "
                               f"({type(e).__name__}: {e})") from e
        # dynamic INT8 calibrates nothing, but observers must see one forward pass or the
        # converted graph keeps placeholder scales
        for flat in (inputs.flat_calib() if inputs.calib or not dynamic
                     else [inputs.flat_sample()]):
            prepared(*flat)
        converted = convert_pt2e(prepared)
    return wrap_converted(converted, method, inputs)


def wrap_converted(converted: torch.fx.GraphModule, method: Method,
                   inputs: BuildInputs) -> CompiledInt8Model:
    """Compile a converted PT2E graph into a CompiledInt8Model, refusing one left fp32."""
    if count_quantize_nodes(converted) == 0:
        raise RuntimeError("PT2E quantization annotated nothing: the model would stay fp32")
    sample = inputs.export_sample()
    model = CompiledInt8Model(converted, sample, inputs.dynamic_dims(), method, inputs.signature,
                              inputs.output, inputs.thread_num)
    model.run(list(sample))  # compile now, not during the first user call
    model.int8_scheme = scheme()
    return model


MODEL_CLASS = CompiledInt8Model
