"""The isolation zygote: every way a task can end becomes an Outcome, never a dead caller."""

import os
import subprocess
import time

import pytest

from nano.search import isolation
from nano.search.isolation import Zygote
from nano.search.measure import measure_latency
from tests.fresh_process import python_command


def task(kind):
    if kind == "ok":
        return isolation.SHARED["x"] * 2
    if kind == "raise":
        raise ValueError("bad thing\nsecond line")
    if kind == "abort":
        os.abort()
    if kind == "hang":
        time.sleep(600)
    if kind == "memory":
        hog = [bytearray(64 * 2**20) for _ in range(64)]
        time.sleep(30)
        return len(hog)
    if kind == "exit":
        os._exit(3)


@pytest.fixture(scope="module")
def zygote():
    with Zygote({"x": 21}) as z:
        yield z


@pytest.mark.slow
@pytest.mark.parametrize("kind,status,fragment", [
    ("ok", "ok", ""),
    ("raise", "failed", "ValueError: bad thing"),
    ("abort", "crashed", "signal 6 SIGABRT"),
    ("hang", "timeout", "timeout after 2 s"),
    ("memory", "memory", "memory above 0.5 GiB"),
    ("exit", "crashed", "exit status 3"),
])
def test_outcomes(zygote, kind, status, fragment):
    outcome = zygote.run(task, kind, timeout=2, memory_limit=2**29)
    assert outcome.status == status
    assert fragment in outcome.detail
    if kind == "ok":
        assert outcome.result == 42


def test_zygote_survives_everything(zygote):
    for kind in ("abort", "exit", "ok"):
        zygote.run(task, kind, timeout=5)
    assert zygote.run(task, "ok", timeout=5).result == 42


def test_early_stop_when_far_slower():
    lat = measure_latency(lambda: time.sleep(0.004), max_samples=100, time_budget=5,
                          warmup=1, slower_than=0.001, early_stop_factor=3.0)
    assert lat.stopped_early and lat.samples == 5
    lat = measure_latency(lambda: None, max_samples=50, time_budget=5, warmup=1)
    assert not lat.stopped_early and lat.samples == 50 and lat.p25 <= lat.median <= lat.p75


class ParallelOnUnpickle:
    """A payload whose unpickling runs an OpenMP parallel op in the zygote (a HF GPT-2
    model's does): the zygote must not leave a thread team its forked children inherit."""

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        import torch

        torch.randn(2000, 2000).clone()


def parallel_task(_):
    import torch

    a = torch.randn(2000, 2000)
    return [float(a.clone().sum()) for _ in range(3)][0] is not None and torch.get_num_threads()


@pytest.mark.slow
def test_a_payload_that_runs_parallel_code_when_loaded_does_not_hang_its_tasks():
    with Zygote(ParallelOnUnpickle()) as z:
        outcome = z.run(parallel_task, None, timeout=60)
    assert outcome.status == "ok", outcome.detail
    # the child has its threads back: a fresh interpreter's (this one's may be set apart)
    fresh = subprocess.run([*python_command(), "-c",
                            "import torch; print(torch.get_num_threads())"],
                           capture_output=True, text=True, check=True)
    assert outcome.result == int(fresh.stdout)


def preloaded(entry):
    """Whether the zygote imported ``entry``'s module (and called its function)."""
    import sys

    name, _, function = entry.partition(":")
    if name not in sys.modules:
        return False
    return not function or getattr(sys.modules[name], function).cache_info().currsize == 1


def _threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


@pytest.mark.slow
def test_the_backends_preloads_reach_every_task_and_start_no_thread_in_the_zygote():
    """The zygote forks: a preloaded module that started a thread would fork a child
    without it (or holding its locks)."""
    from nano.runtimes.registry import specs

    preload = sorted({entry for spec in specs() for entry in spec.preload})
    probe = "torch._inductor.cpu_vec_isa:valid_vec_isa_list"  # cached by functools
    assert "onnxscript" in preload and probe in preload
    with Zygote({"x": 1}) as plain:
        assert plain.run(preloaded, "onnxscript", timeout=60).result is False
        baseline = _threads(plain.proc.pid)
    with Zygote({"x": 1}, preload=[*preload, "no_such_module_here"]) as z:
        for entry in preload:
            assert z.run(preloaded, entry, timeout=60).result is True, entry
        assert _threads(z.proc.pid) == baseline  # both counted after a task
        assert z.run(task, "ok", timeout=60).result == 2  # a failed preload is no failure


def test_a_search_preloads_what_its_available_methods_build_with():
    from nano.runtimes.registry import get_method, preload_modules

    assert preload_modules([get_method("original"), get_method("jit_fp32")]) == ()
    assert preload_modules([get_method(n) for n in ("original", "onnxruntime_fp32",
                                                    "onnxruntime_int8_qdq", "compile_fp32")]) \
        == ("torch._dynamo", "onnx", "onnxscript", "torch._inductor.compile_fx",
            "torch._inductor.cpu_vec_isa:valid_vec_isa_list")


def own_peak(_):
    return isolation.peak_rss_bytes()


@pytest.mark.slow
def test_a_tasks_peak_memory_does_not_count_what_the_zygote_preloaded():
    """optimize()'s peak MB column: the build tools preloaded for every candidate (about
    150 MB) would otherwise be counted in every row, the original's included."""
    from nano.runtimes.backends.spec import INDUCTOR, ONNX_EXPORT

    with Zygote({"x": 1}) as plain:
        alone = plain.run(own_peak, None, timeout=60).result
    with Zygote({"x": 1}, preload=[*ONNX_EXPORT, *INDUCTOR]) as z:
        preloaded = z.run(own_peak, None, timeout=60).result
        assert z.run(preloaded_bytes, None, timeout=60).result > 100 * 2**20
    assert abs(preloaded - alone) < 40 * 2**20, (preloaded / 2**20, alone / 2**20)


def preloaded_bytes(_):
    return isolation._PRELOADED_BYTES


class TiedModel(__import__("torch").nn.Module):
    """An LM's shape in small: a head sharing the embedding's weight, bf16 layers, an
    empty buffer."""

    def __init__(self):
        import torch

        super().__init__()
        self.embedding = torch.nn.Embedding(50, 8)
        self.head = torch.nn.Linear(8, 50, bias=False)
        self.head.weight = self.embedding.weight
        self.block = torch.nn.Linear(8, 8).to(torch.bfloat16)
        self.register_buffer("nothing", torch.zeros(0))


def payload_as_received(_):
    """What a task sees of the payload: values, dtypes and which tensors share memory."""
    shared = isolation.SHARED
    model = shared["model"]
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "tied": model.head.weight is model.embedding.weight,
            "view": shared["view"].clone(),
            "view_shares": shared["view"].untyped_storage().data_ptr()
            == shared["whole"].untyped_storage().data_ptr()}


def test_a_payloads_tensors_reach_the_task_whole_tied_and_in_their_dtypes():
    import torch

    torch.manual_seed(0)
    model, whole = TiedModel(), torch.randn(6, 5)
    with Zygote({"model": model, "whole": whole, "view": whole[2:, 1:4]}) as z:
        seen = z.run(payload_as_received, None, timeout=60)
    assert seen.status == "ok", seen.detail
    got = seen.result
    assert got["tied"] and got["view_shares"]
    torch.testing.assert_close(got["view"], whole[2:, 1:4], rtol=0, atol=0)
    assert got["state"].keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        assert got["state"][name].dtype == value.dtype, name
        torch.testing.assert_close(got["state"][name], value, rtol=0, atol=0)


def test_sending_a_payload_costs_the_caller_no_copy_of_its_tensors():
    """A model pickled as usual is first copied whole into the caller's memory: a 1.1 B
    Llama's generation search took its caller from 4.8 to 9.3 GB and was killed on 24 GiB."""
    import subprocess
    import sys

    script = ("import resource, torch\n"
              "from nano.search.isolation import Zygote\n"
              "weights = torch.ones(100 * 2**20)  # 400 MiB\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "with Zygote({'weights': weights}):\n"
              "    pass\n"
              "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    done = subprocess.run([*isolation.PYTHON_COMMAND, "-c", script], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    grew_mib = int(done.stdout.split()[-1])
    assert grew_mib < 100, f"the caller grew by {grew_mib} MiB sending 400 MiB"


def leave_a_process_behind(_):
    import subprocess

    return subprocess.Popen(["sleep", "600"]).pid  # in the task's group, never waited for


def test_what_a_task_leaves_running_ends_with_it():
    import psutil

    with Zygote({"x": 1}) as z:
        outcome = z.run(leave_a_process_behind, None, timeout=60)
        assert outcome.status == "ok", outcome.detail
        try:
            psutil.Process(outcome.result).wait(timeout=10)  # TimeoutExpired while it runs
        except psutil.NoSuchProcess:
            pass  # gone and reaped already
