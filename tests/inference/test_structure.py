"""Input binding and output structure round trips (pure, fast)."""

import collections

import pytest
import torch

from nano.runtimes.structure import InputSignature, flatten_output, output_spec, unflatten_output
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
    # scale was left to its default by the sample, and is left out again
    assert len(args) == 2 and args[0] is x and args[1] is e and kwargs == {}


class AddsItsOwnKeyword(torch.nn.Module):
    """Like transformers' BERT: a wrapper fills ``use_cache`` itself, so a call passing it
    positionally fails with "got multiple values for argument 'use_cache'"."""

    def forward(self, ids, mask=None, token_types=None, use_cache=None):
        return ids * (1 if mask is None else mask) + (0 if token_types is None else token_types)

    def __call__(self, *args, **kwargs):
        kwargs.setdefault("use_cache", False)
        return super().__call__(*args, **kwargs)


def test_rebuild_leaves_defaults_out_and_passes_what_follows_a_gap_by_keyword():
    ids, types = torch.ones(2, 3), torch.full((2, 3), 2.0)
    model = AddsItsOwnKeyword()
    sig = InputSignature.from_sample(model, (ids,), {"token_types": types})
    args, kwargs = sig.rebuild(sig.flatten((ids,), {"token_types": types}))
    assert len(args) == 1 and args[0] is ids and list(kwargs) == ["token_types"]
    torch.testing.assert_close(model(*args, **kwargs), ids + types)


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

    from nano.runtimes.structure import to_channels_last

    Batch = namedtuple("Batch", "image volume")
    value = {"b": Batch(torch.rand(2, 3, 4, 4), torch.rand(1, 2, 3, 4, 4)),
             "rest": [torch.rand(2, 3), 1.5]}
    out = to_channels_last(value)
    assert type(out["b"]) is Batch
    assert out["b"].image.is_contiguous(memory_format=torch.channels_last)
    assert out["b"].volume.is_contiguous(memory_format=torch.channels_last_3d)
    assert out["rest"][1] == 1.5 and torch.equal(out["rest"][0], value["rest"][0])



class AllOptional(torch.nn.Module):
    """transformers' style: every input has a default."""

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None):
        return input_ids.float() * attention_mask


def test_an_input_sample_says_a_two_tensor_batch_is_two_inputs():
    """Without it a batch (ids, mask) of an all-optional forward reads as an input and a
    target: quantize() of BERT with input_sample=(ids, mask) refused its own calib_data."""
    from nano.runtimes.calibration import calibration_samples

    ids, mask = torch.ones(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long)
    batches = [(ids, mask), (ids, mask)]
    samples = calibration_samples(AllOptional(), batches, input_sample=(ids, mask))
    assert all(len(args) == 2 and not kwargs for args, kwargs in samples)
    # without a sample, the historical reading (inputs..., target) stands
    assert len(calibration_samples(AllOptional(), [(ids, mask, mask)])[0][0]) == 2
