"""Inference methods: frozen, validated descriptions of how to run a model.

A :class:`Method` is (accelerator, precision, channels_last, use_ipex, options).
Names follow BigDL-Nano (``jit_bf16``, ``openvino_fp32`` ...); ``method_table()``
(in ``nano.runtimes.registry``) is what optimize() searches, read from the backends' specs.
Unknown precisions are errors that list the valid values; the registry checks accelerators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from nano.errors import NanoValueError
from nano.runtimes.quant_config import QuantConfig

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# spellings users bring from BigDL-Nano and torch
_PRECISION_ALIASES = {"fp32": "fp32", "float32": "fp32", "32": "fp32", "bf16": "bf16",
                      "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "half": "fp16",
                      "int8": "int8"}


def choices(values: Iterable) -> str:
    """Values as an error message lists them: 'a', 'b'."""
    return ", ".join(repr(v) for v in values)


def normalize_precision(value: Any) -> str:
    """Map "fp32"/"bf16"/"bfloat16"/32/... to a canonical precision, or raise listing them."""
    key = str(value).lower()
    if key not in _PRECISION_ALIASES:
        raise NanoValueError(f"unknown precision {value!r}; valid: {choices(PRECISIONS)}")
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
        # the accelerator is the registry's to check (it knows the backends; this value does not)
        if self.precision not in PRECISIONS:
            raise NanoValueError(f"unknown precision {self.precision!r}; valid: "
                                 f"{choices(PRECISIONS)}")

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
        if self.precision == "int8" and self.options:
            label = QuantConfig.among(self.option_dict).label()
            if label:  # one of optimize()'s INT8 ladder configurations
                name += "+" + label
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

    def with_options(self, **options: Any) -> "Method":
        """This method with more options (None values are left out)."""
        merged = dict(self.options)
        merged.update({k: freeze(v) for k, v in options.items() if v is not None})
        return Method(self.accelerator, self.precision, self.channels_last, self.use_ipex,
                      self.variant, tuple(sorted(merged.items())))


def freeze(value: Any) -> Any:
    """A hashable form of an option value: dicts become sorted (key, value) pairs."""
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value
