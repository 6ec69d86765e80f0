"""The IPEX lane: every ``*_ipex`` path built, run on fresh values, saved and loaded in a
fresh process, and training with ``use_ipex=True``. IPEX 2.8 needs torch 2.8, so these run
in the environment ``scripts/setup-ipex.sh`` builds (``scripts/test-ipex.sh``); in the main
one they are skipped, saying why."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nano import InferenceOptimizer, Trainer, TorchNano
from nano.runtimes.backends.ipex import ipex_unavailable
from nano.search.judgement import OutputJudgement
from tests.conftest import accuracy
from tests.fresh_process import check_in_fresh_process
from tests.inference.models import SmallCNN
from tests.trainer.jobs import QUIET

pytestmark = [pytest.mark.ipex,
              pytest.mark.skipif(ipex_unavailable() is not None,
                                 reason=f"IPEX lane: {ipex_unavailable()} "
                                        f"(scripts/setup-ipex.sh builds its environment)")]

# BigDL-Nano's call for each method, on a model and a sample
FORMS = {
    "fp32_ipex": lambda m, x, c: InferenceOptimizer.trace(m, use_ipex=True, input_sample=x),
    "bf16_ipex": lambda m, x, c: InferenceOptimizer.quantize(m, precision="bf16", use_ipex=True,
                                                            input_sample=x),
    "jit_fp32_ipex": lambda m, x, c: InferenceOptimizer.trace(m, accelerator="jit",
                                                              use_ipex=True, input_sample=x),
    "jit_bf16_ipex": lambda m, x, c: InferenceOptimizer.quantize(
        m, precision="bf16", accelerator="jit", use_ipex=True, input_sample=x),
    "int8_ipex": lambda m, x, c: InferenceOptimizer.quantize(m, precision="int8", use_ipex=True,
                                                            calib_data=c, input_sample=x),
}


@pytest.mark.parametrize("name", list(FORMS))
def test_each_ipex_method_is_right_on_fresh_values_and_after_a_fresh_load(name, digits,
                                                                          digits_cnn, tmp_path):
    (x, _), (tx, ty) = digits
    model = FORMS[name](digits_cnn, x[:8], DataLoader(TensorDataset(x[:256]), batch_size=32))
    # the method built is the one named
    assert model.method.name == name
    with torch.no_grad():
        want, got = digits_cnn(tx), model(tx)
    verdict = OutputJudgement.decide(digits_cnn, want).judge([got], [want])
    precision = model.method.precision
    assert verdict.passes(precision), verdict.shortfall(precision)
    assert accuracy(got, ty) >= accuracy(want, ty) - 0.02
    if name.startswith("jit_") or precision == "int8":  # traced and frozen, with IPEX's ops
        assert isinstance(model.module, torch.jit.ScriptModule)
        graph = str(model.module.graph)
        assert "ipex" in graph, graph[:2000]
    InferenceOptimizer.save(model, str(tmp_path / "m"))
    loaded = check_in_fresh_process(str(tmp_path / "m"), (tx[:16],), got[:16], str(tmp_path),
                                    "__import__('tests.inference.models').inference.models"
                                    ".SmallCNN()")
    assert loaded == model.method.name


def test_optimize_tries_every_ipex_candidate(digits, digits_cnn):
    (x, y), (tx, ty) = digits
    opt = InferenceOptimizer()
    names = ["fp32_ipex", "bf16_ipex", "jit_fp32_ipex", "jit_bf16_ipex", "int8_ipex"]
    opt.optimize(digits_cnn, DataLoader(TensorDataset(x[:512], y[:512]), batch_size=32),
                 validation_data=DataLoader(TensorDataset(tx, ty), batch_size=64),
                 metric=accuracy, includes=names, latency_sample_num=10, latency_budget=1,
                 early_stop_factor=None, search_mode="all")
    rows = {r.name: r for r in opt.results}
    for name in names:
        assert rows[name].status == "ok", (name, rows[name].status, rows[name].detail)


class DigitsModule(__import__("lightning.pytorch", fromlist=["LightningModule"]).LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = SmallCNN()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, i):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def _test_accuracy(net, digits, bf16=False):
    _, (tx, ty) = digits
    net.eval()
    # bf16 training with IPEX leaves the module's weights in bf16 (IPEX keeps the fp32
    # master copy in the optimizer): it runs under bf16 autocast, as it trained
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        return accuracy(net(tx).float(), ty)


@pytest.mark.parametrize("precision", ["32", "bf16"])
def test_trainer_with_ipex_trains_to_the_accuracy_without(precision, digits):
    (x, y), _ = digits
    results = {}
    for use_ipex in (False, True):
        module = DigitsModule()
        loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=False)
        Trainer(max_epochs=3, use_ipex=use_ipex, precision=precision, **QUIET).fit(module,
                                                                                   loader)
        results[use_ipex] = _test_accuracy(module.net, digits, precision == "bf16")
    assert results[False] > 0.85
    assert abs(results[True] - results[False]) < 0.03, results


class DigitsNano(TorchNano):
    def train(self, digits):
        (x, y), _ = digits
        torch.manual_seed(0)
        net = SmallCNN()
        optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
        loader = DataLoader(TensorDataset(x, y), batch_size=64)
        model, optimizer, loader = self.setup(net, optimizer, loader)
        model.train()
        for _ in range(3):
            for xb, yb in loader:
                optimizer.zero_grad()
                self.backward(nn.functional.cross_entropy(model(xb), yb))
                optimizer.step()
        return _test_accuracy(net, digits)


def test_torch_nano_with_ipex_trains_to_the_accuracy_without(digits):
    without = DigitsNano().train(digits)
    with_ipex = DigitsNano(use_ipex=True).train(digits)
    assert without > 0.85
    assert abs(with_ipex - without) < 0.03, (without, with_ipex)
