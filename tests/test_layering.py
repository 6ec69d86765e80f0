"""The import layers, read from the source (no module is executed).

Bottom to top: shared helpers -> launcher -> inference (model interface,
backends incl. the INT8 builders, measurement, isolated search) -> quantize
(accuracy-aware search), multiprocess, trainer -> the InferenceOptimizer facade
-> the CLIs and the package entry points. A module may import its own layer's
package and any lower layer; packages side by side on one layer stay apart.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "nano"

# (package or module, layer)
LAYERS = {
    "nano.errors": 0, "nano.noise": 0,
    "nano.launcher": 1,
    "nano.inference": 2,
    "nano.quantize": 3, "nano.multiprocess": 3, "nano.trainer": 3, "nano.cuda_patch": 3,
    "nano.optimizer": 4, "nano.torch_patch": 4,
    "nano.models": 5, "nano.bench_cli": 5, "nano.demo": 5, "nano.__main__": 5, "nano": 5,
}


def unit(module: str) -> str:
    """The LAYERS key a module belongs to (its package, or itself)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return ".".join(parts[:n])
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def nano_imports(source: str):
    """Every nano module ``source`` imports, at top level or inside a function, with its line."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "nano":  # ``from nano import x``: x may be a module
                names = [f"nano.{a.name}" if f"nano.{a.name}" in LAYERS else "nano"
                         for a in node.names]
        else:
            continue
        for name in names:
            if name == "nano" or name.startswith("nano."):
                yield name, node.lineno


# Packages side by side on these layers must not import each other (helpers at the
# bottom and the entry points at the top may).
SEPARATE_PEERS = {3}


def violations(module: str, source: str) -> list[str]:
    """The imports of ``module`` (given its source) that break the layering."""
    found = []
    here = unit(module)
    for name, line in nano_imports(source):
        there = unit(name)
        if there == here:
            continue
        if LAYERS[there] > LAYERS[here] or (LAYERS[there] == LAYERS[here]
                                             and LAYERS[here] in SEPARATE_PEERS):
            found.append(f"{module}:{line}: {here} (layer {LAYERS[here]}) imports {name} "
                         f"(layer {LAYERS[there]})")
    return found


SOURCES = sorted(ROOT.rglob("*.py"))


def test_every_module_has_a_layer():
    assert len(SOURCES) > 50
    for path in SOURCES:
        unit(module_name(path))


def test_no_layer_imports_a_higher_one():
    found = [v for path in SOURCES for v in violations(module_name(path), path.read_text())]
    assert found == []


def test_the_check_sees_an_upward_import():
    """The test can fail: an inference module importing the quantize layer inside a function."""
    source = "import torch\n\ndef f():\n    from nano.quantize.api import quantize\n"
    assert violations("nano.inference.search", source) == [
        "nano.inference.search:4: nano.inference (layer 2) imports nano.quantize.api (layer 3)"]


@pytest.mark.parametrize("peer", ["nano.multiprocess.pool", "nano.trainer.options"])
def test_peers_stay_apart(peer):
    assert len(violations("nano.quantize.api", f"import {peer}\n")) == 1
    assert violations("nano.optimizer", f"import {peer}\n") == []


def test_every_error_class_derives_from_nano_error():
    """Nano's errors can be caught as one family (the signal unwinding class excepted: it is
    a BaseException on purpose, like KeyboardInterrupt)."""
    import importlib
    import inspect

    from nano.errors import NanoError

    found = []
    for path in SOURCES:
        name = module_name(path)
        if name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == name and issubclass(cls, BaseException) \
                    and not issubclass(cls, NanoError) and cls_name != "Terminated":
                found.append(f"{name}.{cls_name}")
    assert found == []
