"""A training script for the multi-node tests: unchanged nano code, run under bigdl-nano-run.

Usage: python multinode_job.py OUT_DIR {trainer|nano} [--kill-rank R]
Each rank writes OUT_DIR/rank<global rank>.json with the world size, its CPUs,
its thread count and the final parameters. With --kill-rank R, rank R of the
first attempt writes its pid to OUT_DIR/victim.pid and waits to be killed.
"""

import json
import os
import sys
import time

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from nano import Trainer, nano

OUT, MODE = sys.argv[1], sys.argv[2]
KILL_RANK = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--kill-rank" else None


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    return DataLoader(TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [3.0], [0.5]])),
                      batch_size=8)


def maybe_wait_to_be_killed(step):
    if (KILL_RANK is not None and step == 3 and int(os.environ["RANK"]) == KILL_RANK
            and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"):
        with open(os.path.join(OUT, "victim.pid"), "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)


def report(params):
    rank = torch.distributed.get_rank()
    with open(os.path.join(OUT, f"rank{rank}.json"), "w") as f:
        json.dump({"world_size": torch.distributed.get_world_size(),
                   "cpus": os.environ["NANO_INSTANCE_CPUS"],
                   "affinity": sorted(os.sched_getaffinity(0)), "threads": torch.get_num_threads(),
                   "omp": os.environ.get("OMP_NUM_THREADS"),
                   "restarts": os.environ.get("TORCHELASTIC_RESTART_COUNT"),
                   "params": [p.detach().flatten().tolist() for p in params]}, f)


class Regression(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.lin = torch.nn.Linear(4, 1)

    def training_step(self, batch, i):
        maybe_wait_to_be_killed(i)
        x, y = batch
        return torch.nn.functional.mse_loss(self.lin(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def on_train_end(self):
        report(self.parameters())


@nano()
def train(model, optimizer, loader):
    for step, (x, y) in enumerate(loader):
        maybe_wait_to_be_killed(step)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    report(model.parameters())


if MODE == "trainer":
    Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False).fit(Regression(), data())
else:
    torch.manual_seed(1)
    model = torch.nn.Linear(4, 1)
    train(model, torch.optim.SGD(model.parameters(), lr=0.05), data())
