"""Build the tuned process environment: threads, OpenMP binding, allocator preload.

``plan_environment`` is pure: topology + options + the current environment in,
an :class:`EnvPlan` out (each value with the reason it was chosen). The plan
records the user's earlier values in ``NANO_SAVED_ENV`` so that
``plan_restore`` can put back exactly what was there.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Mapping, Optional

from nano.launcher.allocators import LIBRARIES, find_library, search_dirs
from nano.launcher.hugepages import GLIBC_HUGETLB, JEMALLOC_THP, HugePages, append_tunable
from nano.launcher.topology import Topology

SAVED_VAR = "NANO_SAVED_ENV"
ALLOCATORS = ("auto", "tcmalloc", "jemalloc", "default")
OPENMP_RUNTIMES = ("gnu", "intel")
# Measured (benchmarks/launcher.py, benchmarks/generation.py): where the kernel gives huge
# pages to everyone, tcmalloc beat jemalloc; where THP is madvise-only, jemalloc can be told
# to ask for them and tcmalloc cannot, and jemalloc then won (ResNet-18 a little, a decode
# step of an INT4 language model by 12%).
AUTO_ORDER = ("tcmalloc", "jemalloc")
AUTO_ORDER_ASKING_FOR_HUGE_PAGES = ("jemalloc", "tcmalloc")
JEMALLOC_CONF = ("oversize_threshold:1,background_thread:true,metadata_thp:auto,"
                 "dirty_decay_ms:-1,muzzy_decay_ms:-1")


@dataclass
class EnvPlan:
    """Variables to set, why, what was there before, and anything the user should know."""

    values: dict = field(default_factory=dict)
    reasons: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    allocator: Optional[str] = None  # path of the preloaded allocator, if any
    # variables an earlier init set that this plan does not: name -> original value (None: unset)
    restores: dict = field(default_factory=dict)

    def set(self, name: str, value: str, reason: str) -> None:
        self.values[name] = value
        self.reasons[name] = reason


def original_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The environment as it was before any earlier ``bigdl-nano-init`` (so init is idempotent)."""
    base = dict(env)
    saved = _read_saved(env)
    for name, value in saved.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    base.pop(SAVED_VAR, None)
    return base


def _read_saved(env: Mapping[str, str]) -> dict:
    text = env.get(SAVED_VAR)
    if not text:
        return {}
    try:
        saved = json.loads(text)
    except ValueError:
        return {}
    return saved if isinstance(saved, dict) else {}


def _append_path_list(existing: str, item: str) -> str:
    parts = [p for p in existing.split(":") if p]
    return ":".join(parts if item in parts else parts + [item])


def _pick_allocator(allocator: str, dirs: list[str], plan: EnvPlan,
                    huge_pages: HugePages) -> Optional[str]:
    if allocator == "default":
        return None
    auto = AUTO_ORDER_ASKING_FOR_HUGE_PAGES if huge_pages.needs_asking else AUTO_ORDER
    wanted = auto if allocator == "auto" else (allocator,)
    for key in wanted:
        path = find_library(key, dirs)
        if path:
            return path
    hints = "; ".join(f"{LIBRARIES[k].name}: {LIBRARIES[k].install_hint}" for k in wanted)
    plan.warnings.append(
        f"no {' or '.join(wanted)} library found (looked for "
        f"{', '.join(f for k in wanted for f in LIBRARIES[k].filenames)} in {', '.join(dirs)}); "
        f"keeping the default allocator. To install: {hints}")
    return None


def plan_environment(topology: Topology, env: Mapping[str, str], allocator: str = "auto",
                     openmp: str = "gnu", threads: Optional[int] = None,
                     library_dirs: Optional[list] = None,
                     huge_pages: Optional[HugePages] = None) -> EnvPlan:
    """Decide the tuned environment for one process using ``topology``'s usable cores.

    ``library_dirs`` overrides where allocator libraries are looked for, ``huge_pages``
    the machine's transparent huge page facts (read from the system when None).
    """
    if allocator not in ALLOCATORS:
        raise ValueError(f"allocator must be one of {', '.join(ALLOCATORS)}, got {allocator!r}")
    if openmp not in OPENMP_RUNTIMES:
        raise ValueError(f"openmp must be one of {', '.join(OPENMP_RUNTIMES)}, got {openmp!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    base = original_environment(env)
    dirs = search_dirs(base) if library_dirs is None else list(library_dirs)
    plan = EnvPlan()

    if threads is None:
        threads = topology.thread_budget
        why = (f"usable physical cores ({len(topology.usable_cores())})"
               + (f" capped by the cgroup quota ({topology.cpu_quota:g})"
                  if topology.cpu_quota is not None else "")
               + "; SMT siblings are not counted")
    else:
        why = "asked for with -r"
        usable = len(topology.usable)
        if threads > usable:
            plan.warnings.append(
                f"{threads} threads exceed the {usable} usable CPUs ({topology.thread_budget} "
                f"physical cores); threads sharing a core are usually slower than "
                f"-r {topology.thread_budget}")
    plan.set("OMP_NUM_THREADS", str(threads), why)

    preload = base.get("LD_PRELOAD", "")
    if openmp == "intel":
        iomp = find_library("iomp", dirs)
        if iomp:
            preload = _append_path_list(preload, iomp)
            plan.set("KMP_AFFINITY", "granularity=fine,compact,1,0",
                     "Intel OpenMP: one thread per physical core, packed")
            plan.set("KMP_BLOCKTIME", "1", "Intel OpenMP: idle threads sleep after 1 ms")
        else:
            plan.warnings.append(f"Intel OpenMP (libiomp5.so) not found in {', '.join(dirs)}; "
                                 f"install it with: {LIBRARIES['iomp'].install_hint}")
            openmp = "gnu"
    if openmp == "gnu":
        plan.set("OMP_PROC_BIND", "close", "GNU OpenMP: keep each thread on one core")
        plan.set("OMP_PLACES", "cores", "GNU OpenMP: a place is a physical core")

    huge_pages = huge_pages or HugePages.probe()
    lib = _pick_allocator(allocator, dirs, plan, huge_pages)
    if lib:
        plan.allocator = lib
        preload = _append_path_list(preload, lib)
        if "jemalloc" in lib:
            conf = JEMALLOC_CONF
            why = "jemalloc: keep freed pages for reuse instead of returning them to the OS"
            if huge_pages.needs_asking:
                conf += f",{JEMALLOC_THP}"
                why += "; huge pages for all its memory (THP is madvise-only here)"
            plan.set("MALLOC_CONF", conf, why)
        # oneTBB (OpenVINO's threading) dlopens libtbbbind with RTLD_DEEPBIND, so hwloc inside
        # it frees with glibc what the preloaded allocator allocated: compile_model aborts
        # ("free(): invalid pointer"). This makes oneTBB load it without RTLD_DEEPBIND.
        plan.set("TBB_ENABLE_SANITIZERS", "1",
                 "OpenVINO's oneTBB would otherwise crash beside a preloaded allocator")
    _ask_for_huge_pages(plan, lib, base, huge_pages)
    if preload != base.get("LD_PRELOAD", ""):
        plan.set("LD_PRELOAD", preload,
                 "appended to the existing LD_PRELOAD" if base.get("LD_PRELOAD") else
                 "preload the chosen libraries")

    saved = {name: base.get(name) for name in plan.values}
    plan.restores = {k: v for k, v in _read_saved(env).items() if k not in saved}
    plan.set(SAVED_VAR, json.dumps(saved, sort_keys=True),
             "earlier values, restored by bigdl-nano-unset-env")
    return plan


def _ask_for_huge_pages(plan: EnvPlan, allocator: Optional[str], base: Mapping[str, str],
                        huge_pages: HugePages) -> None:
    """Where THP is madvise-only, have glibc's malloc (when nothing is preloaded) and PyTorch
    ask for huge pages; jemalloc's ``MALLOC_CONF`` asks for its own."""
    if not huge_pages.needs_asking:
        return
    if allocator is None and huge_pages.glibc_can_ask:
        plan.set("GLIBC_TUNABLES", append_tunable(base.get("GLIBC_TUNABLES", ""), GLIBC_HUGETLB),
                 "glibc malloc: huge pages for what it maps (THP is madvise-only here); "
                 "OpenVINO's weights live there")
    cannot = allocator is not None and "jemalloc" not in allocator
    plan.set("THP_MEM_ALLOC_ENABLE", "1",
             "PyTorch: huge pages for its buffers of 2 MiB and more (THP is madvise-only here)"
             + ("; tcmalloc cannot ask, so OpenVINO's weights stay on small pages (-j or -c "
                "give them huge pages too)" if cannot else ""))


def apply_plan(plan: EnvPlan, env: Mapping[str, str]) -> dict[str, str]:
    """Return a copy of ``env`` with the plan applied (for running a command under it)."""
    result = original_environment(env)
    result.update(plan.values)
    return result


def plan_restore(env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """What ``bigdl-nano-unset-env`` does: (variables to set back, variables to unset)."""
    saved = _read_saved(env)
    to_set = {k: v for k, v in saved.items() if v is not None}
    to_unset = sorted([k for k, v in saved.items() if v is None] + [SAVED_VAR])
    return to_set, to_unset


def render_exports(plan: EnvPlan, explain: bool = False) -> str:
    """Shell text to ``eval``: ``export`` lines, with ``# why`` comments when ``explain``."""
    lines = [f"unset {k}" if v is None else f"export {k}={shlex.quote(v)}"
             for k, v in plan.restores.items()]
    for name, value in plan.values.items():
        if explain:
            lines.append(f"# {name}: {plan.reasons[name]}")
        lines.append(f"export {name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def render_restore(to_set: Mapping[str, str], to_unset: list[str]) -> str:
    """Shell text to ``eval`` that restores the environment saved by init."""
    lines = [f"export {k}={shlex.quote(v)}" for k, v in to_set.items()]
    lines += [f"unset {k}" for k in to_unset]
    return "\n".join(lines) + "\n"
