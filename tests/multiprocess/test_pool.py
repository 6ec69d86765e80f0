"""Multi-instance inference: equals serial, pinned workers, clear errors, no hang, no orphan."""

import os
import signal

import psutil
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from nano import InferenceOptimizer
from nano.models import TinyEncoder
from nano.multiprocess.pool import InstanceError
from tests.inference.models import SmallCNN, TwoInput

pytestmark = pytest.mark.slow  # every test here builds runtimes or starts processes

NEEDS_TWO = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 usable CPUs")


class Fragile(torch.nn.Module):
    """Raises on inputs whose first value is -1, kills its own process on -9."""

    def __init__(self):
        super().__init__()
        self.l = torch.nn.Linear(2, 2)

    def forward(self, x):
        if x[0, 0].item() == -9:
            os.kill(os.getpid(), signal.SIGKILL)
        if x[0, 0].item() == -1:
            raise ValueError("cannot take -1")
        return self.l(x)


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return SmallCNN().eval()


@NEEDS_TWO
def test_torch_model_equals_serial_and_workers_are_pinned(cnn):
    xs = [torch.rand(3, 1, 8, 8) for _ in range(6)] + [torch.rand(1, 1, 8, 8)]  # partial last
    with InferenceOptimizer.to_multi_instance(cnn, num_processes=2) as pool:
        outs = pool(xs)
        assert all(torch.allclose(o, cnn(x), atol=1e-6) for o, x in zip(outs, xs, strict=True))
        assert len(pool(xs[:1])) == 1  # reusable
        cpus = [w.affinity for w in pool.workers]
        assert len(cpus[0]) == 1 and not set(cpus[0]) & set(cpus[1])


@NEEDS_TWO
@pytest.mark.parametrize("accelerator", ["onnxruntime", "openvino"])
def test_runtime_kinds_equal_serial(cnn, accelerator):
    model = InferenceOptimizer.trace(cnn, accelerator=accelerator, input_sample=torch.rand(2, 1, 8, 8))
    loader = DataLoader(TensorDataset(torch.rand(10, 1, 8, 8), torch.zeros(10)), batch_size=4)
    with InferenceOptimizer.to_multi_instance(model, 2) as pool:
        outs = pool(loader)  # labels are dropped, last batch is partial
    expected = [model(x) for x, _ in loader]
    assert [o.shape[0] for o in outs] == [4, 4, 2]
    assert all(torch.allclose(o, e, atol=1e-5) for o, e in zip(outs, expected, strict=True))


def test_state_dict_kinds_equal_serial(cnn):
    """bf16 eager is saved as a state dict: workers rebuild it from the module sent beside it."""
    model = InferenceOptimizer.quantize(cnn, precision="bf16", input_sample=torch.rand(2, 1, 8, 8))
    assert model.needs_model_to_load
    xs = [torch.rand(2, 1, 8, 8) for _ in range(3)]
    with InferenceOptimizer.to_multi_instance(model, 2, allow_oversubscribe=True) as pool:
        outs = pool(xs)
    assert len(outs) == len(xs)
    for out, x in zip(outs, xs):
        torch.testing.assert_close(out, model(x))


@NEEDS_TWO
def test_dict_and_tuple_outputs():
    torch.manual_seed(0)
    enc = TinyEncoder().eval()
    ids, mask = torch.randint(0, 1000, (2, 10)), torch.ones(2, 10, dtype=torch.long)
    ov = InferenceOptimizer.trace(enc, accelerator="openvino",
                                  input_sample=((ids,), {"attention_mask": mask}))
    two = TwoInput().eval()
    a, b = torch.rand(2, 6), torch.rand(2, 3)
    with InferenceOptimizer.to_multi_instance(ov, 2) as pool:
        out = pool([{"input_ids": ids, "attention_mask": mask}, (ids, mask)])
    assert isinstance(out[0], dict) and torch.allclose(out[1]["pooled"], enc(ids, mask)["pooled"],
                                                       atol=1e-4)
    with InferenceOptimizer.to_multi_instance(two, 2) as pool:
        out = pool([(a, b), {"x": a, "extra": b}])
    assert isinstance(out[0], tuple) and torch.allclose(out[1][0], two(a, b)[0], atol=1e-6)


def _shared_blocks() -> set:
    return {f for f in os.listdir("/dev/shm") if f.startswith("psm_")}


def _no_orphans(pool):
    for w in pool.workers:
        assert w.proc.poll() is not None
        assert not psutil.pid_exists(w.pid) or psutil.Process(w.pid).status() == "zombie"


@NEEDS_TWO
def test_worker_that_raises_names_the_input():
    xs = [torch.rand(1, 2) for _ in range(5)]
    xs[3][0, 0] = -1
    pool = InferenceOptimizer.to_multi_instance(Fragile(), 2)
    with pytest.raises(InstanceError, match="input 3 failed in worker .*ValueError: cannot take -1"):
        pool(xs)
    _no_orphans(pool)
    with pytest.raises(RuntimeError, match="closed"):
        pool(xs[:1])


@NEEDS_TWO
def test_worker_killed_mid_batch_is_an_error_not_a_hang():
    xs = [torch.rand(1, 2) for _ in range(6)]
    xs[4][0, 0] = -9
    blocks_before = _shared_blocks()
    pool = InferenceOptimizer.to_multi_instance(Fragile(), 2)
    with pytest.raises(InstanceError, match="was killed by signal 9 while running input 4"):
        pool(xs)
    _no_orphans(pool)
    assert _shared_blocks() <= blocks_before


@NEEDS_TWO
def test_long_lists_travel_in_chunks_and_keep_order_and_error_names():
    from nano.multiprocess.pool import chunks

    sizes = [len(c) for c in chunks(200, 2)]
    assert sum(chunks(200, 2), []) == list(range(200))
    assert sizes[0] == 8 and sizes == sorted(sizes, reverse=True) and sizes[-1] == 1
    assert chunks(3, 2) == [[0], [1], [2]] and chunks(41, 2)[0] == [0, 1, 2, 3, 4]
    torch.manual_seed(0)
    model = Fragile().eval()
    xs = [torch.rand(1, 2) for _ in range(41)]
    with InferenceOptimizer.to_multi_instance(model, 2) as pool:
        outs = pool(xs)
    assert all(torch.allclose(o, model(x), atol=1e-6) for o, x in zip(outs, xs, strict=True))
    xs[23][0, 0] = -1
    with pytest.raises(InstanceError, match="input 23 failed in worker .*cannot take -1"):
        InferenceOptimizer.to_multi_instance(model, 2)(xs)
    xs[23][0, 0], xs[2][0, 0] = 0.5, -9
    pool = InferenceOptimizer.to_multi_instance(model, 2)
    with pytest.raises(InstanceError, match="killed by signal 9 while running one of inputs 0-4"):
        pool(xs)
    _no_orphans(pool)


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(num_processes=0), "at least 1"),
    (dict(num_processes=2, cpu_for_each_process=[[0]]), "has 1 entries for 2 processes"),
    (dict(num_processes=1, cpu_for_each_process=[[9999]]), "may not use"),
    (dict(num_processes=999), "usable physical cores"),
])
def test_bad_arguments(cnn, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        InferenceOptimizer.to_multi_instance(cnn, **kwargs)
