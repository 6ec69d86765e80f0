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


# Models whose arguments are structures, constants and defaults (the fresh-values tests).


class PairArg(nn.Module):
    """One argument that is a tuple of two tensors (BigDL-era models pass (x, hidden))."""

    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 3)

    def forward(self, pair):
        return self.l(pair[0]) * pair[1]


class ListAndDict(nn.Module):
    """A list of tensors and a dict of tensors, the second nested one level deeper."""

    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)

    def forward(self, parts, extras):
        h = self.l(parts[0] + parts[1] - parts[2])
        return {"h": h * extras["gain"], "bias": h + extras["more"][0]}


class KeywordOnly(nn.Module):
    """A keyword-only tensor and a keyword-only constant with a default."""

    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)

    def forward(self, x, *, mask, power: int = 1):
        return self.l(x) * mask ** power


class Defaults(nn.Module):
    """Optional tensor and number arguments with defaults, often left out of the sample."""

    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)

    def forward(self, x, bias=None, factor: float = 2.0, mode: str = "sum"):
        y = self.l(x) * factor
        if bias is not None:
            y = y + bias
        return y.sum(-1) if mode == "sum" else y.mean(-1)


class VarArgs(nn.Module):
    """``*args`` and ``**kwargs`` tensors."""

    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)

    def forward(self, *xs, **named):
        y = sum(self.l(x) for x in xs)
        return y * named["scale"] + named["shift"]


class DataDependentBranch(nn.Module):
    """``if x.sum() > 0``: a tracer records one branch only."""

    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 100


class ReturnsPythonInt(nn.Module):
    """Returns a Python number that depends on the input."""

    def forward(self, x):
        return x * 2, int(x.sum() > 0)


class ListPerRow(nn.Module):
    """Returns a list with one tensor per batch row: its length follows the batch."""

    def forward(self, x):
        return [row * 2 for row in x]


class SkipsFullMask(nn.Module):
    """Skips its mask when nothing is padded, as attention code often does: traced on a
    batch without padding, the graph would ignore every mask after it."""

    def forward(self, x, mask):
        if bool(mask.all()):
            return x.sum(1)
        return (x * mask.unsqueeze(-1)).sum(1)
