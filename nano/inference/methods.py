"""Inference methods: frozen, validated descriptions of how to run a model.

A :class:`Method` is (accelerator, precision, channels_last, use_ipex, options).
Names follow BigDL-Nano (``jit_bf16``, ``openvino_fp32`` ...); ``method_table()``
is what optimize() searches, read from the backends' specs. Unknown names, accelerators, precisions or
options are errors that list the valid values.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from nano.errors import NanoValueError

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# spellings users bring from BigDL-Nano and torch
_PRECISION_ALIASES = {"fp32": "fp32", "float32": "fp32", "32": "fp32", "bf16": "bf16",
                      "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "half": "fp16",
                      "int8": "int8"}


def _choices(values: Iterable) -> str:
    return ", ".join(repr(v) for v in values)


def accelerators() -> tuple[str, ...]:
    """The registered accelerator names (read from the backend specs)."""
    from nano.inference.backends import accelerators as registered

    return registered()


def normalize_accelerator(value: Optional[str]) -> str:
    """Map ``None``/"pytorch"/"jit"/... to a canonical accelerator name, or raise listing them."""
    from nano.inference.backends import accelerator_aliases

    if value is None:
        return "pytorch"
    aliases = accelerator_aliases()
    key = value.lower() if isinstance(value, str) else value
    if key not in aliases:
        raise NanoValueError(f"unknown accelerator {value!r}; valid: None (plain PyTorch), "
                             f"{_choices(accelerators())}")
    return aliases[key]


def normalize_precision(value: Any) -> str:
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
        if self.accelerator not in accelerators():
            raise NanoValueError(f"unknown accelerator {self.accelerator!r}; valid: "
                                 f"{_choices(accelerators())}")
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
        if self.precision == "int8" and self.options:
            from nano.inference.quant_config import QuantConfig

            label = QuantConfig.from_options(self.option_dict).label()
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


def runtime_options() -> tuple[str, ...]:
    """Options a runtime reads when it builds or loads a model (the rest are INT8 settings)."""
    from nano.inference.backends import specs

    return tuple(dict.fromkeys(o for s in specs() for o in s.options))


def freeze(value: Any) -> Any:
    """A hashable form of an option value: dicts become sorted (key, value) pairs."""
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


@functools.lru_cache(maxsize=None)
def method_table() -> dict[str, Method]:
    """Every candidate optimize() knows, by name, in the order it tries them: each backend's
    ``SPEC.candidates`` (INT8 ones need calibration data)."""
    from nano.inference.backends import specs

    table: dict[str, Method] = {}
    for spec in specs():
        for f in spec.candidates:
            method = Method(spec.accelerator, f.precision, f.channels_last, spec.use_ipex,
                            f.variant)
            if method.name in table:
                raise AssertionError(f"two backends offer {method.name}")
            table[method.name] = method
    return table


def get_method(name: str) -> Method:
    """Look a method up by name, or raise listing the valid names."""
    table = method_table()
    if name not in table:
        raise NanoValueError(f"unknown method {name!r}; valid: {_choices(sorted(table))}")
    return table[name]


def select_methods(includes: Optional[Iterable[str]] = None,
                   excludes: Optional[Iterable[str]] = None,
                   accelerator: Any = False, precision: Any = None) -> list[Method]:
    """The candidate list after includes/excludes and accelerator/precision filters.

    ``accelerator=False`` means no accelerator filter (``None`` means plain PyTorch).
    """
    for group in (includes or []), (excludes or []):
        for name in group:
            get_method(name)  # raises on typos
    table = method_table()
    chosen = [table[n] for n in includes] if includes else list(table.values())
    if "original" not in [m.name for m in chosen]:
        chosen.insert(0, table["original"])  # the baseline everything is compared with
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
