"""optimize()'s options are one frozen value, checked before any data is read."""

import dataclasses

import pytest
import torch

from nano.errors import NanoTypeError, NanoValueError
from nano.search.search_options import SearchOptions


class Untouchable:
    """Training data that fails the test if optimize() reads it."""

    def __iter__(self):
        raise AssertionError("the data was read before the options were checked")


@pytest.mark.parametrize("options, error, message", [
    (dict(search_mode="fast"), NanoValueError, "search_mode must be"),
    (dict(search_mode="grid"), NanoValueError, "give at least one"),
    (dict(direction="up"), NanoValueError, "direction must be"),
    (dict(metric=3), NanoTypeError, "metric must be callable"),
    (dict(metric=lambda pred, target: 1.0), NanoValueError, "needs validation_data"),
    (dict(accuracy="top5"), NanoValueError, "accuracy must be one of"),
    (dict(accuracy="top1", metric=lambda model, data: 1.0), NanoValueError, "not both"),
    (dict(latency_sample_num=0), NanoValueError, "latency_sample_num must be"),
    (dict(thread_num=0), NanoValueError, "thread_num must be"),
    (dict(time_budget=-1), NanoValueError, "time_budget must be"),
    (dict(includes=["openvino_fp33"]), NanoValueError, "unknown method 'openvino_fp33'"),
    (dict(accelerator="tensorrt"), NanoValueError, "unknown accelerator 'tensorrt'"),
    (dict(precision="int4"), NanoValueError, "unknown precision 'int4'"),
    (dict(inplace=True), NanoValueError, "inplace= is not supported"),
    (dict(warmup=3), NanoTypeError, "unknown option 'warmup'"),
])
def test_a_bad_option_is_one_line_before_the_data_is_read(options, error, message):
    from nano import InferenceOptimizer

    with pytest.raises(error, match=message) as caught:
        InferenceOptimizer().optimize(torch.nn.Linear(4, 2), Untouchable(), **options)
    assert "\n" not in str(caught.value)


def test_the_options_are_frozen_and_carry_the_defaults():
    options = SearchOptions.from_call({"logging": False}, includes=["openvino_fp32"])
    assert options.includes == ("openvino_fp32",) and options.latency_sample_num == 100
    assert not options.exhaustive and SearchOptions(search_mode="all").exhaustive
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.search_mode = "all"
    assert [m.name for m in options.methods()] == ["original", "openvino_fp32"]


def test_use_ipex_narrows_the_methods_to_ipex_ones_and_the_original():
    names = [m.name for m in SearchOptions(use_ipex=True).methods()]
    assert names[0] == "original" and len(names) > 1
    assert all(n.endswith("_ipex") or "_ipex" in n for n in names[1:])
    assert not any("_ipex" in m.name for m in SearchOptions(use_ipex=False).methods())
