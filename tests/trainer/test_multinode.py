"""Multi-node training through bigdl-nano-run --nnodes (torchrun, c10d, gloo), for real.

Two "nodes" are two bigdl-nano-run processes: on loopback (always), and in two
network namespaces joined by a veth pair (needs root and iproute2). The script
is unchanged nano code (tests/trainer/multinode_job.py).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # every test starts processes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JOB = os.path.join(ROOT, "tests", "trainer", "multinode_job.py")
RUN = [sys.executable, "-m", "nano.launcher.run_cli"]


def port():
    from nano.trainer.local_ranks import free_port
    return free_port()


def node(rank, nnodes, addr, master_port, out, mode, extra=(), netns=None, kill_rank=None):
    cmd = RUN + ["--nnodes", str(nnodes), "--node-rank", str(rank), "--master-addr", addr,
                 "--master-port", str(master_port), *extra, "--", sys.executable, JOB, str(out),
                 mode]
    if kill_rank is not None:
        cmd += ["--kill-rank", str(kill_rank)]
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(procs, timeout=240):
    outputs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outputs.append(out)
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-4000:]
        assert "SIGABRT" not in out and "terminate called" not in out, out[-4000:]
    return outputs


def ranks(out, world):
    found = [json.load(open(out / f"rank{r}.json")) for r in range(world)]
    assert all(r["world_size"] == world for r in found)
    assert all(r["params"] == found[0]["params"] for r in found), "ranks disagree on parameters"
    return found


def test_two_nodes_on_loopback_trainer(tmp_path):
    master = port()
    finish([node(r, 2, "127.0.0.1", master, tmp_path, "trainer") for r in range(2)])
    found = ranks(tmp_path, 2)
    # one rank per node: each gets its node's cores and a matching thread pool
    assert all(r["threads"] == int(r["omp"]) for r in found)


@pytest.fixture
def two_namespaces():
    """Two network namespaces, 10.231.0.1 and .2, joined by a veth pair; removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2's `ip` to create network namespaces")
    tag = uuid.uuid4().hex[:6]
    names, links = [f"nanoA{tag}", f"nanoB{tag}"], [f"vA{tag}", f"vB{tag}"]
    steps = [["ip", "netns", "add", names[0]], ["ip", "netns", "add", names[1]],
             ["ip", "link", "add", links[0], "type", "veth", "peer", "name", links[1]]]
    for i in range(2):
        steps += [["ip", "link", "set", links[i], "netns", names[i]],
                  ["ip", "-n", names[i], "addr", "add", f"10.231.0.{i + 1}/24", "dev", links[i]],
                  ["ip", "-n", names[i], "link", "set", links[i], "up"],
                  ["ip", "-n", names[i], "link", "set", "lo", "up"]]
    try:
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot create network namespaces here: {' '.join(step)}: "
                            f"{done.stderr.strip()}")
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_two_nodes_in_network_namespaces_nano(tmp_path, two_namespaces):
    master = port()
    procs = [node(r, 2, "10.231.0.1", master, tmp_path, "nano", netns=two_namespaces[r])
             for r in range(2)]
    outputs = finish(procs)
    ranks(tmp_path, 2)
    assert "GLOBAL_RANK: 1" in "".join(outputs) or (tmp_path / "rank1.json").exists()


def test_elastic_restart_after_a_worker_is_killed(tmp_path):
    proc = node(0, 1, "127.0.0.1", port(), tmp_path, "nano",
                extra=["--nproc-per-node", "2", "--max-restarts", "1"], kill_rank=1)
    victim = tmp_path / "victim.pid"
    deadline = time.monotonic() + 180
    while not victim.exists() or not victim.read_text():
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "the worker never reached the kill point"
        time.sleep(0.2)
    os.kill(int(victim.read_text()), signal.SIGKILL)
    finish([proc])
    found = ranks(tmp_path, 2)
    assert all(r["restarts"] == "1" for r in found), "the group was not restarted"
    assert found[0]["cpus"] != found[1]["cpus"] or len(os.sched_getaffinity(0)) < 2
