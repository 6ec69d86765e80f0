"""Input binding and output structure round trips (pure, fast)."""

import collections

import pytest
import torch

from nano.inference.structure import (InputSignature, flatten_output, output_spec,
                                      unflatten_output)
from tests.inference.models import TwoInput

Pair = collections.namedtuple("Pair", "first second")


@pytest.mark.parametrize("value", [
    torch.ones(2),
    (torch.ones(2), [torch.zeros(1), {"a": torch.ones(3)}]),
    {"logits": torch.ones(2, 3), "aux": (torch.zeros(1), None, 3)},
    Pair(torch.ones(1), torch.zeros(2)),
])
def test_output_round_trip(value):
    spec = output_spec(value)
    rebuilt = unflatten_output(spec, flatten_output(value))
    assert type(rebuilt) is type(value)
    assert all(torch.equal(a, b)
               for a, b in zip(flatten_output(rebuilt), flatten_output(value), strict=True))


def test_output_cast_back_to_original_dtype():
    spec = output_spec(torch.ones(2))
    assert unflatten_output(spec, [torch.ones(2, dtype=torch.bfloat16)]).dtype == torch.float32


def test_signature_binds_positional_and_keyword():
    x, e = torch.ones(1, 6), torch.ones(1, 3)
    sig = InputSignature.from_sample(TwoInput(), (x,), {"extra": e})
    assert sig.tensor_names == ["x", "extra"]
    flat = sig.flatten((x, e), {})
    assert flat[0] is x and flat[1] is e
    assert sig.flatten((), {"x": x, "extra": e})[1] is e
    args, kwargs = sig.rebuild(flat)
    assert args[0] is x and args[1] is e and args[2] == 2.0 and kwargs == {}  # scale's default


def test_signature_errors_are_clear():
    sig = InputSignature.from_sample(TwoInput(), (torch.ones(1, 6), torch.ones(1, 3), 3.0), {})
    with pytest.raises(TypeError, match="missing input"):
        sig.flatten((torch.ones(1, 6),), {})
    with pytest.raises(TypeError, match="unexpected input 'bogus'"):
        sig.flatten((torch.ones(1, 6), torch.ones(1, 3)), {"bogus": 1})
    with pytest.raises(ValueError, match="was 3.0 when the model was traced"):
        sig.flatten((torch.ones(1, 6), torch.ones(1, 3), 5.0), {})


def test_signature_json_round_trip():
    sig = InputSignature.from_sample(TwoInput(), (torch.ones(1, 6),), {"extra": torch.ones(1, 3)})
    assert InputSignature.from_json(sig.to_json()) == sig


class FakeModelOutput(collections.OrderedDict):
    """Shaped like Hugging Face's ModelOutput: an OrderedDict built from keywords."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)


def test_model_output_class_is_rebuilt():
    value = FakeModelOutput(last_hidden_state=torch.ones(1, 2), pooler_output=torch.zeros(1))
    rebuilt = unflatten_output(output_spec(value), flatten_output(value))
    assert type(rebuilt) is FakeModelOutput and list(rebuilt) == list(value)


def test_channels_last_reaches_tensors_in_every_container():
    from collections import namedtuple

    from nano.inference.structure import to_channels_last

    Batch = namedtuple("Batch", "image volume")
    value = {"b": Batch(torch.rand(2, 3, 4, 4), torch.rand(1, 2, 3, 4, 4)),
             "rest": [torch.rand(2, 3), 1.5]}
    out = to_channels_last(value)
    assert type(out["b"]) is Batch
    assert out["b"].image.is_contiguous(memory_format=torch.channels_last)
    assert out["b"].volume.is_contiguous(memory_format=torch.channels_last_3d)
    assert out["rest"][1] == 1.5 and torch.equal(out["rest"][0], value["rest"][0])

