"""Environment planning: threads, OpenMP binding, allocator preload, save and restore."""

import json

import pytest

from nano.launcher.environment import (SAVED_VAR, apply_plan, plan_environment, plan_restore)
from nano.launcher.hugepages import HugePages, append_tunable, thp_mode
from nano.launcher.topology import LogicalCpu, Topology


def four_cores(quota=None):
    return Topology.build([LogicalCpu(i, i, 0) for i in range(4)], cpu_quota=quota)


@pytest.fixture
def libdir(tmp_path):
    for name in ("libjemalloc.so.2", "libtcmalloc_minimal.so.4", "libiomp5.so"):
        (tmp_path / name).write_bytes(b"")
    return [str(tmp_path)]


def test_threads_default_to_physical_cores_and_quota():
    assert plan_environment(four_cores(), {}, library_dirs=[]).values["OMP_NUM_THREADS"] == "4"
    assert plan_environment(four_cores(2.0), {}, library_dirs=[]).values["OMP_NUM_THREADS"] == "2"
    plan = plan_environment(four_cores(), {}, threads=3, library_dirs=[])
    assert plan.values["OMP_NUM_THREADS"] == "3" and "-r" in plan.reasons["OMP_NUM_THREADS"]


def test_gnu_openmp_binding_by_default(libdir):
    plan = plan_environment(four_cores(), {}, library_dirs=libdir)
    assert plan.values["OMP_PROC_BIND"] == "close" and plan.values["OMP_PLACES"] == "cores"
    assert "KMP_AFFINITY" not in plan.values


def test_intel_openmp(libdir):
    plan = plan_environment(four_cores(), {}, openmp="intel", library_dirs=libdir)
    assert plan.values["KMP_AFFINITY"].startswith("granularity=fine")
    assert plan.values["KMP_BLOCKTIME"] == "1"
    assert plan.values["LD_PRELOAD"].split(":")[0].endswith("libiomp5.so")


@pytest.mark.parametrize("allocator,thp,expect", [
    ("auto", "always", "tcmalloc"), ("auto", "never", "tcmalloc"),
    ("auto", "madvise", "jemalloc"),  # the one of the two that can ask for huge pages
    ("tcmalloc", "madvise", "tcmalloc"), ("jemalloc", "always", "jemalloc")])
def test_allocator_choice(libdir, allocator, thp, expect):
    plan = plan_environment(four_cores(), {}, allocator=allocator, library_dirs=libdir,
                            huge_pages=HugePages(thp, (2, 36)))
    assert expect in plan.values["LD_PRELOAD"]
    assert ("MALLOC_CONF" in plan.values) == (expect == "jemalloc")


def test_default_allocator_preloads_nothing(libdir):
    plan = plan_environment(four_cores(), {}, allocator="default", library_dirs=libdir)
    assert "LD_PRELOAD" not in plan.values and plan.allocator is None


def test_missing_allocator_says_where_and_how_but_sets_the_rest(tmp_path):
    plan = plan_environment(four_cores(), {}, allocator="jemalloc", library_dirs=[str(tmp_path)])
    assert "LD_PRELOAD" not in plan.values and plan.values["OMP_NUM_THREADS"] == "4"
    (warning,) = plan.warnings
    assert str(tmp_path) in warning and "libjemalloc2" in warning


def test_appends_to_existing_preload_and_saves_it(libdir):
    plan = plan_environment(four_cores(), {"LD_PRELOAD": "/opt/mine.so"}, library_dirs=libdir)
    assert plan.values["LD_PRELOAD"].startswith("/opt/mine.so:")
    saved = json.loads(plan.values[SAVED_VAR])
    assert saved["LD_PRELOAD"] == "/opt/mine.so" and saved["OMP_NUM_THREADS"] is None


def test_init_twice_is_idempotent_and_restore_is_exact(libdir):
    user = {"LD_PRELOAD": "/opt/mine.so", "OMP_NUM_THREADS": "9", "HOME": "/root"}
    once = apply_plan(plan_environment(four_cores(), user, allocator="jemalloc",
                                       library_dirs=libdir), user)
    twice_plan = plan_environment(four_cores(), once, allocator="tcmalloc", library_dirs=libdir)
    assert twice_plan.restores == {"MALLOC_CONF": None}  # jemalloc's setting goes away
    twice = apply_plan(twice_plan, once)
    assert twice["LD_PRELOAD"].count(":") == 1 and "MALLOC_CONF" not in twice
    to_set, to_unset = plan_restore(twice)
    restored = {k: v for k, v in twice.items() if k not in to_unset}
    restored.update(to_set)
    assert restored == user


@pytest.mark.parametrize("kwargs", [dict(allocator="tcmaloc"), dict(openmp="llvm"),
                                    dict(threads=0)])
def test_bad_options(kwargs):
    with pytest.raises(ValueError):
        plan_environment(four_cores(), {}, library_dirs=[], **kwargs)


MADVISE = HugePages("madvise", (2, 36))


def test_madvise_thp_glibc_malloc_asks_through_its_tunable_keeping_the_users(libdir):
    user = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0"}
    plan = plan_environment(four_cores(), user, allocator="default", library_dirs=libdir,
                            huge_pages=MADVISE)
    assert plan.values["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert plan.values["THP_MEM_ALLOC_ENABLE"] == "1"
    to_set, to_unset = plan_restore(apply_plan(plan, user))
    assert to_set["GLIBC_TUNABLES"] == user["GLIBC_TUNABLES"]
    assert "THP_MEM_ALLOC_ENABLE" in to_unset


def test_madvise_thp_jemalloc_asks_through_its_conf(libdir):
    plan = plan_environment(four_cores(), {}, allocator="jemalloc", library_dirs=libdir,
                            huge_pages=MADVISE)
    assert plan.values["MALLOC_CONF"].endswith(",thp:always")
    assert "GLIBC_TUNABLES" not in plan.values and plan.values["THP_MEM_ALLOC_ENABLE"] == "1"


def test_madvise_thp_tcmalloc_cannot_ask_and_the_reason_says_what_can(libdir):
    plan = plan_environment(four_cores(), {}, allocator="tcmalloc", library_dirs=libdir,
                            huge_pages=MADVISE)
    assert "GLIBC_TUNABLES" not in plan.values and "MALLOC_CONF" not in plan.values
    assert "-j" in plan.reasons["THP_MEM_ALLOC_ENABLE"]


@pytest.mark.parametrize("huge_pages", [HugePages("always", (2, 36)),
                                        HugePages("never", (2, 36)), HugePages(None, None),
                                        HugePages("madvise", (2, 31))])
def test_nothing_to_ask_or_no_way_to(libdir, huge_pages):
    """always: every large mapping gets them anyway; never/unknown: none can; glibc before
    2.35 has no tunable (PyTorch's own buffers can still ask)."""
    plan = plan_environment(four_cores(), {}, allocator="default", library_dirs=libdir,
                            huge_pages=huge_pages)
    assert "GLIBC_TUNABLES" not in plan.values
    assert ("THP_MEM_ALLOC_ENABLE" in plan.values) == (huge_pages.mode == "madvise")


def test_thp_mode_reads_the_bracketed_word(tmp_path):
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    assert thp_mode(str(path)) == "madvise"
    assert thp_mode(str(tmp_path / "missing")) is None
    assert append_tunable("", "glibc.malloc.hugetlb=1") == "glibc.malloc.hugetlb=1"
