"""@nano with several processes refuses state it could neither synchronize nor bring back."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from nano import nano
from nano.errors import NanoValueError
from tests.faults.helpers import descendants


def _loop(model, optimizer, loader):
    for x, y in loader:
        optimizer.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        optimizer.step()
    return float(loss)


def _data():
    torch.manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(16, 3), torch.randn(16)), batch_size=4)


def test_one_process_updates_a_raw_tensor_in_place():
    w = torch.zeros(3, requires_grad=True)
    nano(num_processes=1)(_loop)(lambda x: x @ w, torch.optim.SGD([w], lr=0.1), _data())
    assert w.abs().sum() > 0


def test_two_processes_refuse_a_raw_tensor_before_starting_anything():
    import os

    w = torch.zeros(3, requires_grad=True)
    before = descendants(os.getpid())
    with pytest.raises(NanoValueError, match="belong to no nn.Module.*num_processes=1"):
        nano(num_processes=2)(_loop)(lambda x: x @ w, torch.optim.SGD([w], lr=0.1), _data())
    assert descendants(os.getpid()) == before
    assert w.abs().sum() == 0


def test_two_processes_refuse_a_tensor_argument_that_requires_grad():
    w = torch.zeros(3, requires_grad=True)
    model = torch.nn.Linear(3, 1)

    def train(model, optimizer, loader, extra):
        return _loop(model, optimizer, loader)

    with pytest.raises(NanoValueError, match="tensor argument of shape \\(3,\\) requires grad"):
        nano(num_processes=2)(train)(model, torch.optim.SGD(model.parameters(), lr=0.1),
                                     _data(), w)
