"""Tiny models and training functions the trainer tests run in worker processes."""

import json
import os

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from nano import TorchNano

LR = 0.1


def regression_data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, generator=g)
    return TensorDataset(x, 3 * x + 1)


def linear():
    torch.manual_seed(1)
    return torch.nn.Linear(1, 1)


def record_rank(out_dir):
    """Write this rank's cores and thread count to out_dir/rank<R>.json."""
    if out_dir is None:
        return
    rank = int(os.environ.get("RANK", "0"))
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"cpus": os.environ.get("NANO_INSTANCE_CPUS"), "threads": torch.get_num_threads(),
                   "affinity": sorted(os.sched_getaffinity(0))}, f)


def sgd_loop(model, optimizer, loader, epochs=2, out_dir=None):
    """A plain PyTorch loop: the same code runs bare, under @nano and inside TorchNano."""
    record_rank(out_dir)
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
    return {"rank": int(os.environ.get("RANK", "0"))}


class LoopNano(TorchNano):
    """TorchNano running sgd_loop with self.setup / self.backward."""

    def train(self, model, batch_size, out_dir=None, epochs=2):
        optimizer = torch.optim.SGD(model.parameters(), lr=LR)
        loader = DataLoader(regression_data(), batch_size=batch_size)
        model, optimizer, loader = self.setup(model, optimizer, loader)
        record_rank(out_dir)
        for _ in range(epochs):
            for x, y in loader:
                optimizer.zero_grad()
                self.backward(torch.nn.functional.mse_loss(model(x), y))
                optimizer.step()
        return self.world_size


class RegressionModule(pl.LightningModule):
    """1 -> 1 linear regression; its loader splits the data in order between ranks."""

    def __init__(self, batch_size, out_dir=None):
        super().__init__()
        self.lin = linear()
        self.batch_size, self.out_dir = batch_size, out_dir

    def forward(self, x):
        return self.lin(x)

    def train_dataloader(self):
        data = regression_data()
        sampler = None
        if torch.distributed.is_initialized():
            sampler = DistributedSampler(data, shuffle=False)
        return DataLoader(data, batch_size=self.batch_size, sampler=sampler)

    def on_train_start(self):
        record_rank(self.out_dir)

    def training_step(self, batch, i):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, i):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y), sync_dist=True)

    def test_step(self, batch, i):
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self(x), y), sync_dist=True)

    def predict_step(self, batch, i):
        return self(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
             enable_model_summary=False)
