"""Quantization settings: a frozen, validated dataclass carried in a Method's options.

An unknown option is a TypeError (the dataclass rejects it), so a typo cannot
silently fall back to a default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Iterable

from nano.errors import NanoTypeError, NanoValueError

# sensitive: first/last + norms and softmax; measured: the layers whose INT8 costs the most
# output accuracy on held-out data, as many as the judgement needs (optimize()'s INT8
# ladder, which has that data)
KEEP_FP32 = ("none", "first_last", "sensitive", "measured")


@dataclass(frozen=True)
class QuantConfig:
    """One INT8 configuration to try: the knobs more than one quantizer turns.

    ``symmetric``: symmetric activation ranges (asymmetric fits skewed ranges such
    as post-ReLU better); ``keep_fp32``: which layers stay in floating point;
    ``more_calibration``: calibrated on up to MORE_CALIBRATION_BATCHES of the training
    data rather than CALIBRATION_BATCHES (a step of optimize()'s INT8 ladder, which
    chooses the data; every quantizer reads what it is given).
    Weights are always per channel, and static or dynamic is the method's variant
    (``onnxruntime_int8_integer``, ``compile_int8_dynamic``), not a setting.
    """

    symmetric: bool = True
    keep_fp32: str = "none"
    more_calibration: bool = False  # the INT8 ladder's: calibrated on the batches past the 16

    def __post_init__(self):
        if self.keep_fp32 not in KEEP_FP32:
            raise NanoValueError(f"keep_fp32 must be one of {KEEP_FP32}, got {self.keep_fp32!r}")

    def label(self) -> str:
        """A short name for a non-default configuration ("" for the default), as method
        names show it: ``openvino_int8+asym_first_last``."""
        parts = ([] if self.symmetric else ["asym"]) + (
            ["more_calib"] if self.more_calibration else [])
        if self.keep_fp32 != "none":
            parts.append(self.keep_fp32)
        return "_".join(parts)

    def options(self) -> tuple:
        """As hashable Method options (only the non-default fields, sorted)."""
        defaults = QuantConfig()
        return tuple(sorted((k, v) for k, v in asdict(self).items()
                            if getattr(defaults, k) != v))

    @staticmethod
    def among(options: dict) -> "QuantConfig":
        """The INT8 settings among a Method's options, the others (a runtime's) left aside."""
        known = {f.name for f in fields(QuantConfig)}
        return QuantConfig(**{k: v for k, v in options.items() if k in known})

    @staticmethod
    def from_options(options: dict, runtime: Iterable[str] = ()) -> "QuantConfig":
        """The INT8 settings among a Method's options; an option neither a setting nor one
        of ``runtime`` (the options the runtime reads) is an error."""
        options = {k: v for k, v in options.items() if k not in set(runtime)}
        known = {f.name for f in fields(QuantConfig)}
        unknown = set(options) - known
        if unknown:
            raise NanoTypeError(f"unknown quantization option(s) {sorted(unknown)}; valid: "
                                f"{sorted(known)}")
        return QuantConfig(**options)

    def describe(self) -> str:
        parts = ["symmetric" if self.symmetric else "asymmetric"]
        if self.more_calibration:
            parts.append("calibrated on every training batch read")
        if self.keep_fp32 == "measured":
            parts.append("fp32 kept: the layers costing the most accuracy")
        elif self.keep_fp32 != "none":
            parts.append(f"fp32 kept: {self.keep_fp32.replace('_', '/')}")
        return ", ".join(parts)


def trial_configs(dynamic: bool = False) -> list[QuantConfig]:
    """The configurations the accuracy-aware search tries, cheapest-to-accuracy order."""
    if dynamic:  # activation ranges are computed at run time: only the layers kept vary
        return [QuantConfig(), QuantConfig(keep_fp32="first_last")]
    return [QuantConfig(), QuantConfig(symmetric=False), QuantConfig(keep_fp32="first_last"),
            QuantConfig(symmetric=False, keep_fp32="first_last"),
            QuantConfig(symmetric=False, keep_fp32="sensitive")]
