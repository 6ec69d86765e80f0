"""Training code in BigDL-Nano's forms, run by tests/compat/test_training_forms.py in worker
processes (so it lives in an importable module)."""

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from nano import TorchNano
from nano.trainer import lr_scaling


def data(n=32, batch=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=g)
    return DataLoader(TensorDataset(x, x @ torch.tensor([[2.0], [-1.0]]) + 0.5), batch_size=batch)


def two_layers():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Linear(4, 1))


def loop_with_loss_module(model, optimizer, loader, loss_fn, epochs=3):
    """A plain loop whose loss is an nn.Module without parameters."""
    losses = []
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses


class TwoOptimizers(TorchNano):
    """setup(model, [opt1, opt2], loader) and a second model set up on its own."""

    def train(self, model, loader, critic):
        opt1 = torch.optim.SGD(model[0].parameters(), lr=0.05)
        opt2 = torch.optim.SGD(model[1].parameters(), lr=0.05)
        model, optimizers, loader = self.setup(model, [opt1, opt2], loader)
        assert isinstance(optimizers, list) and len(optimizers) == 2
        critic_opt = torch.optim.SGD(critic.parameters(), lr=0.05)
        critic, critic_opt = self.setup(critic, critic_opt)
        for x, y in loader:
            for opt in optimizers + [critic_opt]:
                opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y) + critic(x).pow(2).mean()
            self.backward(loss)
            for opt in optimizers + [critic_opt]:
                opt.step()
        return self.num_processes


class WarmupNano(TorchNano):
    """Records the lr each optimizer step really uses."""

    def train(self, model, loader, epochs=2):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        model, opt_ready, loader = self.setup(model, opt, loader)
        seen = []
        # registered after Nano's scaling pre-hook, so it runs after it
        opt.register_step_pre_hook(lambda o, a, k: seen.append(round(o.param_groups[0]["lr"], 6)))
        for _ in range(epochs):
            for x, y in loader:
                opt_ready.zero_grad()
                self.backward(torch.nn.functional.mse_loss(model(x), y))
                opt_ready.step()
        scaling = lr_scaling(opt_ready)  # BigDL's tests read the warm-up length
        return seen, (scaling.warmup_steps, scaling.steps, scaling.factor)


class NoLoaderNano(TorchNano):
    def train(self, model):
        self.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))


class LitRegression(pl.LightningModule):
    """Records the lr its optimizer steps use (its post-hook, registered before Nano's
    hooks, runs before Nano's post-hook puts the unscaled lr back)."""

    def __init__(self):
        super().__init__()
        self.net = two_layers()
        # buffers come back from the ranks with the weights
        self.register_buffer("lrs", torch.zeros(16))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def _record(self, optimizer):
        self.lrs[self.steps] = optimizer.param_groups[0]["lr"]
        self.steps += 1

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        opt.register_step_post_hook(lambda o, a, k: self._record(o))
        return opt
