"""Judging a candidate's outputs, without a metric, by what each output means.

A max-abs relative error is a poor judge of a classifier or an embedding: a bf16
classifier whose largest logit error is 5% may still pick the same class for 97% of
inputs, and an embedding is used through its direction. So each output tensor is judged
by its kind:

- classifier logits (2-D, last dim >= 2) and token logits (3-D whose last dim is the
  model's vocabulary): ``top1``, the share of rows (tokens) whose top-1 class is the
  original's (top-5 reported too);
- embeddings (rows of unit length, or outputs named like ``last_hidden_state``,
  ``pooler_output``, ``embeddings``; and 3-D hidden states): ``cosine``, the smallest
  cosine similarity between a candidate's vector and the original's;
- anything else: ``rel_l2``, ||candidate - original|| / ||original||;
- integer outputs (ids, argmax): ``match``, the share of values that are the original's.

Each judgement's error is 0 for a perfect match: 1 - agreement, 1 - smallest cosine,
the relative L2 error, 1 - match share. TOLERANCE holds the default largest error per
judgement and precision (calibrated on the zoo, see ``benchmarks/zoo.py``); a user's
``accuracy_criterion`` without a metric replaces it for every output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import torch

from nano.errors import NanoValueError

JUDGEMENTS = ("top1", "cosine", "rel_l2")

# The largest error each judgement accepts by default, per precision (README, "How Nano
# judges accuracy", has the zoo measurements behind these figures).
TOLERANCE = {
    "top1": {"fp32": 0.01, "bf16": 0.03, "fp16": 0.03, "int8": 0.05},
    "match": {"fp32": 0.0, "bf16": 0.01, "fp16": 0.01, "int8": 0.05},
    "cosine": {"fp32": 1e-4, "bf16": 0.01, "fp16": 0.01, "int8": 0.02},
    "rel_l2": {"fp32": 1e-3, "bf16": 0.03, "fp16": 0.03, "int8": 0.1},
}

# Output names (dict keys, ModelOutput fields) that say what an output is.
LOGIT_NAMES = ("logits", "scores")
EMBEDDING_NAMES = ("hidden_state", "pooler_output", "embed", "features")


@dataclass(frozen=True)
class LeafVerdict:
    """How one output tensor was judged: ``error`` is 0 for a perfect match."""

    name: str
    kind: str
    error: float
    rows: int
    top5: Optional[float] = None  # for top1: share of rows whose original class is in the top 5

    def score(self) -> float:
        """What a person reads: the agreement or cosine itself, or the relative L2 error."""
        return self.error if self.kind == "rel_l2" else 1.0 - self.error

    def describe(self) -> str:
        label = {"top1": "top-1", "cosine": "cos", "rel_l2": "rel-L2", "match": "match"}[self.kind]
        value = f"{self.error:.1e}" if self.kind == "rel_l2" else f"{self.score():.4f}"
        return f"{label} {value}"


@dataclass(frozen=True)
class Verdict:
    """Every output tensor's judgement, in output order."""

    leaves: tuple = field(default_factory=tuple)

    def passes(self, precision: str, limit: Optional[float] = None) -> bool:
        """Every output within ``limit`` (the user's largest error), else within its
        judgement's default tolerance for ``precision``."""
        return all(leaf.error <= (_default(leaf.kind, precision) if limit is None else limit)
                   + 1e-12 for leaf in self.leaves)

    def worst(self, precision: str) -> Optional[LeafVerdict]:
        """The output furthest from passing (error over its tolerance)."""
        if not self.leaves:
            return None
        return max(self.leaves, key=lambda v: _over(v, precision))

    def miss(self, precision: str) -> float:
        """How many times its default tolerance the furthest output is off (1: the edge)."""
        worst = self.worst(precision)
        return 0.0 if worst is None else _over(worst, precision)

    def error(self, precision: str) -> Optional[float]:
        worst = self.worst(precision)
        return None if worst is None else worst.error

    def describe(self, precision: str) -> str:
        worst = self.worst(precision)
        return "-" if worst is None else worst.describe()

    def shortfall(self, precision: str) -> Optional[str]:
        """Why the outputs fail the default judgement for ``precision``, or None."""
        if self.passes(precision):
            return None
        worst = self.worst(precision)
        assert worst is not None
        allowed = _default(worst.kind, precision)
        bound = (f"> {allowed:g}" if worst.kind == "rel_l2"
                 else f"< {1 - allowed:g}")
        where = "" if worst.name == "output" else f" ({worst.name})"
        return (f"outputs drift: {worst.describe()}{where} {bound} allowed for {precision} "
                f"over {worst.rows} rows")


def check_judgement_name(accuracy: Optional[str]) -> None:
    """A NanoValueError unless ``accuracy`` names a judgement (or is None)."""
    if accuracy is not None and accuracy not in JUDGEMENTS:
        raise NanoValueError(f"accuracy must be one of {', '.join(map(repr, JUDGEMENTS))} "
                             f"(or None: each output judged by its kind), got {accuracy!r}")


def _default(kind: str, precision: str) -> float:
    return TOLERANCE[kind].get(precision, TOLERANCE[kind]["bf16"])


def _over(leaf: LeafVerdict, precision: str) -> float:
    """``leaf``'s error as a multiple of its default tolerance for ``precision``."""
    return leaf.error / max(_default(leaf.kind, precision), 1e-9)


@dataclass(frozen=True)
class OutputJudgement:
    """Which judgement each output tensor of a model gets (decided once, from the
    original's outputs), and the judging itself."""

    names: tuple
    kinds: tuple
    chosen: Optional[str] = None  # the judgement the user named, if any

    @staticmethod
    def decide(model: torch.nn.Module, reference: Any, accuracy: Optional[str] = None
               ) -> "OutputJudgement":
        """From one output of the original; ``accuracy`` names the judgement for every
        floating output it applies to (None: by each output's kind)."""
        check_judgement_name(accuracy)
        vocab = _vocabulary_sizes(model)
        names, kinds = [], []
        for name, t in named_leaves(reference):
            names.append(name)
            kinds.append(_kind(name, t, vocab, accuracy))
        return OutputJudgement(tuple(names), tuple(kinds), accuracy)

    def judge(self, outputs: list, references: list) -> Verdict:
        """Compare a candidate's ``outputs`` with the original's ``references`` (one per
        held-out sample)."""
        per_leaf: list[list] = [[] for _ in self.kinds]
        for out, ref in zip(outputs, references, strict=True):
            got = [t for _, t in named_leaves(out)]
            want = [t for _, t in named_leaves(ref)]
            if len(got) != len(want) or len(want) != len(self.kinds):
                return Verdict(tuple(LeafVerdict(n, k, math.inf, 0)
                                     for n, k in zip(self.names, self.kinds)))
            for i, (a, b) in enumerate(zip(got, want)):
                per_leaf[i].append((a, b))
        return Verdict(tuple(_judge_leaf(n, k, pairs)
                             for n, k, pairs in zip(self.names, self.kinds, per_leaf)))

    def describe(self) -> str:
        """Which judgement each output gets and why, e.g. "logits: top1 (by output kind)"."""
        how = f"accuracy={self.chosen!r}" if self.chosen else "by output kind"
        return ", ".join(f"{n}: {k}" for n, k in zip(self.names, self.kinds)) + f" ({how})"


def named_leaves(value: Any, name: str = "output") -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` for each tensor of an output, in ``flatten_output`` order."""
    if isinstance(value, torch.Tensor):
        yield name, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from named_leaves(v, str(k) if name == "output" else f"{name}.{k}")
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from named_leaves(v, f"{name}[{i}]")


def _vocabulary_sizes(model: torch.nn.Module) -> set:
    return {m.num_embeddings for m in model.modules()
            if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag))}


def _kind(name: str, t: torch.Tensor, vocab: set, accuracy: Optional[str]) -> str:
    if not t.is_floating_point():
        return "match"
    classes = t.shape[-1] if t.dim() >= 2 else 1
    if accuracy is not None:
        return accuracy if accuracy == "rel_l2" or classes >= 2 else "rel_l2"
    if classes < 2 or t.numel() == 0:
        return "rel_l2"
    last = name.lower().rsplit(".", 1)[-1]
    if any(key in last for key in LOGIT_NAMES) and t.dim() in (2, 3):
        return "top1"
    if any(key in last for key in EMBEDDING_NAMES):
        return "cosine"
    if t.dim() == 2:
        norms = t.float().norm(dim=-1)
        return "cosine" if bool(((norms - 1).abs() < 1e-3).all()) else "top1"
    if t.dim() == 3:  # token logits over the model's vocabulary, else per-token vectors
        return "top1" if t.shape[-1] in vocab else "cosine"
    return "rel_l2"


def _judge_leaf(name: str, kind: str, pairs: list) -> LeafVerdict:
    if any(a.shape != b.shape for a, b in pairs):
        return LeafVerdict(name, kind, math.inf, 0)
    if kind == "match":
        total = sum(b.numel() for _, b in pairs)
        wrong = sum(int((a != b).sum()) for a, b in pairs)
        return LeafVerdict(name, kind, wrong / max(total, 1), total)
    rows_a = [a.float().reshape(-1, a.shape[-1]) if a.dim() else a.float().reshape(1, 1)
              for a, _ in pairs]
    rows_b = [b.float().reshape(-1, b.shape[-1]) if b.dim() else b.float().reshape(1, 1)
              for _, b in pairs]
    a, b = torch.cat(rows_a), torch.cat(rows_b)
    finite = torch.isfinite(b).all(-1)  # rows the original itself gives no number for: skipped
    if not torch.isfinite(a[finite]).all():
        return LeafVerdict(name, kind, math.inf, a.shape[0])
    a, b = a[finite], b[finite]
    if b.numel() == 0:
        return LeafVerdict(name, kind, 0.0, 0)
    if kind == "top1":
        want = b.argmax(-1)
        agree = (a.argmax(-1) == want).float().mean().item()
        k = min(5, a.shape[-1])
        top5 = (a.topk(k, dim=-1).indices == want[:, None]).any(-1).float().mean().item()
        return LeafVerdict(name, kind, 1.0 - agree, a.shape[0], top5)
    if kind == "cosine":
        cos = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1, eps=1e-12)
        both_zero = (a.abs().sum(-1) == 0) & (b.abs().sum(-1) == 0)
        cos = torch.where(both_zero, torch.ones_like(cos), cos)
        return LeafVerdict(name, kind, max(0.0, 1.0 - cos.min().item()), a.shape[0])
    diff = (a.double() - b.double()).norm().item()
    scale = b.double().norm().item()
    error = diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)
    return LeafVerdict(name, kind, error, a.shape[0])


@dataclass(frozen=True)
class HeldOut:
    """Held-out inputs ``(args, kwargs)``, the original's outputs on them and how they are
    judged: what a quantizer that measures which layers cost accuracy builds against.
    With the user's ``metric(pred, target)``, its ``targets`` and criterion (``max_drop``
    of kind ``drop_type``, "relative" or "absolute", higher is better) judge instead."""

    samples: list
    references: list
    judgement: OutputJudgement
    metric: Optional[Callable] = None
    targets: Optional[list] = None
    max_drop: float = 0.01
    drop_type: str = "relative"

    def score(self, outputs: list, precision: str = "int8", indexes: Optional[list] = None
              ) -> float:
        """1 for outputs equal to the original's, 0 at the edge of the default tolerance for
        ``precision``, below 0 past it: 1 - the largest error/tolerance over the outputs.
        ``indexes``: which samples ``outputs`` answer (default: all, in order)."""
        refs = self.references if indexes is None else [self.references[i] for i in indexes]
        return 1.0 - self.judgement.judge(outputs, refs).miss(precision)

    def accepts(self, outputs: list) -> bool:
        """Whether a candidate's ``outputs`` (one per held-out sample) are within what is
        allowed: the metric's criterion where there is a metric, else the default INT8
        judgement."""
        metric = self.metric
        if metric is None:
            return self.score(outputs) >= 0
        from nano.search.criterion import Criterion
        from nano.runtimes.structure import concat_values

        def value(preds: list) -> float:
            got = metric(concat_values(preds), concat_values(self.targets or []))
            return float(got.item() if isinstance(got, torch.Tensor) else got)

        return Criterion(self.drop_type, self.max_drop).passes(value(self.references),
                                                               value(outputs))
