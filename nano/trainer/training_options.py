"""The validated training options that ``Trainer``, ``TorchNano`` and ``@nano`` share.

``training_options`` turns the user's keyword arguments into one frozen
:class:`TrainingOptions`; every misspelt or impossible value fails here with a
message naming the fix, before any process is started.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

from nano.launcher.schedule import SchedulingError, schedule_instances
from nano.launcher.topology import Topology, read_topology
from nano.trainer.auto_lr import AutoLR

BACKENDS = ("subprocess", "spawn")
_PRECISIONS = {32: "32-true", "32": "32-true", "32-true": "32-true",
               "bf16": "bf16-mixed", "bf16-mixed": "bf16-mixed"}


@dataclass(frozen=True)
class TrainingOptions:
    """How to train: process count and cores, precision, memory format, lr scaling."""

    num_processes: int = 1
    precision: str = "32-true"          # a Lightning precision string
    channels_last: bool = False
    use_ipex: bool = False
    cpu_sets: tuple = ()                 # one tuple of CPU ids per process
    auto_lr: Optional[AutoLR] = AutoLR()
    backend: str = "subprocess"

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16-mixed"


def normalize_precision(precision: Any, topology: Topology) -> str:
    """Map 32/"bf16"/Lightning spellings to a Lightning precision. bf16 on a CPU without it
    runs emulated, as BigDL-Nano ran it, with a one-line warning."""
    key = precision if isinstance(precision, (int, str)) else None
    if key not in _PRECISIONS:
        raise ValueError(f"precision must be 32 or 'bf16' (also '32-true', 'bf16-mixed'), "
                         f"got {precision!r}")
    value = _PRECISIONS[key]
    if value == "bf16-mixed" and not topology.has_bf16:
        warnings.warn(f"{topology.capability.emulation_note('bf16')}; training runs in emulated "
                      f"bf16 as asked (precision=32 is faster here)", RuntimeWarning,
                      stacklevel=3)
    return value


def _auto_lr(value: Union[bool, dict, AutoLR]) -> Optional[AutoLR]:
    if value is True:  # BigDL-Nano's form, with its behaviour (see auto_lr.VisibleScaling)
        return AutoLR(visible=True, warmup_fraction=0.1)
    if value is False or value is None:
        return None
    if isinstance(value, AutoLR):
        return value
    if isinstance(value, dict):
        return AutoLR.from_dict(value)
    raise ValueError(f"auto_lr must be True, False, nano.trainer.AutoLR(...) or "
                     f"{{'warmup_epochs': n}}, got {value!r}")


def _cpu_sets(num_processes: int, cpu_for_each_process: Optional[Sequence[Sequence[int]]],
              topology: Topology) -> tuple:
    if cpu_for_each_process is not None:
        sets = [tuple(sorted(int(c) for c in s)) for s in cpu_for_each_process]
        if len(sets) != num_processes:
            raise ValueError(f"cpu_for_each_process has {len(sets)} core lists but num_processes="
                             f"{num_processes}; give exactly one list of CPU ids per process")
        usable = set(topology.usable)
        for i, s in enumerate(sets):
            if not s or not set(s) <= usable:
                raise ValueError(f"cpu_for_each_process[{i}] = {list(s)} is empty or names CPUs "
                                 f"this process may not use (usable: {sorted(usable)})")
        return tuple(sets)
    try:
        return tuple(tuple(s) for s in schedule_instances(topology, num_processes))
    except SchedulingError:
        cores = len(topology.usable_cores())
        warnings.warn(f"num_processes={num_processes} but only {cores} usable physical cores: "
                      f"processes will share cores and slow each other down", stacklevel=3)
        return tuple(tuple(s) for s in
                     schedule_instances(topology, num_processes, allow_oversubscribe=True))


def training_options(num_processes: int = 1, precision: Union[int, str] = 32,
                     channels_last: bool = False, use_ipex: bool = False,
                     cpu_for_each_process: Optional[Sequence[Sequence[int]]] = None,
                     auto_lr: Union[bool, dict, AutoLR] = True, distributed_backend: str = "subprocess",
                     topology: Optional[Topology] = None, place: bool = True) -> TrainingOptions:
    """Validate the shared keyword options and return them as one :class:`TrainingOptions`.

    ``place=False`` skips splitting the cores (a rank that a launcher already placed).
    """
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"num_processes must be a whole number >= 1, got {num_processes!r}")
    if distributed_backend not in BACKENDS:
        raise ValueError(f"distributed_backend must be one of {BACKENDS}, got "
                         f"{distributed_backend!r}")
    for name, value in (("channels_last", channels_last), ("use_ipex", use_ipex)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    topology = topology or read_topology()
    return TrainingOptions(
        num_processes=num_processes,
        precision=normalize_precision(precision, topology),
        channels_last=channels_last,
        use_ipex=use_ipex,
        cpu_sets=_cpu_sets(num_processes, cpu_for_each_process, topology) if place else (),
        auto_lr=_auto_lr(auto_lr),
        backend=distributed_backend,
    )
