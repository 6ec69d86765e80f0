"""The import layers and the absence of import cycles, read from the source (no module is
executed).

Bottom to top: shared helpers -> launcher -> runtimes (the model interface, the backends
and their registry) -> search (how optimize() chooses), multiprocess, trainer -> quantize
(the accuracy-aware INT8 search, which judges like the search) -> the InferenceOptimizer
facade -> the CLIs and the package entry points. A module may import its own layer's
package and any lower layer; packages side by side on one layer stay apart. Inside a
package, no file imports another in a circle (annotation-only imports included).
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "nano"

# (package or module, layer)
LAYERS = {
    "nano.errors": 0, "nano.noise": 0,
    "nano.launcher": 1,
    "nano.runtimes": 2,
    "nano.search": 3, "nano.multiprocess": 3, "nano.trainer": 3, "nano.cuda_patch": 3,
    "nano.quantize": 4, "nano.generation": 4, "nano.spark": 4,
    "nano.optimizer": 5, "nano.torch_patch": 5,
    "nano.models": 6, "nano.bench_cli": 6, "nano.bench_generation": 6, "nano.demo": 6, "nano.__main__": 6, "nano": 6,
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
SEPARATE_PEERS = {3, 4}


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


@pytest.mark.parametrize("module, imported, layers", [
    ("nano.runtimes.registry", "nano.search.judgement", (2, 3)),
    ("nano.runtimes.backends.onnxruntime_int8", "nano.search.measure", (2, 3)),
    ("nano.search.candidates", "nano.quantize.api", (3, 4)),
    ("nano.search.plan", "nano.optimizer", (3, 5)),
    ("nano.quantize.api", "nano.optimizer", (4, 5)),
    ("nano.runtimes.model", "nano.trainer.torch_nano", (2, 3)),
    ("nano.launcher.topology", "nano.runtimes.registry", (1, 2)),
    ("nano.search.run", "nano.models.zoo", (3, 6)),
])
def test_the_check_sees_an_upward_import(module, imported, layers):
    """The test can fail: a lower package importing a higher one inside a function."""
    source = f"import torch\n\ndef f():\n    import {imported}\n"
    here = unit(module)
    assert violations(module, source) == [
        f"{module}:4: {here} (layer {layers[0]}) imports {imported} (layer {layers[1]})"]


@pytest.mark.parametrize("module, imported", [
    ("nano.search.candidates", "nano.runtimes.registry"),
    ("nano.quantize.api", "nano.search.judgement"),
    ("nano.optimizer", "nano.search.search_options"),
    ("nano.optimizer", "nano.quantize.api"),
    ("nano.generation.lm_search", "nano.search.isolation"),
    ("nano.optimizer", "nano.generation.lm_search"),
])
def test_downward_imports_pass(module, imported):
    assert violations(module, f"from {imported} import x\n") == []


@pytest.mark.parametrize("module, peer", [
    ("nano.search.plan", "nano.multiprocess.pool"),
    ("nano.search.run", "nano.trainer.training_options"),
    ("nano.trainer.torch_nano", "nano.search.judgement"),
    ("nano.multiprocess.pool", "nano.trainer.local_ranks"),
    ("nano.generation.lm_search", "nano.quantize.api"),
    ("nano.quantize.api", "nano.generation.build"),
])
def test_peers_stay_apart(module, peer):
    assert len(violations(module, f"import {peer}\n")) == 1
    assert violations("nano.optimizer", f"import {peer}\n") == []


MODULES = {module_name(path) for path in SOURCES}


def module_imports(module: str, source: str) -> set[str]:
    """The nano modules (files) ``module`` imports anywhere, ``if TYPE_CHECKING:`` blocks
    included: ``from pkg import name`` counts as importing ``pkg.name`` where that is a
    module, else ``pkg`` itself."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES
                     else node.module for a in node.names]
        else:
            continue
        found.update(n for n in names if n in MODULES and n != module)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each group of modules that import each other in a circle (Tarjan's strongly
    connected components of more than one module), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def test_no_file_imports_another_in_a_circle():
    graph = {module_name(path): module_imports(module_name(path), path.read_text())
             for path in SOURCES}
    assert import_cycles(graph) == []


def test_the_cycle_check_sees_a_circle_through_a_function_level_import():
    """The test can fail: the registry's lookups imported back by a model class, inside a
    method (what ``load()`` once did), close a circle."""
    graph = {module_name(path): module_imports(module_name(path), path.read_text())
             for path in SOURCES}
    probe = "def load(self):\n    from nano.runtimes.registry import backend_class\n"
    graph["nano.runtimes.model"] |= module_imports("nano.runtimes.model", probe)
    cycles = import_cycles(graph)
    assert len(cycles) == 1 and {"nano.runtimes.model", "nano.runtimes.registry"} <= set(cycles[0])


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
