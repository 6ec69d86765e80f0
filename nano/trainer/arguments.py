"""Find the models, optimizers and data loaders a training function was given, wherever they sit.

Looks at positional and keyword arguments and one level into lists, tuples and
dicts. The traversal order is fixed, so the caller and a worker that received a
pickled copy of the same arguments find the same objects at the same positions.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data import DataLoader


def _items(args: tuple, kwargs: dict) -> list:
    found = []
    for value in list(args) + [kwargs[k] for k in sorted(kwargs)]:
        found.append(value)
        if isinstance(value, (list, tuple)):
            found.extend(value)
        elif isinstance(value, dict):
            found.extend(value[k] for k in value)
    return found


def find(kind: type, args: tuple, kwargs: dict) -> list:
    """Every distinct object of ``kind`` among the arguments, in traversal order."""
    seen, out = set(), []
    for value in _items(args, kwargs):
        if isinstance(value, kind) and id(value) not in seen:
            seen.add(id(value))
            out.append(value)
    return out


def find_modules(args: tuple, kwargs: dict) -> list[torch.nn.Module]:
    return find(torch.nn.Module, args, kwargs)


def replace(args: tuple, kwargs: dict, swap: Callable[[Any], Any]) -> tuple[tuple, dict]:
    """Apply ``swap`` to every argument and to the members of list/tuple/dict arguments."""
    def one(value):
        if isinstance(value, (list, tuple)) and not isinstance(value, (torch.Tensor,)):
            items = [swap(v) for v in value]
            return type(value)(items) if not hasattr(value, "_fields") else type(value)(*items)
        if isinstance(value, dict):
            return type(value)((k, swap(v)) for k, v in value.items())
        return swap(value)
    return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}


def module_states(args: tuple, kwargs: dict) -> list[dict]:
    """The state dicts of every model among the arguments (moved to plain CPU tensors)."""
    return [{k: v.detach().cpu().contiguous() for k, v in m.state_dict().items()}
            for m in find_modules(args, kwargs)]


def state_outside_modules(args: tuple, kwargs: dict) -> str:
    """What trainable state among the arguments no ``nn.Module`` owns ("" if none): tensors
    an optimizer updates, or tensors that require grad. Ranks only keep modules in sync
    (DDP) and only modules' weights come back to the caller."""
    owned = {id(p) for m in find_modules(args, kwargs) for p in m.parameters()}
    for opt in find(torch.optim.Optimizer, args, kwargs):
        loose = [p for g in opt.param_groups for p in g["params"] if id(p) not in owned]
        if loose:
            return (f"{type(opt).__name__} updates {len(loose)} tensor(s) that belong to no "
                    f"nn.Module among the arguments (shape {tuple(loose[0].shape)})")
    for t in find(torch.Tensor, args, kwargs):
        if t.requires_grad and id(t) not in owned:
            return f"a tensor argument of shape {tuple(t.shape)} requires grad"
    return ""


def load_module_states(args: tuple, kwargs: dict, states: list[dict]) -> None:
    """Copy ``states`` (from :func:`module_states` on a copy of these arguments) into the models."""
    modules = find_modules(args, kwargs)
    if len(modules) != len(states):
        raise RuntimeError(f"found {len(modules)} models in the arguments but the workers "
                           f"returned {len(states)}; were arguments changed during training?")
    for module, state in zip(modules, states):
        module.load_state_dict(state)


__all__ = ["DataLoader", "find", "find_modules", "load_module_states", "module_states", "replace",
           "state_outside_modules"]
