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


# BigDL-Nano 2.4's exactness toys (its test_torch_nano.py and test_channels_last.py), written
# here from what they check: one weight, a loss whose gradient is known, exact equality.

class OneWeight(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(1, 1, bias=False)
        self.fc1.weight.data.fill_(1.0)

    def forward(self, x):
        return self.fc1(x)


def zeros_and_ones():
    """Four samples, two batches of two: x in {0, 1}, every target 0."""
    x = torch.tensor([[0.0], [0.0], [1.0], [1.0]])
    return DataLoader(TensorDataset(x, torch.zeros(4, 1)), batch_size=2, shuffle=False)


class ExactSteps(TorchNano):
    """Two epochs of SGD on the toy; returns the one weight (0.25 for BigDL's lr choice)."""

    def train(self, lr):
        model = OneWeight()
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        model, opt, loader = self.setup(model, opt, zeros_and_ones())
        for _ in range(2):
            for x, y in loader:
                opt.zero_grad()
                self.backward(torch.nn.functional.mse_loss(model(x), y))
                opt.step()
        return model.fc1.weight.item()


class StateDictRoundTrip(TorchNano):
    """One epoch, the weights and optimizer state loaded into the plain module and optimizer,
    set up again, one more epoch (BigDL's load_state_dict test)."""

    def train(self, lr):
        plain = OneWeight()
        plain_opt = torch.optim.SGD(plain.parameters(), lr=lr)
        raw = zeros_and_ones()

        def epoch(model, opt, loader):
            for x, y in loader:
                opt.zero_grad()
                self.backward(torch.nn.functional.mse_loss(model(x), y))
                opt.step()

        model, opt, loader = self.setup(plain, plain_opt, raw)
        epoch(model, opt, loader)
        plain.load_state_dict(model.state_dict())
        plain_opt.load_state_dict(opt.state_dict())
        model, opt, loader = self.setup(plain, plain_opt, raw)
        epoch(model, opt, loader)
        return model.fc1.weight.item()


class RampReadsMaxStep(TorchNano):
    """BigDL's auto-lr test: reads ``optimizer.max_step`` and checks every step's weight
    against lr x (1 + (N - 1) x step / max_step)."""

    def train(self, lr, steps=6):
        model = OneWeight()
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        model, opt, loader = self.setup(model, opt, zeros_and_ones())
        max_step = opt.max_step
        expected, ratio, errors = 1.0, 1.0, []
        for step in range(steps):
            for x, y in loader:
                opt.zero_grad()
                self.backward(torch.nn.functional.mse_loss(model(x), y))
                opt.step()
            # each rank's one batch holds x = 0 and x = 1: the gradient is the weight itself
            expected = expected - expected * lr * ratio
            errors.append(abs(model.fc1.weight.item() - expected) / expected)
            ratio = (self.num_processes - 1) * min(step + 1, max_step) / max_step + 1
        return max_step, max(errors)


class ConvOneStep(torch.nn.Module):
    """BigDL's channels_last toy: a 1x2 convolution from 2 channels, weights 1."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(2, 1, (1, 2), bias=False)
        self.conv1.weight.data.fill_(1.0)

    def forward(self, x):
        return torch.flatten(self.conv1(x), 1)


def conv_toy_data():
    x = torch.tensor([[[[1.0, 0]], [[1, 0]]], [[[1, 0]], [[2, 0]]],
                      [[[0, 3]], [[1, 0]]], [[[1, 1]], [[2, 1]]]])
    y = torch.tensor([[0.0], [1.0], [0.0], [1.0]])
    return DataLoader(TensorDataset(x, y), batch_size=4, shuffle=False)


# one SGD step at lr 0.25 on the whole batch (BigDL worked the gradients out by hand)
CONV_TOY_RESULT = torch.tensor([[[[0.0, -1.0]], [[-1.25, 0.5]]]])


class ConvToyNano(TorchNano):
    def train(self):
        model = ConvOneStep()
        opt = torch.optim.SGD(model.parameters(), lr=0.25)
        model, opt, loader = self.setup(model, opt, conv_toy_data())
        for x, y in loader:
            opt.zero_grad()
            self.backward(torch.nn.functional.mse_loss(model(x), y))
            opt.step()
        return model.conv1.weight.detach().clone().contiguous()


class LitSeesLr(pl.LightningModule):
    """Records the lr its training_step sees (BigDL's tests read the optimizer's lr there), and
    with ``scheduler`` the scheduler's base_lrs at each epoch start (BigDL's test_scale_lr)."""

    def __init__(self, scheduler=False):
        super().__init__()
        self.net = two_layers()
        self.scheduler = scheduler
        self.register_buffer("seen", torch.zeros(64))
        self.register_buffer("base", torch.zeros(4))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def on_train_epoch_start(self):
        if self.scheduler:
            self.base[self.current_epoch] = self.lr_schedulers().base_lrs[0]

    def training_step(self, batch, _):
        self.seen[self.steps] = self.optimizers().param_groups[0]["lr"]
        self.steps += 1
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        if not self.scheduler:
            return opt
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]
