"""A failing rank: its error and traceback reach the caller, nothing is left running, no hang."""

import os
import signal

import psutil
import pytest
import torch
from torch.utils.data import DataLoader

from nano import nano
from nano.trainer import WorkerError
from tests.trainer.jobs import linear, regression_data

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]  # every test starts processes


def raise_on_rank_1(model, optimizer, loader):
    if os.environ["RANK"] == "1":
        raise KeyError("bad batch on rank 1")
    for x, y in loader:
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


def die_on_rank_1(model, optimizer, loader):
    if os.environ["RANK"] == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    raise_on_rank_1(model, optimizer, loader)


def call(fn):
    model = linear()
    nano(num_processes=2)(fn)(model, torch.optim.SGD(model.parameters(), lr=0.1),
                              DataLoader(regression_data(), batch_size=4))


def children():
    return {c.pid: c for c in psutil.Process().children(recursive=True)}


@pytest.fixture
def no_new_children():
    """Fails the test if it leaves processes behind (earlier ones, e.g. resource_tracker, aside)."""
    before = set(children())
    yield
    left = {pid: c for pid, c in children().items() if pid not in before}
    assert not left, [c.cmdline() for c in left.values()]


def test_worker_exception_reaches_caller_with_traceback(no_new_children):
    with pytest.raises(WorkerError) as info:
        call(raise_on_rank_1)
    err = info.value
    assert err.rank == 1 and err.remote_type == "KeyError"
    assert "rank 1 (cpus" in str(err) and "bad batch on rank 1" in str(err)
    assert "in raise_on_rank_1" in str(err)  # the remote traceback


def test_worker_killed_by_signal_names_rank(no_new_children):
    with pytest.raises(WorkerError, match=r"rank 1 \(cpus .*\) was killed by signal 9 \(SIGKILL\)"):
        call(die_on_rank_1)


def hang_on_rank_0_fail_on_rank_1(model, optimizer, loader):
    import time
    if os.environ["RANK"] == "0":
        time.sleep(60)  # never joins a collective: only the launcher can stop it
    raise ValueError("rank 1 failed first")


def test_hanging_peer_is_stopped_and_root_cause_reported(no_new_children):
    with pytest.raises(WorkerError, match="rank 1 .* raised ValueError: rank 1 failed first"):
        call(hang_on_rank_0_fail_on_rank_1)
