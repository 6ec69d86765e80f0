"""optimize()'s options as one frozen, validated value: defaults and checks in one place.

The facade builds a :class:`SearchOptions` from its keyword arguments (BigDL-Nano's
spellings included) before it reads any data, so a mistake is one line before the long
work starts; the search takes this one value.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from nano.errors import NanoValueError
from nano.runtimes.bigdl_forms import check_options
from nano.runtimes.methods import Method
from nano.runtimes.model import check_thread_num
from nano.runtimes.registry import select_methods
from nano.search.judgement import check_judgement_name
from nano.search.measure import check_metric, metric_style
from nano.search.report import check_output_file

SEARCH_MODES = ("default", "all", "grid")


@dataclass(frozen=True)
class SearchOptions:
    """How one optimize() searches (see ``InferenceOptimizer.optimize`` for each meaning).

    Validated on construction: every rule about a single option or a pair of them is
    here, so the search itself only reads the values.
    """

    metric: Optional[Callable] = None
    direction: str = "max"
    has_validation_data: bool = False  # whether validation_data was given (metric checks)
    thread_num: Optional[int] = None
    accelerator: Any = None  # a name or a tuple of names; None: every accelerator
    precision: Any = None
    includes: Optional[tuple[str, ...]] = None
    excludes: Optional[tuple[str, ...]] = None
    latency_sample_num: int = 100
    timeout_per_method: float = 300
    dynamic_axes: Union[bool, dict] = True
    latency_budget: float = 10.0
    memory_limit: Optional[int] = None
    early_stop_factor: Optional[float] = 3.0
    final_round: bool = True
    search_mode: str = "default"
    use_ipex: Optional[bool] = None
    output_filename: Optional[str] = None
    time_budget: Optional[float] = None
    latency_target: Optional[float] = None
    no_cache: bool = False
    cache_dir: Optional[str] = None
    accuracy: Optional[str] = None

    @staticmethod
    def from_call(bigdl_options: dict, **options: Any) -> "SearchOptions":
        """The options of one optimize() call: BigDL-Nano's no-op options accepted, its
        others refused with what to use instead, an unknown one a TypeError."""
        check_options("optimize", bigdl_options)
        for name in ("includes", "excludes"):
            if options.get(name) is not None:
                options[name] = tuple(options[name])
        if "original" in (options.get("excludes") or ()):  # BigDL-Nano ignored it too
            warnings.warn("optimize(): 'original' is always tried (it is the baseline for "
                          "speed and accuracy); excludes=['original'] is ignored", stacklevel=3)
            options["excludes"] = tuple(n for n in options["excludes"] if n != "original")
        return SearchOptions(**options)

    def __post_init__(self):
        check_judgement_name(self.accuracy)
        if self.accuracy is not None and self.metric is not None:
            raise NanoValueError("pass metric or accuracy, not both: accuracy names the "
                                 "judgement used without a metric")
        if self.search_mode not in SEARCH_MODES:
            raise NanoValueError(f"search_mode must be 'default', 'all' or 'grid', got "
                                 f"{self.search_mode!r}")
        if self.search_mode == "grid" and self.accelerator is None and self.precision is None \
                and self.use_ipex is None:
            raise NanoValueError("search_mode='grid' searches the methods matching "
                                 "accelerator=, precision= or use_ipex=; give at least one")
        if self.direction not in ("max", "min"):
            raise NanoValueError(f"direction must be 'max' or 'min', got {self.direction!r}")
        if self.metric is not None:
            check_metric(self.metric)
        if self.metric is not None and not self.has_validation_data \
                and metric_style(self.metric) == "pred":
            raise NanoValueError("a metric(pred, target) needs validation_data to be "
                                 "evaluated on")
        if self.output_filename is not None:
            check_output_file(self.output_filename, None, "output_filename")
        if self.latency_sample_num < 1 or self.timeout_per_method <= 0:
            raise NanoValueError("latency_sample_num must be >= 1 and timeout_per_method > 0")
        check_thread_num(self.thread_num)
        for name in ("time_budget", "latency_target"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise NanoValueError(f"{name} must be a number of seconds above 0, got "
                                     f"{value!r}")
        self.methods()  # a typo in includes/excludes/accelerator/precision fails here

    @property
    def exhaustive(self) -> bool:
        """Every allowed method is tried ("all", "grid"), none left out as unable to win."""
        return self.search_mode != "default"

    def methods(self) -> list[Method]:
        """The candidates these options allow, in the method table's order (the original
        always first: it is the baseline)."""
        methods = select_methods(self.includes, self.excludes,
                                 False if self.accelerator is None else self.accelerator,
                                 self.precision)
        if self.use_ipex is not None:
            methods = [m for m in methods
                       if m.use_ipex == bool(self.use_ipex) or m.name == "original"]
        return methods
