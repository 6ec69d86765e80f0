"""bf16 autocast and channels_last are really active inside the training step."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from nano import TorchNano, Trainer, nano
from nano.launcher.topology import read_topology
from tests.trainer.jobs import QUIET

needs_bf16 = pytest.mark.skipif(not read_topology().has_bf16,
                                reason="this CPU has no avx512_bf16/amx_bf16; nano falls back to fp32")


class Probe(nn.Module):
    """A conv net (3 input channels: with 1, NCHW and NHWC strides coincide) that records, on each forward, the input's memory format and the conv dtype."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 10)
        self.seen = []

    def forward(self, x):
        h = self.conv(x)
        self.seen.append({"input_channels_last": x.is_contiguous(memory_format=torch.channels_last),
                          "weight_channels_last": self.conv.weight.is_contiguous(
                              memory_format=torch.channels_last),
                          "conv_dtype": h.dtype})
        return self.head(torch.relu(h).flatten(1))


def images():
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(32, 3, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g))


class ProbeModule(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = Probe()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, i):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def plain_loop(model, optimizer, loader):
    for x, y in loader:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


class LoopNano(TorchNano):
    def train(self, model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        model, optimizer, loader = self.setup(model, optimizer, DataLoader(images(), batch_size=8))
        for x, y in loader:
            optimizer.zero_grad()
            self.backward(nn.functional.cross_entropy(model(x), y))
            optimizer.step()


def run(kind, **options):
    if kind == "trainer":
        module = ProbeModule()
        Trainer(max_epochs=1, **options, **QUIET).fit(module, DataLoader(images(), batch_size=8))
        return module.net.seen
    model = Probe()
    if kind == "nano":
        nano(**options)(plain_loop)(model, torch.optim.SGD(model.parameters(), lr=0.01),
                                    DataLoader(images(), batch_size=8))
    else:
        LoopNano(**options).train(model)
    return model.seen


@needs_bf16
@pytest.mark.parametrize("kind", ["trainer", "nano", "torch_nano"])
def test_bf16_autocast_inside_step(kind):
    seen = run(kind, precision="bf16")
    assert seen and all(s["conv_dtype"] == torch.bfloat16 for s in seen)
    assert not any(s["input_channels_last"] for s in seen)


@pytest.mark.parametrize("kind", ["trainer", "nano", "torch_nano"])
def test_channels_last_inside_step(kind):
    seen = run(kind, channels_last=True)
    assert seen and all(s["input_channels_last"] and s["weight_channels_last"] for s in seen)
    assert all(s["conv_dtype"] == torch.float32 for s in seen)


def test_fp32_by_default():
    seen = run("trainer")
    assert all(s["conv_dtype"] == torch.float32 and not s["input_channels_last"] for s in seen)


@pytest.mark.slow
def test_bf16_and_channels_last_together_in_two_processes():
    module = ProbeModule()
    trainer = Trainer(num_processes=2, precision="bf16", channels_last=True, max_epochs=1, **QUIET)
    trainer.fit(module, DataLoader(images(), batch_size=8))
    # the weights come back from rank 0 with the trained values
    assert not torch.equal(module.net.conv.weight, ProbeModule().net.conv.weight)


def test_use_ipex_without_ipex_warns_and_trains():
    try:
        import intel_extension_for_pytorch  # noqa: F401
        pytest.skip("IPEX is installed here; the fallback path is not reachable")
    except Exception:
        pass
    module = ProbeModule()
    with pytest.warns(UserWarning, match="install the IPEX release"):
        Trainer(max_epochs=1, use_ipex=True, **QUIET).fit(module, DataLoader(images(), batch_size=8))
    assert module.net.seen


def test_training_channels_last_hook_takes_namedtuple_inputs():
    from collections import namedtuple

    from nano.trainer.channels_last import use_channels_last

    Batch = namedtuple("Batch", "image")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, batch):
            assert batch.image.is_contiguous(memory_format=torch.channels_last)
            return self.conv(batch.image)

    net = use_channels_last(Net())
    assert net(Batch(torch.rand(2, 3, 8, 8))).shape == (2, 4, 6, 6)
