"""Training code run in Spark tasks by tests/spark/test_training.py (shipped by value)."""

import lightning.pytorch as pl
import torch

import nano
from nano import Trainer
from tests.compat import training_jobs
from tests.compat.training_jobs import two_layers


def data():
    return training_jobs.data(n=64, batch=8)


class Regressor(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = two_layers()

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def fit_with_trainer(module):
    """The same Trainer code a user runs on one machine; inside a rank it joins the job."""
    trainer = Trainer(num_processes=2, max_epochs=3, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, data())
    return {"world_size": trainer.world_size, "loss": float(trainer.callback_metrics["loss"]),
            "threads": torch.get_num_threads()}


@nano.nano(num_processes=2)
def loop(model, optimizer, loader, epochs=3):
    """A plain loop under @nano: DDP and a distributed sampler come from the decorator."""
    losses = []
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return {"world_size": torch.distributed.get_world_size(), "losses": losses}


def both_forms(module, model, optimizer):
    """A user's script with both forms, run once per rank: Trainer code, then a @nano loop."""
    fitted = fit_with_trainer(module)
    looped = loop(model, optimizer, data())
    return fitted, looped
