"""Map a model's calling convention and output structure to flat tensor lists and back.

Graph runtimes (ONNX Runtime, OpenVINO, TorchScript) take and return flat lists
of tensors. ``InputSignature`` binds ``model(*args, **kwargs)`` to named tensor
inputs in ``forward``'s parameter order; an output *spec* (plain JSON) records
the nesting of tuples, lists, dicts and ModelOutput-like classes so results come
back exactly as the original module returned them, even in a process that never
imported the original class.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from nano.errors import NanoTypeError, NanoValueError

# Output specs --------------------------------------------------------------------


def _class_path(obj) -> str:
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def _import_class(path: Optional[str]):
    if not path:
        return None
    module, _, qualname = path.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj
    except Exception:  # the class may not exist where the model is loaded: fall back
        return None


def output_spec(value: Any) -> dict:
    """Describe the nesting of ``value`` (tensors inside tuples/lists/dicts) as JSON-able data."""
    if isinstance(value, torch.Tensor):
        return {"t": "tensor", "dtype": str(value.dtype).replace("torch.", "")}
    if isinstance(value, dict):
        cls = None if type(value) is dict else _class_path(value)
        return {"t": "dict", "cls": cls, "keys": list(value.keys()),
                "items": [output_spec(v) for v in value.values()]}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {"t": "namedtuple", "cls": _class_path(value), "keys": list(value._fields),
                "items": [output_spec(v) for v in value]}
    if isinstance(value, (tuple, list)):
        return {"t": type(value).__name__ if type(value) in (tuple, list) else "tuple",
                "items": [output_spec(v) for v in value]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"t": "const", "value": value}
    raise NanoTypeError(f"unsupported output type {type(value).__name__}: Nano handles tensors "
                        f"nested in tuples, lists and dicts")


def flatten_output(value: Any) -> list[torch.Tensor]:
    """The tensors of an output, depth first, in the order ``output_spec`` lists them."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in flatten_output(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in flatten_output(v)]
    return []


def unflatten_output(spec: dict, tensors: Sequence[torch.Tensor], cast: bool = True) -> Any:
    """Rebuild the original output structure from flat tensors (inverse of flatten_output).

    With ``cast``, floating tensors are cast back to the dtype the original
    returned (a bf16 run still hands back float32 if the original did).
    """
    it = iter(tensors)

    def build(s):
        kind = s["t"]
        if kind == "tensor":
            t = next(it)
            if not isinstance(t, torch.Tensor):
                t = torch.as_tensor(t)
            want = getattr(torch, s["dtype"], None)
            if cast and want is not None and t.dtype != want and t.is_floating_point():
                t = t.to(want)
            return t
        if kind == "const":
            return s["value"]
        items = [build(x) for x in s["items"]]
        if kind in ("dict", "namedtuple"):
            cls = _import_class(s.get("cls"))
            data = dict(zip(s["keys"], items))
            if kind == "namedtuple":
                return cls(*items) if cls is not None else tuple(items)
            if cls is not None:
                try:
                    return cls(**data)
                except Exception:
                    return data
            return data
        return list(items) if kind == "list" else tuple(items)

    result = build(spec)
    leftover = next(it, None)
    if leftover is not None:
        raise RuntimeError("runtime returned more outputs than the original model")
    return result


# Input signatures ----------------------------------------------------------------
#
# An input spec describes one argument's value the way output specs describe outputs:
# {"t": "tensor", "dtype", "ndim"}, {"t": "tuple"|"list", "items"}, {"t": "namedtuple",
# "cls", "keys", "items"}, {"t": "dict", "keys", "items"}, or {"t": "const", "value"} for
# anything else. Every tensor leaf, at any depth, becomes one graph input; everything else
# is fixed at trace time and checked on every call, so no argument is ever baked silently.

_KINDS = {inspect.Parameter.POSITIONAL_ONLY: "positional_only",
          inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
          inspect.Parameter.VAR_POSITIONAL: "var_positional",
          inspect.Parameter.KEYWORD_ONLY: "keyword_only",
          inspect.Parameter.VAR_KEYWORD: "var_keyword"}
_JSON_SCALARS = (bool, int, float, str, type(None))


def input_spec(value: Any) -> dict:
    """Describe an argument: its nesting, its tensors' dtype and rank, its constants."""
    if isinstance(value, torch.Tensor):
        return {"t": "tensor", "dtype": str(value.dtype).replace("torch.", ""),
                "ndim": value.dim()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {"t": "namedtuple", "cls": _class_path(value), "keys": list(value._fields),
                "items": [input_spec(v) for v in value]}
    if isinstance(value, (tuple, list)):
        return {"t": "list" if isinstance(value, list) else "tuple",
                "items": [input_spec(v) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"t": "dict", "keys": list(value), "items": [input_spec(v) for v in value.values()]}
    spec = {"t": "const", "value": _constant(value)}
    if isinstance(spec["value"], dict):
        spec["obj"] = value  # in this process the object itself; saved by its repr only
    return spec


def _json_spec(spec: dict) -> dict:
    """``spec`` without the live objects ``input_spec`` keeps beside their repr."""
    out = {k: v for k, v in spec.items() if k != "obj"}
    if "items" in out:
        out["items"] = [_json_spec(s) for s in out["items"]]
    return out


def _constant(value: Any) -> Any:
    """A JSON-able stand-in: scalars as they are, anything else by its repr."""
    return value if isinstance(value, _JSON_SCALARS) else {"repr": repr(value)}


def _shown(constant: Any) -> str:
    return constant["repr"] if isinstance(constant, dict) else repr(constant)


def _shown_value(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return _shown(_constant(value))


def has_tensors(spec: dict) -> bool:
    """Whether a spec holds at least one tensor leaf."""
    return spec["t"] == "tensor" or any(has_tensors(s) for s in spec.get("items", ()))


def leaf_names(spec: dict, prefix: str) -> list[str]:
    """A name per tensor leaf of ``spec``: ``prefix`` joined with dict keys or positions."""
    if spec["t"] == "tensor":
        return [prefix]
    if spec["t"] in ("dict", "namedtuple"):
        return [n for k, s in zip(spec["keys"], spec["items"])
                for n in leaf_names(s, f"{prefix}_{k}")]
    return [n for i, s in enumerate(spec.get("items", ())) for n in leaf_names(s, f"{prefix}_{i}")]


def _sanitize(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


@dataclass
class InputSignature:
    """How ``model(*args, **kwargs)`` maps onto a flat list of tensor inputs.

    ``params`` lists forward's parameters as ``[name, kind]`` pairs; ``specs``
    holds the input spec of every parameter the sample bound, defaults
    included (``defaulted`` names those the sample left out), a ``*args``
    parameter as a tuple and a ``**kwargs`` parameter as a dict. Tensor leaves
    at any depth are the flat inputs, named in ``tensor_names``; everything
    else is a constant of the traced graph that every call is checked against.
    """

    params: list
    specs: dict
    defaulted: list = field(default_factory=list)
    tensor_names: list = field(default_factory=list)

    def __post_init__(self):
        if not self.tensor_names:
            names, seen = [], set()
            for _, leaf in self._leaves():
                leaf = base = _sanitize(leaf)
                i = 1
                while leaf in seen:
                    leaf, i = f"{base}_{i}", i + 1
                seen.add(leaf)
                names.append(leaf)
            self.tensor_names = names

    def _leaves(self):
        """``(owner, path name)`` of each tensor leaf in flat order; the owner is the forward
        parameter, or for ``**kwargs`` the key, which is also the leaf's name: those are the
        inputs' real names."""
        for name, kind in self.params:
            spec = self.specs[name]
            if kind == "var_keyword":
                for key, sub in zip(spec["keys"], spec["items"]):
                    yield from ((key, leaf) for leaf in leaf_names(sub, key))
            else:
                yield from ((name, leaf) for leaf in leaf_names(spec, name))

    def tensor_dtypes(self) -> list[str]:
        """The dtype name of each tensor leaf, in flat order (as ``tensor_names``)."""
        def walk(spec: dict):
            if spec["t"] == "tensor":
                yield spec["dtype"]
            for sub in spec.get("items", ()):
                yield from walk(sub)
        return [d for name, _ in self.params for d in walk(self.specs[name])]

    @staticmethod
    def from_sample(model: torch.nn.Module, args: tuple, kwargs: dict) -> "InputSignature":
        """Bind a sample call to ``model.forward``'s parameters, defaults included."""
        try:
            sig = inspect.signature(model.forward)
        except (TypeError, ValueError):  # a builtin or C++ forward: take inputs positionally
            sig = inspect.Signature([inspect.Parameter("inputs", inspect.Parameter.VAR_POSITIONAL)])
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as e:
            raise NanoTypeError(f"input_sample does not fit forward{sig}: {e}") from None
        given = set(bound.arguments)
        bound.apply_defaults()
        params = [[name, _KINDS[p.kind]] for name, p in sig.parameters.items()]
        specs = {name: input_spec(value) for name, value in bound.arguments.items()}
        defaulted = [name for name in bound.arguments if name not in given]
        for name in defaulted:
            if has_tensors(specs[name]):  # a tensor default is not an input the user gave
                specs[name] = {"t": "const", "value": {"repr": "<default tensor>"},
                               "obj": bound.arguments[name]}
        return InputSignature(params, specs, defaulted)

    def _bind(self, args: tuple, kwargs: dict) -> dict:
        """Map a call's arguments to parameter names the way Python would."""
        named: dict = {}
        positional = [n for n, k in self.params if k in ("positional_only", "positional")]
        var_pos = next((n for n, k in self.params if k == "var_positional"), None)
        var_kw = next((n for n, k in self.params if k == "var_keyword"), None)
        keywordable = [n for n, k in self.params if k in ("positional", "keyword_only")]
        if len(args) > len(positional) and var_pos is None:
            raise NanoTypeError(f"the model takes {len(positional)} positional input(s) "
                                f"({', '.join(positional)}) but {len(args)} were given")
        named.update(zip(positional, args))
        if var_pos is not None:
            named[var_pos] = tuple(args[len(positional):])
        extra = {}
        for name, value in kwargs.items():
            if name in named and name != var_pos:
                raise NanoTypeError(f"got multiple values for input {name!r}")
            if name in keywordable:
                named[name] = value
            elif var_kw is not None:
                extra[name] = value
            else:
                raise NanoTypeError(f"unexpected input {name!r}; the model takes "
                                    f"{', '.join(n for n, _ in self.params)}")
        if var_kw is not None:
            named[var_kw] = extra
        return named

    def flatten(self, args: tuple, kwargs: dict) -> list[torch.Tensor]:
        """The call's tensors in ``tensor_names`` order, after checking that everything
        else (structure, constants, defaults) is what the model was traced with."""
        named = self._bind(args, kwargs)
        flat: list = []
        for name, _ in self.params:  # every parameter is bound: defaults were applied
            spec = self.specs[name]
            if name not in named:
                if has_tensors(spec):
                    raise NanoTypeError(f"missing input(s) {name!r}; the model was traced with "
                                        f"{', '.join(self.tensor_names)}")
                continue  # its traced (or default) constant value applies
            _match(spec, named[name], name, flat, name in self.defaulted)
        return flat

    def rebuild(self, flat: Sequence[torch.Tensor]) -> tuple[tuple, dict]:
        """Inverse of flatten: the ``(args, kwargs)`` to call the original module with.

        Parameters the sample left to their defaults are left out, as the user's call left
        them out (after such a gap, given parameters go by keyword). Passing every default
        positionally broke wrappers that add a keyword themselves: transformers' BERT
        answered "got multiple values for argument 'use_cache'"."""
        it = iter(flat)
        values = {name: _build(self.specs[name], it) for name, _ in self.params}
        var_pos = next((n for n, k in self.params if k == "var_positional"), None)
        # positional-only parameters, and all of them before a non-empty *args, must go by
        # position: up to the last one that has to, defaults included
        must = [i for i, (name, kind) in enumerate(self.params)
                if kind == "positional_only" and name not in self.defaulted
                or kind in ("positional_only", "positional") and var_pos and values[var_pos]]
        last = max(must, default=-1)
        args: list = []
        kwargs: dict = {}
        by_position = True
        for i, (name, kind) in enumerate(self.params):
            value = values[name]
            if kind == "var_positional":
                args.extend(value)
            elif kind == "var_keyword":
                kwargs.update(value)
            elif i <= last:
                args.append(value)
            elif name in self.defaulted:
                by_position = False
            elif kind in ("positional_only", "positional") and by_position:
                args.append(value)
            else:
                kwargs[name] = value
        return tuple(args), kwargs

    def tensor_owners(self) -> list[str]:
        """For each tensor leaf, the forward parameter (or ``**kwargs`` key) it belongs to."""
        return [owner for owner, _ in self._leaves()]

    def to_json(self) -> dict:
        return {"params": self.params,
                "specs": {k: _json_spec(s) for k, s in self.specs.items()},
                "defaulted": self.defaulted,
                "tensor_names": self.tensor_names}

    @staticmethod
    def from_json(data: dict) -> "InputSignature":
        return InputSignature([list(p) for p in data["params"]], dict(data["specs"]),
                              list(data.get("defaulted", [])), list(data["tensor_names"]))


def _match(spec: dict, value: Any, path: str, flat: list, defaulted: bool) -> None:
    """Check ``value`` against ``spec`` and append its tensors to ``flat``; raise naming
    ``path`` and both values when the traced model cannot serve it."""
    kind = spec["t"]
    if kind == "tensor":
        if not isinstance(value, torch.Tensor):
            raise NanoTypeError(f"input {path!r} must be a tensor (the model was traced with one), "
                                f"got {type(value).__name__}")
        if value.dim() != spec["ndim"]:
            raise NanoValueError(f"input {path!r} was traced with {spec['ndim']} dimension(s), got "
                                 f"shape {tuple(value.shape)}")
        want = str(value.dtype).replace("torch.", "")
        if want != spec["dtype"]:
            raise NanoTypeError(f"input {path!r} was traced as {spec['dtype']}, got {want}; pass "
                                f"{spec['dtype']} (e.g. .to(torch.{spec['dtype']}))")
        flat.append(value)
        return
    if kind == "const":
        if not _same_constant(value, spec["value"]):
            was = _shown(spec["value"]) + (" (its default)" if defaulted else "")
            raise NanoValueError(f"input {path!r} was {was} when the model was traced and is fixed "
                                 f"in the traced graph; got {_shown_value(value)}. Trace again "
                                 f"with that value, or pass it as a tensor to make it an input")
        return
    if kind in ("dict",):
        if not isinstance(value, dict) or list(value) != spec["keys"]:
            got = list(value) if isinstance(value, dict) else type(value).__name__
            raise NanoValueError(f"input {path!r} was a dict with keys {spec['keys']} when traced; "
                                 f"got {got}")
        for key, sub in zip(spec["keys"], spec["items"]):
            _match(sub, value[key], f"{path}[{key!r}]", flat, defaulted)
        return
    if not isinstance(value, (tuple, list)) or len(value) != len(spec["items"]):
        got = (f"{len(value)} items" if isinstance(value, (tuple, list))
               else type(value).__name__)
        raise NanoValueError(f"input {path!r} had {len(spec['items'])} items when traced (the "
                             f"number is fixed in the traced graph); got {got}")
    for i, (sub, item) in enumerate(zip(spec["items"], value)):
        _match(sub, item, f"{path}[{i}]", flat, defaulted)


def _build(spec: dict, tensors) -> Any:
    kind = spec["t"]
    if kind == "tensor":
        return next(tensors)
    if kind == "const":
        value = spec["value"]
        if isinstance(value, dict):
            if "obj" not in spec:
                raise NanoTypeError(f"the traced constant {value['repr']} exists only in the "
                                    f"process that traced the model")
            return spec["obj"]
        return value
    items = [_build(s, tensors) for s in spec["items"]]
    if kind == "dict":
        return dict(zip(spec["keys"], items))
    if kind == "namedtuple":
        cls = _import_class(spec.get("cls"))
        return cls(*items) if cls is not None else tuple(items)
    return items if kind == "list" else tuple(items)


def _same_constant(value: Any, traced: Any) -> bool:
    if isinstance(traced, dict):  # recorded by repr
        return repr(value) == traced["repr"]
    if type(value) is not type(traced) and not (
            isinstance(value, (int, float)) and isinstance(traced, (int, float))
            and not isinstance(value, bool) and not isinstance(traced, bool)):
        return False
    return value == traced


class FlatModule(torch.nn.Module):
    """Wrap a module so it takes flat tensors and returns a flat tuple (what exporters want)."""

    def __init__(self, module: torch.nn.Module, signature: InputSignature):
        super().__init__()
        self.module = module
        self.signature = signature

    def forward(self, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        args, kwargs = self.signature.rebuild(flat)
        return tuple(flatten_output(self.module(*args, **kwargs)))


def map_tensors(fn: Callable[[torch.Tensor], Any], value: Any) -> Any:
    """``value`` with ``fn`` applied to every tensor in it, at any depth of tuples, lists,
    dicts and namedtuples, each rebuilt as the same type."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(map_tensors(fn, v) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(fn, v) for v in value)
    if isinstance(value, dict):
        return type(value)((k, map_tensors(fn, v)) for k, v in value.items())
    return value


def to_channels_last(value: Any) -> Any:
    """4-D tensors in ``value`` converted to channels_last, 5-D ones (Conv3d inputs) to
    channels_last_3d; other ranks, and everything that is not a tensor, stay as they are."""
    def convert(t: torch.Tensor) -> torch.Tensor:
        fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())
        return t.contiguous(memory_format=fmt) if fmt is not None else t
    return map_tensors(convert, value)


def normalize_sample(sample: Any) -> tuple[tuple, dict]:
    """``input_sample`` as (args, kwargs): a tensor, a tuple/list of args, a dict of kwargs,
    or an explicit ``(args_tuple, kwargs_dict)`` pair."""
    if isinstance(sample, torch.Tensor):
        return (sample,), {}
    if isinstance(sample, dict):
        return (), dict(sample)
    if (isinstance(sample, tuple) and len(sample) == 2 and isinstance(sample[0], tuple)
            and isinstance(sample[1], dict)):
        return sample[0], dict(sample[1])
    if isinstance(sample, (tuple, list)):
        return tuple(sample), {}
    raise NanoTypeError(f"input_sample must be a tensor, a tuple of inputs or a dict of keyword "
                        f"inputs, got {type(sample).__name__}")


def concat_values(values: list) -> Any:
    """Per-batch values as one (concatenated tensors, else the list as is)."""
    if all(isinstance(v, torch.Tensor) for v in values):
        try:
            return torch.cat([v.reshape(1) if v.dim() == 0 else v for v in values])
        except RuntimeError:
            return values
    return values
