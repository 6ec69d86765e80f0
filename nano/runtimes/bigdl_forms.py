"""BigDL-Nano's call forms: argument orders and options Nano takes from BigDL-Nano 2.4 code.

Each option is either given its Nano meaning, accepted as a documented no-op, or
refused with a message that names what to do instead -- never silently ignored.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

import torch

from nano.errors import NanoTypeError, NanoValueError

# Options BigDL-Nano took that change nothing in Nano (its own behaviour covers them).
NO_OP_OPTIONS = {
    "logging": "Nano's conversions are quiet either way",
    "simplification": "Nano's ONNX export is optimized by the exporter itself (no onnxsim)",
    "strict_check": "Nano always checks a converted model against the original",
}
# Options BigDL-Nano took that Nano refuses, with what to do instead.
REFUSED_OPTIONS = {
    "inplace": "Nano never modifies your model; drop the option",
    "weights_prepack": "an IPEX tuning knob Nano does not expose; drop the option",
    "enable_onednn": "oneDNN graph fusion is not used; jit_* methods use TorchScript's "
                     "default fuser, drop the option",
    "q_config": "PyTorch INT8 is PT2E with X86InductorQuantizer; tune accuracy with "
                "metric= and accuracy_criterion=",
    "conf": "Neural Compressor YAML files are not read; pass accuracy_criterion=, "
            "max_trials= and timeout=",
    "export_kwargs": "the exporter's arguments are Nano's; use dynamic_axes= for shapes",
}
TUNING_STRATEGIES = ("basic", "bayesian", "mse", "mse_v2", "hawq_v2", "sigopt", "tpe",
                     "exhaustive", "random", "conservative")


def check_options(function: str, options: dict) -> None:
    """Accept BigDL-Nano's no-op options; refuse the others with what to do instead."""
    for name, value in options.items():
        if name in NO_OP_OPTIONS:
            continue
        if name in REFUSED_OPTIONS:
            if name == "inplace" and not value:
                continue
            raise NanoValueError(f"{function}(): {name}= is not supported: "
                                 f"{REFUSED_OPTIONS[name]}")
        raise NanoTypeError(f"{function}() got an unknown option {name!r}")


def check_device(device: Optional[str]) -> None:
    """Nano runs on the CPU; BigDL-Nano's OpenVINO could target GPU/VPUX."""
    if device is not None and str(device).upper() != "CPU":
        raise NanoValueError(f"device={device!r}: Nano runs models on the CPU only "
                             f"(device='CPU')")


def sample_and_accelerator(input_sample: Any, accelerator: Any) -> tuple[Any, Any]:
    """``trace(model, input_sample, accelerator)`` is BigDL-Nano's order; Nano's earlier
    ``trace(model, accelerator, input_sample)`` is recognised by the string in second place."""
    if isinstance(input_sample, str) and not isinstance(accelerator, str):
        return accelerator, input_sample
    if accelerator is not None and not isinstance(accelerator, str):
        raise NanoTypeError(f"accelerator must be a string such as 'onnxruntime' or None, got "
                            f"a {type(accelerator).__name__}")
    return input_sample, accelerator


def with_kwarg_inputs(input_sample: Any, example_kwarg_inputs: Optional[dict]) -> Any:
    """BigDL's ``example_kwarg_inputs`` (keyword inputs) joined with ``input_sample``."""
    if example_kwarg_inputs is None:
        return input_sample
    if not isinstance(example_kwarg_inputs, dict):
        raise NanoTypeError(f"example_kwarg_inputs must be a dict of keyword inputs, got "
                            f"{type(example_kwarg_inputs).__name__}")
    if input_sample is None:
        return (), dict(example_kwarg_inputs)
    if isinstance(input_sample, torch.Tensor):
        return (input_sample,), dict(example_kwarg_inputs)
    if isinstance(input_sample, (tuple, list)):
        return tuple(input_sample), dict(example_kwarg_inputs)
    raise NanoTypeError("with example_kwarg_inputs, input_sample must be a tensor or a tuple of "
                        "positional inputs")


def runtime_options(accelerator: str, jit_method: Optional[str] = None,
                    jit_strict: Optional[bool] = None, openvino_config: Optional[dict] = None,
                    onnxruntime_session_options: Any = None) -> dict:
    """The runtime options of a trace/quantize call as Method options, each checked against
    the backends that read it (their specs' ``options``)."""
    options: dict = {}
    if jit_method is not None or jit_strict is not None:
        _check_reader("jit_method/jit_strict", "jit_method", accelerator)
        from nano.runtimes.backends.torchscript import JIT_METHODS

        if jit_method not in JIT_METHODS:
            raise NanoValueError(f"jit_method must be 'trace', 'script' or None, got "
                                 f"{jit_method!r}")
        options.update(jit_method=jit_method, jit_strict=jit_strict)
    if openvino_config is not None:
        _check_reader("openvino_config", "openvino_config", accelerator)
        if not isinstance(openvino_config, dict):
            raise NanoTypeError("openvino_config must be a dict of compile_model properties")
        options["openvino_config"] = openvino_config
    if onnxruntime_session_options is not None:
        _check_reader("onnxruntime_session_options", "session_options", accelerator)
        from nano.runtimes.backends.onnxruntime_fp32 import session_options_dict

        options["session_options"] = session_options_dict(onnxruntime_session_options)
    return options


def _check_reader(argument: str, option: str, accelerator: str) -> None:
    """Refuse an option no backend of ``accelerator`` reads, naming those that do."""
    from nano.runtimes.registry import specs

    readers = list(dict.fromkeys(s.accelerator for s in specs() if option in s.options))
    if accelerator not in readers:
        raise NanoValueError(f"{argument} applies to accelerator="
                             f"{' or '.join(repr(r) for r in readers)}, not {accelerator!r}")


def eval_func_metric(eval_func: Callable[[Any], float]) -> Callable[..., float]:
    """BigDL's ``eval_func(model) -> float`` as a Nano ``metric(model, data)``."""
    if not callable(eval_func):
        raise NanoTypeError("eval_func must be callable: eval_func(model) -> float")

    def metric(model, data=None):
        return eval_func(model)

    return metric


def check_tuning_strategy(strategy: Optional[str]) -> None:
    """Accept Neural Compressor's strategy names with a note: Nano's search is its own."""
    if strategy is None:
        return
    if strategy not in TUNING_STRATEGIES:
        raise NanoValueError(f"unknown tuning_strategy {strategy!r}; BigDL-Nano's were "
                             f"{', '.join(TUNING_STRATEGIES)}")
    warnings.warn(f"tuning_strategy={strategy!r} is accepted for BigDL-Nano code; Nano tries its "
                  f"own list of INT8 configurations and keeps the fastest that meets "
                  f"accuracy_criterion", stacklevel=3)
