"""search_mode="default": likely winners first, and methods that cannot win left out with a
reason (the rows here are made up; test_optimize runs the real search)."""

import warnings

import pytest
import torch

from nano.search.measure import Latency
from nano.runtimes.registry import get_method, method_table
from nano.search.candidates import CandidateResult
from nano.search.plan import HOPELESS, SearchPlan, model_family
from nano.launcher.capability import CpuCapability
from nano.models import resnet18

# the skip rules below are stated for a CPU with native bf16 (an AMD Zen 4); the emulated
# rule at the end, for an AVX2 one
ZEN4 = CpuCapability.from_flags(["avx2", "avx512f", "avx512_vnni", "avx512_bf16"])
ZEN3 = CpuCapability.from_flags(["avx2", "fma"])


def Plan(model, search_mode="default", includes=None, capability=ZEN4):
    """A SearchPlan for the CPU ``capability`` describes."""
    return SearchPlan(model, search_mode, includes, capability)


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(),
                                       torch.nn.Linear(64, 4))

    def forward(self, x):
        return self.net(x)


class SmallStem(torch.nn.Module):
    """A convolution in front of a large dense head: "dense" by its parameters, but it has a
    convolution, so channels_last can matter."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4 * 6 * 6, 512)

    def forward(self, x):
        return self.head(self.conv(x).flatten(1))


def row(name, ms=None, status="ok", passing=True):
    r = CandidateResult(get_method(name), status,
                        latency=None if ms is None else Latency(ms, ms, ms, 10))
    r.extra["passing"] = passing
    return r


def passes(r):
    return r.extra["passing"]


def reasons(plan, rows, names):
    return {n: plan.skip_reason(get_method(n), rows, passes) for n in names}


def test_model_family():
    assert model_family(resnet18()) == "conv"
    assert model_family(Mlp()) == "dense"
    assert model_family(SmallStem()) == "dense"


def test_likely_winners_first_and_the_original_always_first():
    methods = list(method_table().values())
    conv = [m.name for m in Plan(resnet18()).order(methods)]
    assert conv[0] == "original" and conv[1] == "openvino_int8"
    assert sorted(conv) == sorted(m.name for m in methods)  # nothing lost, nothing added
    assert conv.index("onnxruntime_int8_qlinear") < conv.index("onnxruntime_int8_integer")
    dense = [m.name for m in Plan(Mlp()).order(methods)]
    assert dense[1] == "openvino_int8"
    assert all(dense.index(m.name) > dense.index("jit_fp32") for m in methods
               if m.channels_last)  # where channels_last matters least, it comes last
    # every runtime's methods are tried before the runtime they were slower than
    for name in conv:
        method = get_method(name)
        if method.accelerator in ("compile", "openvino_compile"):
            twin = f"openvino_{method.precision}"
            assert twin not in conv or conv.index(twin) < conv.index(name), name
    # "all", "grid" and a user's includes keep the order given
    assert Plan(resnet18(), "all").order(methods) == methods
    named = [get_method(n) for n in ("original", "jit_fp32", "openvino_int8")]
    assert Plan(resnet18(), includes=["jit_fp32", "openvino_int8"]).order(named) == named


def test_a_family_is_dropped_once_one_of_it_cannot_win():
    plan = Plan(resnet18())
    rows = [row("original", 30), row("openvino_int8", 5), row("jit_bf16_channels_last", 12)]
    got = reasons(plan, rows, ["jit_fp32", "jit_bf16", "openvino_bf16", "bf16"])
    assert got["jit_fp32"] == got["jit_bf16"] == (
        "skipped: jit_bf16_channels_last ran 2.4x the best so far (openvino_int8); its other "
        "methods are expected slower")
    assert got["openvino_bf16"] is None and got["bf16"] is None  # other families go on
    assert plan.outpaced == {"jit_fp32", "jit_bf16"}
    # within HOPELESS of the best, the family goes on
    close = [row("original", 30), row("openvino_int8", 5),
             row("jit_bf16_channels_last", 5 * HOPELESS * 0.99)]
    assert Plan(resnet18()).skip_reason(get_method("jit_fp32"), close, passes) is None
    # a method stopped early as too slow stands for its family too
    slow = [row("original", 30), row("onnxruntime_int8_integer", 60, status="slow")]
    assert "onnxruntime_int8_integer was stopped early as too slow" in Plan(
        resnet18()).skip_reason(get_method("onnxruntime_fp32"), slow, passes)


def test_only_passing_rows_set_the_bar():
    """A fast INT8 model that fails the accuracy judgement makes nothing else look slow."""
    rows = [row("original", 30), row("onnxruntime_int8_qdq", 2, passing=False),
            row("jit_bf16_channels_last", 12)]
    assert Plan(resnet18()).skip_reason(get_method("jit_fp32"), rows, passes) is None


def test_a_dominated_runtime_waits_for_openvino():
    methods = ["compile_bf16", "compile_bf16_channels_last", "compile_int8",
               "openvino_compile_fp32"]
    rows = [row("original", 30), row("openvino_bf16", 9)]
    got = reasons(Plan(resnet18()), rows, methods)
    assert got["compile_bf16"] == got["compile_bf16_channels_last"] == (
        "skipped: openvino_bf16 passed, and openvino ran faster than compile on every "
        "benchmark model")
    assert got["compile_int8"] is None and got["openvino_compile_fp32"] is None  # other precisions
    # OpenVINO failing the judgement (or failing to convert) leaves compile to be tried
    failed = [row("original", 30), row("openvino_bf16", 9, passing=False),
              row("openvino_int8", status="failed")]
    assert reasons(Plan(resnet18()), failed, methods) == dict.fromkeys(methods)
    # OpenVINO found hopeless: compile, slower still on the benchmarks, is left out too
    hopeless = [row("original", 30), row("onnxruntime_int8_qdq", 5),
                row("openvino_fp32", 20, status="slow")]
    got = Plan(resnet18()).skip_reason(get_method("compile_fp32"), hopeless, passes)
    assert got == ("skipped: compile ran slower than openvino on every benchmark model, and "
                   "openvino_fp32 was stopped early as too slow")


def test_the_same_static_int8_in_another_format():
    rows = [row("original", 30), row("onnxruntime_int8_qdq", 15, passing=False)]
    got = reasons(Plan(Mlp()), rows, ["onnxruntime_int8_qlinear",
                                            "onnxruntime_int8_integer", "openvino_int8"])
    assert got["onnxruntime_int8_qlinear"] == (
        "skipped: onnxruntime_int8_qdq failed the accuracy judgement, and "
        "onnxruntime_int8_qlinear quantizes the same way (static, same calibration) in "
        "another format")
    # dynamic quantization and another runtime are judged on their own
    assert got["onnxruntime_int8_integer"] is None and got["openvino_int8"] is None


def test_channels_last_needs_a_convolution():
    names = ["fp32_channels_last", "jit_bf16_channels_last", "compile_bf16_channels_last"]
    rows = [row("original", 30)]
    for name, why in reasons(Plan(Mlp()), rows, names).items():
        assert why == ("skipped: channels_last only changes how convolutions lay out memory, "
                       "and this model has none"), name
    assert reasons(Plan(SmallStem()), rows, names) == dict.fromkeys(names)


@pytest.mark.parametrize("plan", [
    Plan(Mlp(), "all"), Plan(Mlp(), "grid"),
    Plan(Mlp(), includes=["jit_fp32", "fp32_channels_last", "compile_bf16"])])
def test_every_method_is_tried_in_all_and_grid_and_when_named(plan):
    rows = [row("original", 30), row("openvino_bf16", 2), row("jit_bf16", 20),
            row("onnxruntime_int8_qdq", 2, passing=False)]
    for name in ("jit_fp32", "fp32_channels_last", "compile_bf16"):
        assert plan.skip_reason(get_method(name), rows, passes) is None
    # the original is never left out
    assert Plan(Mlp()).skip_reason(get_method("original"), rows, passes) is None


def test_a_per_precision_pick_after_a_default_search_says_what_was_left_out(monkeypatch):
    """On the zoo's ResNet-18, OpenVINO INT8 ran 18x eager, every fp32 method was left out or
    stopped early, and get_best_model(precision="fp32") returned the original."""
    from nano import InferenceOptimizer

    from nano.search.search_options import SearchOptions
    from nano.search.run import Search

    opt = InferenceOptimizer()
    search = opt._search = Search.__new__(Search)  # the rows of a search, without running one
    search.options = SearchOptions()
    search.results = [row("original", 30), row("openvino_int8", 2),
                      row("openvino_fp32", 20, "slow"), row("jit_fp32", status="skipped")]
    search.plan = Plan(resnet18())
    search.plan.outpaced.add("jit_fp32")  # as skip_reason records a method faster rows outpaced
    monkeypatch.setattr(opt, "get_model", lambda name: name)
    with pytest.warns(UserWarning, match=r"left out or stopped 2 such method\(s\) \(openvino_fp32, "
                                         r"jit_fp32\).*optimize\(..., precision='fp32'\)"):
        assert opt.get_best_model(precision="fp32")[0] == "original"
    search.plan = Plan(resnet18(), "all")  # an exhaustive search has nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.get_best_model(precision="fp32")


def test_bf16_is_left_out_in_every_mode_where_it_is_emulated():
    rows = [row("original", 10.0)]
    for plan in (Plan(Mlp(), capability=ZEN3), Plan(Mlp(), "all", capability=ZEN3)):
        for name in ("bf16", "jit_bf16", "compile_bf16", "openvino_bf16", "openvino_fp16"):
            why = plan.skip_reason(get_method(name), rows, passes)
            assert why.startswith("skipped: this CPU has no native") and "(AVX2 only)" in why
            assert "includes=" in why
        assert plan.skip_reason(get_method("openvino_int8"), rows, passes) is None
        assert plan.skip_reason(get_method("openvino_fp32"), rows, passes) is None
    named = Plan(Mlp(), includes=["jit_bf16"], capability=ZEN3)
    assert named.skip_reason(get_method("jit_bf16"), rows, passes) is None
    assert Plan(Mlp()).skip_reason(get_method("jit_bf16"), rows, passes) is None  # Zen 4
