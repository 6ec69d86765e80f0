"""The accuracy criterion: how much a metric may drop against the original model.

One rule for ``optimize()``/``get_best_model()`` and ``quantize()``. With a metric and
no criterion given, DEFAULT_RELATIVE_DROP applies: a faster model that loses more than
1% of the original's score is never picked silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from nano.errors import NanoValueError

DEFAULT_RELATIVE_DROP = 0.01


@dataclass(frozen=True)
class Criterion:
    """How much accuracy may drop: ``kind`` "relative" (0.01 = 1% of the original) or
    "absolute" (0.01 = one point of a 0-1 metric); ``higher_is_better`` sets the direction."""

    kind: str
    value: float
    higher_is_better: bool = True

    @staticmethod
    def parse(criterion: Any, higher_is_better: bool = True) -> "Criterion":
        """From a number (relative drop, 0 to 1), a dict {"relative"|"absolute": x,
        "higher_is_better": b}, or None (the default relative drop)."""
        if criterion is None:
            return Criterion("relative", DEFAULT_RELATIVE_DROP, higher_is_better)
        if isinstance(criterion, (int, float)) and not isinstance(criterion, bool):
            kind, value, higher = "relative", float(criterion), higher_is_better
        elif isinstance(criterion, dict):
            extra = set(criterion) - {"relative", "absolute", "higher_is_better"}
            kinds = [k for k in ("relative", "absolute") if k in criterion]
            if extra or len(kinds) != 1:
                raise NanoValueError("accuracy_criterion must be a number (relative drop) or a "
                                     "dict with exactly one of 'relative'/'absolute' and "
                                     f"optionally 'higher_is_better'; got {criterion!r}")
            kind, value = kinds[0], criterion[kinds[0]]
            higher = bool(criterion.get("higher_is_better", higher_is_better))
        else:
            raise NanoValueError(f"accuracy_criterion must be a number or a dict, got "
                                 f"{criterion!r}")
        if not isinstance(value, (int, float)) or value < 0 or (kind == "relative" and value > 1):
            raise NanoValueError(f"accuracy_criterion {kind} drop must be "
                                 f"{'between 0 and 1' if kind == 'relative' else '>= 0'}, got "
                                 f"{value!r}")
        return Criterion(kind, float(value), higher)

    def drop(self, baseline: float, value: float) -> float:
        """The drop in this criterion's units (negative: the candidate is better)."""
        raw = (baseline - value) if self.higher_is_better else (value - baseline)
        return raw / max(abs(baseline), 1e-12) if self.kind == "relative" else raw

    def passes(self, baseline: float, value: float) -> bool:
        return self.drop(baseline, value) <= self.value + 1e-12


def output_error_limit(accuracy_criterion: Optional[float], default: float) -> float:
    """Without a metric, the criterion is the largest error of each output's judgement
    (``nano.search.judgement``): 1 - top-1 agreement, 1 - smallest cosine, or the
    relative L2 error."""
    if accuracy_criterion is None:
        return default
    if isinstance(accuracy_criterion, bool) or not isinstance(accuracy_criterion, (int, float)) \
            or not 0 <= accuracy_criterion <= 1:
        raise NanoValueError(f"without a metric, accuracy_criterion is the largest error of "
                             f"each output's judgement allowed (1 - top-1 agreement, "
                             f"1 - smallest cosine, or the relative L2 error): a number "
                             f"between 0 and 1, got "
                             f"{accuracy_criterion!r}")
    return float(accuracy_criterion)
