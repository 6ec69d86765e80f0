"""Small models the inference tests use (defined here, so a fresh process does not have them)."""

import os
import time

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Conv + BatchNorm + residual for 1x8x8 digit images, 10 classes."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.head = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)) + y)
        y = nn.functional.max_pool2d(y, 2)
        return self.head(y.flatten(1))


class TwoInput(nn.Module):
    """Two tensor inputs, the second usually passed by keyword, and a tuple output."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(3, 8)

    def forward(self, x, extra=None, scale: float = 2.0):
        h = self.a(x) + self.b(extra)
        return h * scale, h.sum(-1)


class Unexportable(nn.Module):
    """Uses an op with no ONNX or OpenVINO conversion (an eigen solver)."""

    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)

    def forward(self, x):
        y = self.l(x)
        return torch.linalg.eigvalsh(y.unsqueeze(-1) @ y.unsqueeze(-2))


class Treacherous(nn.Module):
    """Aborts the process while being compiled or exported, hangs while being jit-traced."""

    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 2)

    def forward(self, x):
        if torch.jit.is_tracing():
            time.sleep(3600)
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            os.abort()
        return self.l(x)


class DtypeSpy(nn.Module):
    """Records the dtype its linear layer produced (to see autocast really active)."""

    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)
        self.seen = []

    def forward(self, x):
        y = self.l(x)
        self.seen.append((y.dtype, x.is_contiguous(memory_format=torch.channels_last)
                          if x.dim() == 4 else None))
        return y.float()
