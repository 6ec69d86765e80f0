"""The BigDL-Nano 2.4 forms that broke a script before #26, each as its documentation or its own
test suite uses it. Where a processor kind (native bf16 or not) or an installed package (IPEX)
changes the answer, the test states what each case must do."""

import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nano import InferenceOptimizer, TorchNano, Trainer
from nano.trainer import AutoLR
from nano.errors import NanoError, NanoTypeError, NanoValueError
from nano.runtimes.backends.ipex import ipex_unavailable
from nano.search.candidates import CandidateResult
from nano.runtimes.registry import get_method
from tests.compat import training_jobs as jobs
from tests.compat.test_inference_forms import Masked


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, a, b):
        return self.fc(a - b)


def loader(*tensors, batch=4):
    return DataLoader(TensorDataset(*tensors), batch_size=batch)


def fresh(*shape):
    return torch.randn(*shape)


# -- inference ----------------------------------------------------------------------------

@pytest.mark.parametrize("status, detail, words", [
    ("ok", "", "successful"), ("drift", "", "successful"), ("slow", "", "early stopped"),
    ("skipped", "not tried: faster methods ran", "early stopped"),
    ("unavailable", "missing dependency: pip install x", "lack dependency"),
    ("failed", "failed to convert: no rule for aten::foo", "fail to convert"),
    ("failed", "RuntimeError in forward", "fail to forward"),
    ("crashed", "signal 11", "fail to forward"), ("timeout", "", "fail to forward"),
    ("memory", "", "fail to forward"),
])
def test_optimized_model_dict_status_speaks_bigdls_words(status, detail, words):
    from nano.optimizer import bigdl_status
    from nano.search.measure import Latency

    latency = Latency(0.01, 0.009, 0.011, 10) if status in ("ok", "drift") else None
    row = CandidateResult(get_method("jit_fp32"), status, detail, latency)
    assert bigdl_status(row) == words


@pytest.mark.parametrize("accelerator", [None, "jit", "onnxruntime", "openvino"])
def test_input_sample_dataloader_with_targets_is_matched_to_forward(accelerator):
    torch.manual_seed(0)
    one, two = nn.Linear(4, 3).eval(), TwoInputs().eval()
    targets = torch.randint(0, 3, (8,))
    fast = InferenceOptimizer.trace(one, input_sample=loader(fresh(8, 4), targets),
                                    accelerator=accelerator)
    x = fresh(4, 4)
    torch.testing.assert_close(fast(x), one(x), rtol=1e-4, atol=1e-4)
    fast2 = InferenceOptimizer.trace(two, input_sample=loader(fresh(8, 4), fresh(8, 4), targets),
                                     accelerator=accelerator)
    a, b = fresh(4, 4), fresh(4, 4)
    torch.testing.assert_close(fast2(a, b), two(a, b), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_optimize_takes_a_dataloader_with_targets_as_input_sample():
    torch.manual_seed(0)
    two = TwoInputs().eval()
    data = loader(fresh(16, 4), fresh(16, 4), torch.randint(0, 3, (16,)))
    opt = InferenceOptimizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt.optimize(two, training_data=data, input_sample=data, includes=["jit_fp32"],
                     latency_sample_num=5, final_round=False)
    a, b = fresh(4, 4), fresh(4, 4)
    fast = opt.optimized_model_dict["jit_fp32"]
    assert fast["status"] == "successful"
    torch.testing.assert_close(fast["model"](a, b), two(a, b), rtol=1e-4, atol=1e-4)


def test_excluding_original_is_ignored_with_a_one_line_note():
    from nano.search.search_options import SearchOptions

    with pytest.warns(UserWarning, match=r"'original' is always tried.*ignored") as seen:
        options = SearchOptions.from_call({}, excludes=["original", "jit_fp32"])
    assert len(seen) == 1 and "\n" not in str(seen[0].message)
    names = [m.name for m in options.methods()]
    assert names[0] == "original" and "jit_fp32" not in names


@pytest.mark.parametrize("accelerator", ["onnxruntime", "openvino", "jit"])
def test_get_context_applies_the_models_thread_num(accelerator):
    model = nn.Linear(4, 3).eval()
    fast = InferenceOptimizer.trace(model, input_sample=fresh(2, 4), accelerator=accelerator,
                                    thread_num=1)
    before = torch.get_num_threads()
    with InferenceOptimizer.get_context(fast):
        assert torch.get_num_threads() == 1
        fast(fresh(2, 4))
    assert torch.get_num_threads() == before
    with InferenceOptimizer.get_context(model):  # a plain module: nothing to apply
        assert torch.get_num_threads() == before


@pytest.mark.ipex  # the IPEX lane runs it where IPEX imports (its first branch)
def test_jit_int8_is_ipex_int8_traced_or_one_line_naming_what_gives_int8():
    # fixed weights and values: a row whose three outputs are near zero has a fragile cosine
    # (unseeded, one CI run saw 0.947; over 64 rows of 12 seeds the worst was 0.41)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    calib = loader(fresh(32, 4), torch.zeros(32))
    if ipex_unavailable() is None:  # IPEX imports beside this torch: BigDL's TorchScript INT8
        fast = InferenceOptimizer.quantize(model, precision="int8", accelerator="jit",
                                           calib_data=calib)
        assert fast.method.use_ipex and fast.method.precision == "int8"
        x = fresh(4, 4)
        assert torch.nn.functional.cosine_similarity(fast(x), model(x)).min() > 0.95
    else:
        with pytest.raises(NanoValueError, match=r"accelerator='jit' INT8 is IPEX's static INT8 "
                                                 r"traced to TorchScript.*'onnxruntime'") as e:
            InferenceOptimizer.quantize(model, precision="int8", accelerator="jit",
                                        calib_data=calib)
        assert "\n" not in str(e.value)


def test_jit_bf16_saves_with_bf16_compression_and_loads_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(4, 3).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # emulated bf16 on AVX2 machines
        fast = InferenceOptimizer.quantize(model, precision="bf16", accelerator="jit",
                                           input_sample=fresh(2, 4))
    with pytest.warns(UserWarning, match="TorchScript graph.*saved as it is"):
        InferenceOptimizer.save(fast, str(tmp_path / "jit_bf16"), compression="bf16")
    x = fresh(2, 4)
    torch.save(x, tmp_path / "x.pt")
    code = ("import sys, warnings, torch; warnings.simplefilter('ignore')\n"
            "from nano import InferenceOptimizer\n"
            f"m = InferenceOptimizer.load({str(tmp_path / 'jit_bf16')!r})\n"
            f"out = m(torch.load({str(tmp_path / 'x.pt')!r}))\n"
            "print(out.dtype, m.method.name)\n"
            f"torch.save(out, {str(tmp_path / 'out.pt')!r})\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["torch.float32", "jit_bf16"]
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), model(x), rtol=0.05, atol=0.05)


@pytest.mark.emulated  # run again as an AVX2 CPU (no native bf16) by scripts/test-emulated.sh
@pytest.mark.parametrize("accelerator", [None, "jit"])
def test_bf16_models_return_the_originals_dtype_on_every_cpu(accelerator):
    """BigDL returned bf16 tensors; Nano returns what the original returns (float32), with
    native bf16 or without it (README: "Coming from BigDL-Nano")."""
    model = nn.Linear(4, 3).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fast = InferenceOptimizer.quantize(model, precision="bf16", accelerator=accelerator,
                                           input_sample=fresh(2, 4))
    assert fast(fresh(2, 4)).dtype == torch.float32


def test_onnxruntime_model_exposes_its_session_options():
    import onnxruntime as ort

    fast = InferenceOptimizer.trace(nn.Linear(4, 3).eval(), input_sample=fresh(2, 4),
                                    accelerator="onnxruntime", thread_num=1)
    assert isinstance(fast.session_options, ort.SessionOptions)
    assert fast.session_options.intra_op_num_threads == 1


def test_openvino_async_predict_takes_bigdls_dataloader_and_list_forms():
    torch.manual_seed(0)
    two = TwoInputs().eval()
    a, b, y = fresh(8, 4), fresh(8, 4), torch.zeros(8)
    fast = InferenceOptimizer.trace(two, input_sample=(a[:2], b[:2]), accelerator="openvino")
    expected = [two(a[i:i + 2], b[i:i + 2]) for i in range(0, 8, 2)]
    by_loader = fast.async_predict(loader(a, b, y, batch=2), num_requests=2)
    by_lists = fast.async_predict([[a[i:i + 2], b[i:i + 2]] for i in range(0, 8, 2)])
    assert len(by_loader) == len(by_lists) == len(expected) == 4
    for got_loader, got_list, want in zip(by_loader, by_lists, expected):
        torch.testing.assert_close(got_loader, want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got_list, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(NanoTypeError, match="takes a list of inputs"):
        fast.async_predict(a)


def test_trainer_validates_a_model_traced_from_a_compiled_plain_module():
    import torchmetrics

    model = jobs.two_layers()
    lit = Trainer.compile(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.05),
                          metrics=[torchmetrics.MeanAbsoluteError()])
    trainer = Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(lit, jobs.data())
    fast = InferenceOptimizer.trace(model, input_sample=torch.randn(4, 2),
                                    accelerator="onnxruntime")
    plain = trainer.validate(lit, jobs.data(), verbose=False)[0]
    traced = trainer.validate(fast, jobs.data(), verbose=False)[0]
    assert set(traced) == set(plain) and "val/loss" in traced
    for key in plain:
        assert traced[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-5), key
    tested = trainer.test(fast, jobs.data(), verbose=False)[0]
    assert tested["test/loss"] == pytest.approx(plain["val/loss"], rel=1e-4)


@pytest.mark.parametrize("accelerator", ["jit", "onnxruntime", "openvino"])
def test_a_traced_model_called_without_a_traced_tensor_raises_a_runtime_error(accelerator):
    fast = InferenceOptimizer.trace(Masked().eval(), input_sample=(fresh(2, 8), torch.ones(2, 3)),
                                    accelerator=accelerator)
    with pytest.raises(RuntimeError, match="'mask' must be a tensor") as e:
        fast(fresh(2, 8), None)
    assert isinstance(e.value, NanoError)
    plain = InferenceOptimizer.trace(Masked().eval(), input_sample=(fresh(2, 8),),
                                     accelerator=accelerator)
    with pytest.raises(RuntimeError, match="'mask' was None"):
        plain(fresh(2, 8), torch.ones(2, 3))


@pytest.mark.parametrize("metric", [lambda pred: 1.0, lambda pred, target, extra: 1.0])
def test_a_metric_with_the_wrong_signature_is_a_runtime_error_before_any_work(metric):
    model = nn.Linear(4, 3).eval()
    data = (fresh(16, 4), torch.randint(0, 3, (16,)))
    with pytest.raises(RuntimeError, match="metric must take two arguments") as e:
        InferenceOptimizer.quantize(model, precision="int8", accelerator="onnxruntime",
                                    calib_data=data, validation_data=data, metric=metric,
                                    accuracy_criterion=0.01)
    assert isinstance(e.value, NanoTypeError)
    with pytest.raises(NanoTypeError, match="metric must take two arguments"):
        InferenceOptimizer().optimize(model, data, validation_data=data, metric=metric)


def test_bigdls_metric_of_the_model_alone_is_accepted():
    from nano.search.measure import check_metric, evaluate_metric

    def metric(model):
        return model(torch.ones(1, 4)).sum().item()

    check_metric(metric)
    model = nn.Linear(4, 3).eval()
    assert evaluate_metric(model, metric, [], []) == pytest.approx(metric(model))


# -- training ------------------------------------------------------------------------------

def test_bigdls_strategy_names_map_to_a_distributed_backend():
    from nano.trainer.placement import bigdl_strategy

    for name, backend in (("subprocess", "subprocess"), ("spawn", "spawn"),
                          ("ddp", "subprocess")):
        kwargs = {"strategy": name, "max_epochs": 1}
        assert bigdl_strategy(kwargs, "subprocess") == backend and kwargs == {"max_epochs": 1}
    kwargs = {"strategy": "deepspeed"}
    assert bigdl_strategy(kwargs, "spawn") == "spawn" and kwargs == {"strategy": "deepspeed"}
    with pytest.raises(ValueError, match=r"drop \['strategy'\]"):
        TorchNano(strategy="deepspeed")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["subprocess", "ddp"])
def test_torch_nano_two_processes_by_strategy_name_train_exactly(strategy):
    """BigDL's correctness toy: 2 processes on half a batch each at lr 0.5 give the weight
    one process gets at lr 0.25 (auto_lr off, as BigDL's test has it)."""
    assert jobs.ExactSteps(auto_lr=False).train(0.25) == 0.25
    assert jobs.ExactSteps(num_processes=2, strategy=strategy, auto_lr=False).train(0.5) == 0.25


@pytest.mark.slow
def test_torch_nano_load_state_dict_after_two_processes_matches_a_plain_load():
    """BigDL's load_state_dict test, auto_lr on (its default): each setup starts the lr ramp
    at the user's own lr, so the toy's weight is exact."""
    assert jobs.StateDictRoundTrip().train(0.25) == 0.25
    assert jobs.StateDictRoundTrip(num_processes=2).train(0.5) == 0.25


@pytest.mark.slow
def test_torch_nano_auto_lr_ramps_as_bigdls_test_reads_it():
    max_step, error = jobs.RampReadsMaxStep(num_processes=2, auto_lr=True).train(0.01)
    assert max_step == 100 and error < 1e-5


@pytest.mark.slow
def test_channels_last_with_two_processes_trains_to_the_same_weights():
    """BigDL's channels_last toy: one SGD step, exact equality, 1 or 2 processes, with and
    without channels_last, in TorchNano and in Trainer.compile + fit."""
    for kwargs in (dict(), dict(channels_last=True), dict(num_processes=2, channels_last=True),
                   dict(num_processes=2, strategy="subprocess", channels_last=True)):
        assert torch.equal(jobs.ConvToyNano(**kwargs).train(), jobs.CONV_TOY_RESULT), kwargs
    for kwargs in (dict(channels_last=True), dict(num_processes=2, channels_last=True)):
        model = jobs.ConvOneStep()
        lit = Trainer.compile(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.25))
        Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False,
                **kwargs).fit(lit, jobs.conv_toy_data())
        assert torch.equal(lit.model.conv1.weight.detach().contiguous(),
                           jobs.CONV_TOY_RESULT), kwargs


@pytest.mark.emulated
def test_trainer_bf16_runs_on_every_cpu_kind():
    """BigDL used Lightning's bf16 autocast whatever the CPU; so does Nano (emulated, with a
    one-line warning, where the CPU has no native bf16: tests/trainer/test_options.py)."""
    from nano.launcher.topology import read_topology

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trainer = Trainer(precision="bf16", max_epochs=1, logger=False)
    assert "bf16" in str(trainer.precision)
    emulated = [w for w in seen if "emulated" in str(w.message)]
    assert len(emulated) == (0 if read_topology().has_bf16 else 1)


@pytest.mark.slow
def test_trainer_auto_lr_is_bigdls_the_lr_the_training_step_sees():
    """BigDL's test_scale_lr: with a scheduler, its base_lrs (and the lr each step sees) are
    N times the user's from the start; without one, the lr ramps in the optimizer from the
    user's own to N times it over a tenth of the run's steps."""
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                 enable_model_summary=False)
    lit = jobs.LitSeesLr(scheduler=True)
    Trainer(num_processes=2, max_epochs=2, **quiet).fit(lit, jobs.data())
    assert lit.base[:2].tolist() == pytest.approx([0.2, 0.2])
    # 4 steps an epoch in each of 2 processes; StepLR halves it after each epoch
    assert lit.seen[:8].tolist() == pytest.approx([0.2] * 4 + [0.1] * 4)
    ramp = jobs.LitSeesLr()
    Trainer(num_processes=2, max_epochs=10, **quiet).fit(ramp, jobs.data())
    # 40 steps: the ramp spans 4 of them, from 0.1 to 0.2
    assert ramp.seen[:6].tolist() == pytest.approx([0.1, 0.125, 0.15, 0.175, 0.2, 0.2])
    # Nano's own form, AutoLR(...), scales inside optimizer.step(), which in Lightning wraps
    # training_step (its closure): the step sees the ramp, over the steps asked for
    own = jobs.LitSeesLr()
    Trainer(num_processes=2, max_epochs=1, auto_lr=AutoLR(warmup_steps=2),
            **quiet).fit(own, jobs.data())
    assert own.seen[:4].tolist() == pytest.approx([0.1, 0.15, 0.2, 0.2])
