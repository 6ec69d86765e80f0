"""Topology parsing from fake sysfs, /proc/cpuinfo and cgroup trees."""

from nano.launcher.cgroup import read_cgroup_limits
from nano.launcher.cpulist import format_cpu_list, parse_cpu_list
from nano.launcher.topology import read_topology
from tests.launcher.fake_machine import (two_socket_smt, write_cgroup_v1, write_cgroup_v2,
                                         write_cpuinfo, write_sysfs)


def test_cpu_list_round_trip():
    assert parse_cpu_list("0-3,8,10-11") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpu_list("0-6:2") == [0, 2, 4, 6]
    assert parse_cpu_list("") == []
    assert format_cpu_list([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"


def test_one_socket_no_smt(tmp_path):
    write_sysfs(tmp_path, [(i, 0, i, 0) for i in range(4)])
    topo = read_topology(str(tmp_path), affinity=range(4))
    assert topo.sockets == [0] and topo.threads_per_core == 1
    assert [c.id for c in topo.usable_cores()] == [0, 1, 2, 3]
    assert topo.thread_budget == 4 and topo.source == "sysfs"


def test_two_socket_smt_counts_physical_cores(tmp_path):
    write_sysfs(tmp_path, two_socket_smt(28))
    topo = read_topology(str(tmp_path), affinity=range(112))
    assert topo.sockets == [0, 1] and topo.nodes == [0, 1]
    assert topo.threads_per_core == 2 and topo.physical_core_count == 56
    cores = topo.usable_cores()
    assert len(cores) == 56 and all(c.id < 56 for c in cores)  # first thread of each core
    assert topo.thread_budget == 56


def test_sparse_and_renumbered_ids(tmp_path):
    # Offline CPUs leave holes; core ids repeat on the second socket and are not dense.
    cpus = [(0, 0, 0, 0), (1, 0, 4, 0), (4, 1, 0, 1), (5, 1, 4, 1), (8, 1, 9, 1), (9, 1, 9, 1)]
    write_sysfs(tmp_path, cpus, online="0-1,4-5,8-9")
    topo = read_topology(str(tmp_path), affinity=[0, 1, 4, 5, 8, 9])
    assert topo.physical_core_count == 5  # (0,0) (0,4) (1,0) (1,4) (1,9): socket keeps them apart
    assert [c.id for c in topo.usable_cores()] == [0, 1, 4, 5, 8]


def test_affinity_restricts_usable(tmp_path):
    write_sysfs(tmp_path, two_socket_smt(4))
    topo = read_topology(str(tmp_path), affinity=[1, 2, 9])  # 9 is the SMT sibling of 1
    assert [c.id for c in topo.usable_cores()] == [1, 2]


def test_cpuinfo_fallback_without_sysfs(tmp_path):
    write_cpuinfo(tmp_path, [(0, 0, 0), (1, 0, 0), (2, 0, 1), (3, 0, 1)], flags="avx512f avx512_bf16")
    topo = read_topology(str(tmp_path), affinity=range(4))
    assert topo.source == "/proc/cpuinfo"
    assert topo.physical_core_count == 2 and topo.threads_per_core == 2
    assert topo.has_bf16


def test_nothing_readable_falls_back_to_cpu_count(tmp_path):
    topo = read_topology(str(tmp_path))
    assert topo.source == "os.cpu_count()" and topo.thread_budget >= 1


def test_cgroup_v2_cpuset_and_quota(tmp_path):
    write_sysfs(tmp_path, [(i, 0, i, 0) for i in range(8)])
    write_cgroup_v2(tmp_path, cpuset="2-5", cpu_max="150000 100000", path="/user.slice/job")
    limits = read_cgroup_limits(str(tmp_path))
    assert limits.version == 2 and limits.cpuset == {2, 3, 4, 5}
    assert limits.cpu_quota == 1.5 and limits.quota_cpus == 2
    topo = read_topology(str(tmp_path), affinity=range(8))
    assert [c.id for c in topo.usable_cores()] == [2, 3, 4, 5]
    assert topo.thread_budget == 2  # quota 1.5 CPUs rounds to 2 threads


def test_cgroup_v2_unlimited(tmp_path):
    write_cgroup_v2(tmp_path, cpu_max="max 100000")
    assert read_cgroup_limits(str(tmp_path)).cpu_quota is None


def test_cgroup_v1_container_view(tmp_path):
    write_sysfs(tmp_path, [(i, 0, i, 0) for i in range(8)])
    write_cgroup_v1(tmp_path, cpuset="0-3", quota_us=300000)
    limits = read_cgroup_limits(str(tmp_path))
    assert limits.version == 1 and limits.cpuset == {0, 1, 2, 3} and limits.cpu_quota == 3.0
    assert read_topology(str(tmp_path), affinity=range(8)).thread_budget == 3


def test_real_machine_reads():
    topo = read_topology()
    assert topo.thread_budget >= 1 and topo.usable
