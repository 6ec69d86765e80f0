"""Every method resolves to one backend module that keeps the contract, and the tables are
derived from the backends' specs (a new runtime is its module plus one list entry)."""

import inspect
import sys
import types

import pytest

from nano.errors import NanoValueError
from nano.runtimes import registry as backends
from nano.runtimes.backends.spec import Backend, BackendSpec, Flavour
from nano.runtimes.methods import Method
from nano.runtimes.registry import get_method, method_table, normalize_accelerator

BIGDL_NAMES = ["original", "fp32_channels_last", "bf16", "bf16_channels_last", "fp32_ipex",
               "bf16_ipex", "jit_fp32", "jit_bf16", "openvino_fp32", "openvino_bf16",
               "openvino_int8", "onnxruntime_fp32", "onnxruntime_int8_qlinear",
               "onnxruntime_int8_integer", "compile_fp32", "compile_int8"]


def test_bigdl_names_are_in_the_table():
    assert set(BIGDL_NAMES) <= set(method_table())


@pytest.mark.parametrize("name", sorted(method_table()))
def test_every_method_resolves_to_a_module_that_keeps_the_contract(name):
    method = get_method(name)
    module = backends.backend_for(method)
    assert isinstance(module, Backend), f"{module.__name__} misses part of the Backend protocol"
    assert isinstance(module.SPEC, BackendSpec)
    assert method.precision in module.SPEC.precisions
    for fn, params in (("build", ["method", "inputs"]), ("unavailable_reason", ["method"])):
        assert list(inspect.signature(getattr(module, fn)).parameters) == params, fn
    assert hasattr(module.MODEL_CLASS, "load_artifacts")
    assert module.MODEL_CLASS.artifact, "a saved model must name the file its backend reads"
    if module.SPEC.quantizer is not None:
        assert method.precision == "int8"


def test_no_two_backends_build_the_same_method():
    for method in method_table().values():
        owners = [m.__name__ for m in backends.backend_modules() if m.SPEC.builds(method)]
        assert len(owners) == 1, (method.name, owners)


def test_unknown_accelerator_lists_the_registered_ones():
    with pytest.raises(NanoValueError, match="unknown accelerator 'tensorrt'") as info:
        normalize_accelerator("tensorrt")
    for acc in backends.accelerators():
        assert repr(acc) in str(info.value)


def test_aliases_come_from_the_specs():
    assert normalize_accelerator(None) == "pytorch"
    for spec in backends.specs():
        for alias in spec.aliases:
            assert normalize_accelerator(alias.upper()) == spec.accelerator


def test_a_precision_a_backend_does_not_build_is_unavailable_with_the_reason():
    assert "onnxruntime builds fp32 here, not bf16" in backends.unavailable_reason(
        Method("onnxruntime", "bf16"))


@pytest.fixture
def fake_runtime(monkeypatch):
    """A runtime registered the way a new one would be: a module plus its list entry."""
    module = types.ModuleType("nano.runtimes.backends.fake_runtime")
    module.SPEC = BackendSpec(accelerator="fake", aliases=("fk",), precisions=("fp32",),
                              candidates=(Flavour(),), converts=True)
    module.INSTALL_HINT = "pip install fake"
    module.MODEL_CLASS = object
    module.build = lambda method, inputs: None
    module.unavailable_reason = lambda method: "missing dependency: pip install fake"
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(backends, "BACKENDS", (*backends.BACKENDS, "fake_runtime"))
    backends.backend_modules.cache_clear()
    backends.method_table.cache_clear()
    yield module
    backends.backend_modules.cache_clear()
    backends.method_table.cache_clear()


def test_one_module_and_one_entry_reach_every_table(fake_runtime):
    assert isinstance(fake_runtime, Backend)
    assert get_method("fake_fp32") == Method("fake")
    assert normalize_accelerator("fk") == "fake"
    assert "fake" in backends.accelerators()
    assert backends.unavailable_reason(Method("fake")) == "missing dependency: pip install fake"
    assert [m.name for m in backends.select_methods(accelerator="fake")] == ["original",
                                                                            "fake_fp32"]
    with pytest.raises(NanoValueError, match="no INT8 quantizer for accelerator 'fake'"):
        backends.quantizer_for("fake")


def test_without_the_entry_the_runtime_is_unknown():
    with pytest.raises(NanoValueError, match="unknown accelerator 'fake'"):
        backends.backend_for(Method("fake"))
    with pytest.raises(NanoValueError, match="unknown accelerator 'fake'"):
        normalize_accelerator("fake")
