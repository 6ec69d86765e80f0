"""Core scheduling for N instances: a pure function of the topology."""

import pytest

from nano.launcher.schedule import SchedulingError, schedule_instances
from nano.launcher.topology import LogicalCpu, Topology
from tests.launcher.fake_machine import two_socket_smt


def server():
    """2 sockets x 28 cores x 2 threads; CPU i and i+56 are siblings."""
    return Topology.build(LogicalCpu(cpu, socket * 28 + core, socket, node)
                          for cpu, socket, core, node in two_socket_smt(28))


def socket_of(cpu):
    return (cpu % 56) // 28


@pytest.mark.parametrize("n,width", [(1, 56), (2, 28), (4, 14), (7, 8), (8, 7), (56, 1)])
def test_even_split_one_cpu_per_core_no_straddle(n, width):
    sets = schedule_instances(server(), n)
    assert len(sets) == n and all(len(s) == width for s in sets)
    flat = [c for s in sets for c in s]
    assert len(flat) == len(set(flat))  # disjoint
    assert all(c < 56 for c in flat)  # never an SMT sibling
    if 28 % width == 0:  # instances tile each socket exactly
        assert all(len({socket_of(c) for c in s}) == 1 for s in sets)


def test_straddles_only_when_unavoidable():
    sets = schedule_instances(server(), 3)  # 18 cores each: two fit a socket, one cannot
    straddling = [s for s in sets if len({socket_of(c) for c in s}) > 1]
    assert len(straddling) == 1 and all(len(s) == 18 for s in sets)


def test_explicit_cores_per_instance_leaves_rest_idle():
    sets = schedule_instances(server(), 2, cores_per_instance=4)
    assert sets == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_nodes_list_restricts_to_node():
    sets = schedule_instances(server(), 2, nodes=[1])
    assert all(socket_of(c) == 1 for s in sets for c in s) and len(sets[0]) == 14


def test_respects_usable_set():
    topo = Topology.build(server().cpus, usable=[3, 5, 61, 7])  # 61 is 5's sibling
    assert schedule_instances(topo, 3) == [[3], [5], [7]]


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(ninstances=0), "at least 1"),
    (dict(ninstances=2, cores_per_instance=0), "at least 1"),
    (dict(ninstances=57), "only 56 usable physical cores"),
    (dict(ninstances=2, cores_per_instance=40), "--allow-oversubscribe"),
    (dict(ninstances=1, nodes=[5]), "no usable cores on NUMA node"),
])
def test_impossible_splits_say_what_to_do(kwargs, fragment):
    with pytest.raises(SchedulingError, match=fragment):
        schedule_instances(server(), **kwargs)


def test_oversubscribe_when_allowed():
    sets = schedule_instances(server(), 60, allow_oversubscribe=True)
    assert len(sets) == 60 and sets[56] == sets[0]
