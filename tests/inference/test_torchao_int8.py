"""compile_int8_torchao: PyTorch's own INT8 on Linear-heavy models, where PT2E's pattern
annotation fails (HF BERT-family graphs)."""

import pytest
import torch

from nano import InferenceOptimizer
from nano.runtimes.registry import backend_for, quantizer_for
from nano.runtimes.registry import get_method
from nano.launcher.capability import current
from nano.models.zoo import ZOO, build
from tests.fresh_process import check_in_fresh_process


def test_it_is_a_candidate_of_its_own_and_quantize_keeps_pt2e():
    assert backend_for(get_method("compile_int8_torchao")).__name__.endswith("torchao_int8")
    assert backend_for(get_method("compile_int8")).__name__.endswith("pt2e_int8")
    assert quantizer_for("pytorch").__name__.endswith("pt2e_int8")


@pytest.mark.slow
def test_bert_on_fresh_values_and_after_load_in_a_fresh_process(tmp_path):
    pytest.importorskip("transformers")
    model, sample = build("bert", batch=2)
    opt = InferenceOptimizer()
    opt.optimize(model, [ZOO["bert"].sample(2) for _ in range(4)], input_sample=sample,
                 includes=["compile_int8_torchao"], latency_sample_num=5, latency_budget=1,
                 final_round=False, no_cache=True)
    row = {r.name: r for r in opt.results}["compile_int8_torchao"]
    if current().int8_saturates:  # no int8 dot product, and torchao has no 7-bit scheme
        assert row.status == "unavailable" and "saturate" in row.detail, row.detail
        return
    assert row.status == "ok", row.detail
    int8 = opt.get_model("compile_int8_torchao")
    # other values; the trace's batch size, as another one recompiles (8 s here): a new
    # shape is torch.compile's own business, tested on compile_fp32
    fresh = ZOO["bert"].sample(2)
    with torch.no_grad():
        got, want = int8(*fresh).last_hidden_state, model(*fresh).last_hidden_state
    cos = torch.nn.functional.cosine_similarity(got, want, dim=-1)
    assert cos.min().item() > 0.99
    InferenceOptimizer.save(int8, str(tmp_path / "m"))
    name = check_in_fresh_process(str(tmp_path / "m"), fresh, got, str(tmp_path),
                                  "__import__('nano.models.zoo').models.zoo.build('bert')[0]",
                                  ".last_hidden_state")
    assert name == "compile_int8_torchao"


@pytest.mark.slow
@pytest.mark.emulated
def test_a_saved_torchao_model_refuses_to_load_where_it_would_saturate(tmp_path):
    """It is saved as fp32 weights and quantizes again when loaded: on a CPU without an int8
    dot product that INT8 would be off (0.28 on a wide-activation MLP under AVX2)."""
    from nano.runtimes.model_files import ModelLoadError
    from nano.runtimes.backends.torchao_int8 import TorchaoInt8Model

    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 4)).eval()
    method = get_method("compile_int8_torchao")
    if current().int8_saturates:
        with pytest.raises(ModelLoadError, match="saturate on a CPU without an int8 dot"):
            TorchaoInt8Model.from_module(model, method, None, None, None)
    else:
        assert TorchaoInt8Model.from_module(model, method, None, None, None) is not None
