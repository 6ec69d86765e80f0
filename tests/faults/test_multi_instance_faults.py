"""to_multi_instance: a per-input timeout, shared memory freed after a worker is killed,
and mistakes refused with the API's own words."""

import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from nano import InferenceOptimizer
from nano.errors import NanoTypeError, NanoValueError
from tests.faults.helpers import wait_gone

pytestmark = pytest.mark.slow  # every test here builds runtimes or starts processes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class HangsOnLargeValues(torch.nn.Module):
    def forward(self, x):
        if x.max() > 100:
            time.sleep(3600)
        return x * 2


def test_timeout_names_the_hanging_input_and_closes_the_pool():
    from nano.multiprocess.pool import InstanceTimeout

    inputs = [torch.ones(2, 2)] * 3 + [torch.full((2, 2), 1000.0)] + [torch.ones(2, 2)] * 2
    pool = InferenceOptimizer.to_multi_instance(HangsOnLargeValues(), 2, timeout=3)
    pids = [w.proc.pid for w in pool.workers]
    try:
        torch.testing.assert_close(pool([torch.ones(2, 2)] * 4)[3], torch.full((2, 2), 2.0))
        started = time.monotonic()
        with pytest.raises(InstanceTimeout, match=r"^input 3 took over 3 s in worker \d"):
            pool(inputs)
        assert time.monotonic() - started < 30
        assert wait_gone(pids) == []
        with pytest.raises(RuntimeError, match="closed"):
            pool([torch.ones(2, 2)])
    finally:
        pool.close()


def test_shared_memory_is_released_after_a_worker_is_killed(tmp_path):
    """Run in a fresh interpreter: its resource tracker reports leaked blocks at exit."""
    script = tmp_path / "kill_worker.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys, threading, time, torch
        sys.path.insert(0, {ROOT!r})
        from nano import InferenceOptimizer
        from tests.faults.test_multi_instance_faults import HangsOnLargeValues
        before = set(os.listdir("/dev/shm"))
        pool = InferenceOptimizer.to_multi_instance(HangsOnLargeValues(), 2)
        pool([torch.ones(64, 64)] * 8)   # both workers have made their reply blocks
        def kill():
            time.sleep(2)
            for w in pool.workers:
                os.kill(w.pid, signal.SIGKILL)
        threading.Thread(target=kill).start()
        try:
            pool([torch.ones(64, 64)] * 3 + [torch.full((64, 64), 1e3)])
        except RuntimeError as e:
            print("error:", e)
        left = sorted(set(os.listdir("/dev/shm")) - before)
        print("left:", left)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "error: worker" in out.stdout and "was killed by signal 9" in out.stdout
    assert "left: []" in out.stdout, out.stdout
    assert "leaked shared_memory" not in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-2000:]


def test_too_many_processes_names_the_api_option():
    with pytest.raises(NanoValueError) as info:
        InferenceOptimizer.to_multi_instance(torch.nn.Linear(2, 2), 99)
    message = str(info.value)
    assert "allow_oversubscribe=True" in message and "--" not in message


def test_oversubscribing_when_asked():
    cpus = len(os.sched_getaffinity(0))
    with InferenceOptimizer.to_multi_instance(torch.nn.Linear(2, 2), cpus + 1,
                                              allow_oversubscribe=True) as pool:
        assert len(pool([torch.ones(1, 2)] * 4)) == 4


def test_a_function_is_a_type_error():
    with pytest.raises(NanoTypeError, match="takes an nn.Module or a Nano model, got function"):
        InferenceOptimizer.to_multi_instance(lambda x: x * 2, 2)


@pytest.mark.parametrize("timeout", [0, -1])
def test_timeout_must_be_positive(timeout):
    with pytest.raises(NanoValueError, match="timeout"):
        InferenceOptimizer.to_multi_instance(torch.nn.Linear(2, 2), 1, timeout=timeout)
