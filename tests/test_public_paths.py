"""Every import path a user writes keeps working: the README's, and the Nano spelling of each
BigDL-Nano 2.4 path its documentation uses (``bigdl.nano.pytorch.X`` is ``nano.X``)."""

import importlib
import importlib.util
import pathlib
import re

import pytest

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()

# BigDL-Nano's documented path -> where the same thing is in Nano
BIGDL_PATHS = {
    "bigdl.nano.pytorch.InferenceOptimizer": "nano.InferenceOptimizer",
    "bigdl.nano.pytorch.Trainer": "nano.Trainer",
    "bigdl.nano.pytorch.TorchNano": "nano.TorchNano",
    "bigdl.nano.pytorch.nano": "nano.nano",
    "bigdl.nano.pytorch.patching.patch_cuda": "nano.patch_cuda",
    "bigdl.nano.pytorch.patching.unpatch_cuda": "nano.unpatch_cuda",
    "bigdl.nano.pytorch.patching.patch_torch": "nano.patch_torch",
    "bigdl.nano.pytorch.patching.unpatch_torch": "nano.unpatch_torch",
}
# what the README and the error documentation name
NANO_PATHS = [
    "nano.optimizer.InferenceOptimizer", "nano.errors.NanoError", "nano.errors.NanoValueError",
    "nano.errors.NanoTypeError", "nano.errors.DataMismatch", "nano.errors.TraceError",
    "nano.errors.SearchFailed", "nano.quantize.AccuracyCriterionError",
    "nano.quantize.QuantConfig", "nano.quantize.Criterion", "nano.trainer.AutoLR",
    "nano.trainer.lr_scaling", "nano.launcher.rank_exec",
]
# ``python -m`` targets (found, not run)
RUNNABLE = ["nano", "nano.trainer"]


def readme_paths() -> set[str]:
    """The ``nano...`` names the README writes in code: ``from nano.x import y`` lines and
    dotted names in backticks (``python -m nano.trainer`` as the module it runs)."""
    found = set()
    for module, names in re.findall(r"^from (nano[\w.]*) import ([\w, ]+)", README, re.M):
        found.update(f"{module}.{n.strip()}" for n in names.split(","))
    for dotted in re.findall(r"`(?:python -m )?(nano(?:\.\w+)+)`", README):
        found.add(dotted)
    return found


def resolve(path: str):
    """The object (or module) ``path`` names, importing the longest module prefix."""
    parts = path.split(".")
    for n in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:n]))
        except ModuleNotFoundError:
            continue
        for attr in parts[n:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(path)


def test_the_readme_names_paths_this_test_knows():
    paths = readme_paths()
    assert {"nano.InferenceOptimizer", "nano.errors.TraceError",
            "nano.launcher.rank_exec"} <= paths


@pytest.mark.parametrize("path", sorted(readme_paths() | set(NANO_PATHS)))
def test_a_documented_path_imports(path):
    assert resolve(path) is not None


@pytest.mark.parametrize("bigdl, ours", sorted(BIGDL_PATHS.items()))
def test_each_bigdl_path_has_its_nano_spelling(bigdl, ours):
    obj = resolve(ours)
    assert obj.__name__ == bigdl.rsplit(".", 1)[1]


@pytest.mark.parametrize("module", RUNNABLE)
def test_python_dash_m_targets_exist(module):
    assert importlib.util.find_spec(f"{module}.__main__") is not None


def test_a_missing_path_fails():
    with pytest.raises(AttributeError):
        resolve("nano.errors.NoSuchError")
    with pytest.raises(ModuleNotFoundError):
        resolve("nano_nothing.x")
