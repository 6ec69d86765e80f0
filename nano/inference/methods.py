"""Inference methods: frozen, validated descriptions of how to run a model.

A :class:`Method` is (accelerator, precision, channels_last, use_ipex, options).
Names follow BigDL-Nano (``jit_bf16``, ``openvino_fp32`` ...); ``METHODS`` is
the table optimize() searches. Unknown names, accelerators, precisions or
options are errors that list the valid values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

from nano.errors import NanoValueError

ACCELERATORS = ("pytorch", "jit", "compile", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# spellings users bring from BigDL-Nano and torch
_PRECISION_ALIASES = {"fp32": "fp32", "float32": "fp32", "32": "fp32", "bf16": "bf16",
                      "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "half": "fp16",
                      "int8": "int8"}
_ACCELERATOR_ALIASES = {None: "pytorch", "pytorch": "pytorch", "torch": "pytorch",
                        "jit": "jit", "torchscript": "jit", "compile": "compile",
                        "inductor": "compile", "onnxruntime": "onnxruntime", "ort": "onnxruntime",
                        "onnx": "onnxruntime", "openvino": "openvino", "ov": "openvino"}


def _choices(values: Iterable) -> str:
    return ", ".join(repr(v) for v in values)


def normalize_accelerator(value) -> str:
    """Map ``None``/"pytorch"/"jit"/... to a canonical accelerator name, or raise listing them."""
    key = value.lower() if isinstance(value, str) else value
    if key not in _ACCELERATOR_ALIASES:
        raise NanoValueError(f"unknown accelerator {value!r}; valid: None (plain PyTorch), "
                             f"{_choices(ACCELERATORS)}")
    return _ACCELERATOR_ALIASES[key]


def normalize_precision(value) -> str:
    """Map "fp32"/"bf16"/"bfloat16"/32/... to a canonical precision, or raise listing them."""
    key = str(value).lower()
    if key not in _PRECISION_ALIASES:
        raise NanoValueError(f"unknown precision {value!r}; valid: {_choices(PRECISIONS)}")
    return _PRECISION_ALIASES[key]


@dataclass(frozen=True)
class Method:
    """How to build one accelerated model. Options are checked by the backend that builds it."""

    accelerator: str
    precision: str = "fp32"
    channels_last: bool = False
    use_ipex: bool = False
    variant: str = ""  # a runtime's flavour, e.g. ONNX Runtime INT8 "qlinear" / "integer"
    options: tuple = field(default_factory=tuple)  # sorted (key, value) pairs, hashable

    def __post_init__(self):
        if self.accelerator not in ACCELERATORS:
            raise NanoValueError(f"unknown accelerator {self.accelerator!r}; valid: "
                                 f"{_choices(ACCELERATORS)}")
        if self.precision not in PRECISIONS:
            raise NanoValueError(f"unknown precision {self.precision!r}; valid: "
                                 f"{_choices(PRECISIONS)}")

    @property
    def name(self) -> str:
        """The BigDL-Nano style name, e.g. ``jit_bf16_ipex_channels_last``."""
        parts = []
        if self.accelerator != "pytorch":
            parts.append(self.accelerator)
        if not (self.accelerator == "pytorch" and self.precision == "fp32"
                and not self.use_ipex and not self.channels_last):
            parts.append(self.precision)
        name = "_".join(parts) or "original"
        if self.variant:
            name += "_" + self.variant
        if self.use_ipex:
            name += "_ipex"
        if self.channels_last:
            name += "_channels_last"
        return name

    @property
    def option_dict(self) -> dict:
        return dict(self.options)

    def to_json(self) -> dict:
        return {"accelerator": self.accelerator, "precision": self.precision,
                "channels_last": self.channels_last, "use_ipex": self.use_ipex,
                "variant": self.variant, "options": dict(self.options)}

    @staticmethod
    def from_json(data: dict) -> "Method":
        return Method(data["accelerator"], data["precision"], bool(data["channels_last"]),
                      bool(data["use_ipex"]), data.get("variant", ""),
                      tuple(sorted((k, freeze(v)) for k, v in data.get("options", {}).items())))

    def with_options(self, **options) -> "Method":
        """This method with more options (None values are left out)."""
        merged = dict(self.options)
        merged.update({k: freeze(v) for k, v in options.items() if v is not None})
        return Method(self.accelerator, self.precision, self.channels_last, self.use_ipex,
                      self.variant, tuple(sorted(merged.items())))


# Options a runtime reads when it builds or loads a model (the rest are INT8 settings).
RUNTIME_OPTIONS = ("jit_method", "jit_strict", "openvino_config", "session_options")


def freeze(value):
    """A hashable form of an option value: dicts become sorted (key, value) pairs."""
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def _m(acc, prec="fp32", cl=False, ipex=False) -> Method:
    return Method(acc, prec, cl, ipex)


# The fp32/bf16 candidates optimize() tries (INT8 ones are added by nano.quantize).
_CANDIDATES = [
    _m("pytorch"), _m("pytorch", cl=True), _m("pytorch", ipex=True),
    _m("pytorch", "bf16"), _m("pytorch", "bf16", cl=True), _m("pytorch", "bf16", ipex=True),
    _m("jit"), _m("jit", cl=True), _m("jit", "bf16"), _m("jit", "bf16", cl=True),
    # no jit_*_ipex candidates: the IPEX backend does not trace yet, so they would only
    # repeat fp32_ipex/bf16_ipex under another name until an IPEX environment tests them
    _m("compile"), _m("compile", "bf16"), _m("compile", "bf16", cl=True),
    _m("onnxruntime"),
    _m("openvino"), _m("openvino", "bf16"), _m("openvino", "fp16"),
]
# INT8 candidates, built by nano.quantize; optimize() tries them when it has calibration data.
INT8_CANDIDATES = [
    Method("compile", "int8"),
    Method("onnxruntime", "int8", variant="qdq"),
    Method("onnxruntime", "int8", variant="qlinear"),
    Method("onnxruntime", "int8", variant="integer"),
    Method("openvino", "int8"),
]
_CANDIDATES += INT8_CANDIDATES
METHODS: dict = {m.name: m for m in _CANDIDATES}


def get_method(name: str) -> Method:
    """Look a method up by name, or raise listing the valid names."""
    if name not in METHODS:
        raise NanoValueError(f"unknown method {name!r}; valid: {_choices(sorted(METHODS))}")
    return METHODS[name]


def select_methods(includes: Optional[Iterable[str]] = None,
                   excludes: Optional[Iterable[str]] = None,
                   accelerator=False, precision=None) -> list[Method]:
    """The candidate list after includes/excludes and accelerator/precision filters.

    ``accelerator=False`` means no accelerator filter (``None`` means plain PyTorch).
    """
    for group in (includes or []), (excludes or []):
        for name in group:
            get_method(name)  # raises on typos
    chosen = [METHODS[n] for n in includes] if includes else list(METHODS.values())
    if "original" not in [m.name for m in chosen]:
        chosen.insert(0, METHODS["original"])  # the baseline everything is compared with
    excluded = set(excludes or [])
    if "original" in excluded:
        raise NanoValueError("'original' cannot be excluded: it is the baseline for speed and "
                             "accuracy")
    chosen = [m for m in chosen if m.name not in excluded]
    if accelerator is not False:
        accs = accelerator if isinstance(accelerator, (list, tuple)) else [accelerator]
        wanted = {normalize_accelerator(a) for a in accs}
        chosen = [m for m in chosen if m.accelerator in wanted or m.name == "original"]
    if precision is not None:
        precs = precision if isinstance(precision, (list, tuple)) else [precision]
        wanted = {normalize_precision(p) for p in precs}
        chosen = [m for m in chosen if m.precision in wanted or m.name == "original"]
    return chosen
