"""BigDL-Nano's training forms, as its documentation shows them, against Nano."""

import pytest
import torch

from nano import Trainer, nano
from nano.trainer import AutoLR
from tests.compat import training_jobs as jobs


def test_auto_lr_takes_bigdl_nanos_warmup_epochs():
    assert AutoLR.from_dict({"warmup_epochs": 2}) == AutoLR(warmup_epochs=2, visible=True)
    assert AutoLR(warmup_epochs=2).per_epoch(8) == AutoLR(warmup_steps=16)
    assert AutoLR(warmup_epochs=0).per_epoch(8) == AutoLR(warmup_steps=0)  # no ramp: N at once
    assert AutoLR(warmup_steps=5).per_epoch(None) == AutoLR(warmup_steps=5)
    with pytest.raises(ValueError, match="auto_lr takes 'warmup_epochs' or 'warmup_steps', got "
                                         r"\['warmup'\]"):
        nano(auto_lr={"warmup": 1})
    with pytest.raises(ValueError, match="warmup_epochs must be a whole number >= 0"):
        Trainer(auto_lr={"warmup_epochs": -1})
    with pytest.raises(ValueError, match="pass it to setup"):
        jobs.NoLoaderNano(auto_lr={"warmup_epochs": 1}).train(jobs.two_layers())


@pytest.mark.slow
def test_nano_decorator_with_a_loss_module_and_two_processes():
    """Every nn.Module argument used to be wrapped in DDP, and nn.MSELoss() killed the ranks."""
    model = jobs.two_layers()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = nano(num_processes=2)(jobs.loop_with_loss_module)(model, opt, jobs.data(),
                                                                torch.nn.MSELoss())
    assert len(losses) == 3 * 4  # rank 0's: 4 of the 8 batches per epoch
    assert losses[-1] < losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.slow
def test_torch_nano_setup_with_a_list_of_optimizers_and_a_second_model():
    model, critic = jobs.two_layers(), torch.nn.Linear(2, 1)
    before = [p.detach().clone() for p in list(model.parameters()) + list(critic.parameters())]
    assert jobs.TwoOptimizers(num_processes=2).train(model, jobs.data(), critic) == 2
    after = list(model.parameters()) + list(critic.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, after))  # every model trained
    assert jobs.TwoOptimizers().train(jobs.two_layers(), jobs.data(), critic) == 1


@pytest.mark.slow
def test_warmup_epochs_ramps_over_an_epoch_of_steps():
    # 2 processes, 8 batches: 4 steps per epoch per process, so the ramp takes 4 steps
    seen, scaling = jobs.WarmupNano(num_processes=2, auto_lr={"warmup_epochs": 1}).train(
        jobs.two_layers(), jobs.data())
    assert seen == [0.1, 0.125, 0.15, 0.175, 0.2, 0.2, 0.2, 0.2]  # BigDL's: step 0 unscaled
    assert scaling == (4, 8, 2.0)  # warm-up steps, steps taken, the last factor
    trainer = Trainer(num_processes=2, auto_lr={"warmup_epochs": 1}, max_epochs=2, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False)
    lit = jobs.LitRegression()
    trainer.fit(lit, jobs.data())
    assert lit.steps.item() == 8
    assert lit.lrs[:8].tolist() == pytest.approx([0.1, 0.125, 0.15, 0.175, 0.2, 0.2, 0.2, 0.2])


def test_trainer_compile_fit_validate_test_predict_save_load(tmp_path):
    import torchmetrics

    from nano import InferenceOptimizer

    model = jobs.two_layers()
    lit = Trainer.compile(model, torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.05),
                          metrics=[torchmetrics.MeanAbsoluteError()])
    assert Trainer.compile(lit) is lit  # a LightningModule is kept as it is
    trainer = Trainer(max_epochs=5, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    before = trainer.validate(lit, jobs.data(), verbose=False)[0]
    trainer.fit(lit, jobs.data())
    after = trainer.validate(lit, jobs.data(), verbose=False)[0]
    assert set(after) == {"val/loss", "val/MeanAbsoluteError"}
    assert after["val/loss"] < before["val/loss"] / 2
    assert set(trainer.test(lit, jobs.data(), verbose=False)[0]) == {
        "test/loss", "test/MeanAbsoluteError"}
    predictions = trainer.predict(lit, jobs.data())
    x = torch.cat([b[0] for b in jobs.data()])
    torch.testing.assert_close(torch.cat(predictions), model(x))

    # Trainer.save / Trainer.load: BigDL-Nano's forms, the same files as InferenceOptimizer's
    Trainer.save(model, str(tmp_path / "plain"))
    fresh = jobs.two_layers()
    with torch.no_grad():
        fresh[0].weight.zero_()
    assert Trainer.load(str(tmp_path / "plain"), fresh) is fresh  # weights loaded in place
    torch.testing.assert_close(fresh(x), model(x))
    fast = InferenceOptimizer.trace(model, accelerator="jit", input_sample=x[:2])
    Trainer.save(fast, str(tmp_path / "jit"))
    torch.testing.assert_close(Trainer.load(str(tmp_path / "jit"))(x), model(x))


def test_trainer_compile_says_what_is_missing():
    from nano.errors import NanoValueError

    lit = Trainer.compile(jobs.two_layers())  # no loss, no optimizer: fine for predict
    trainer = Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(NanoValueError, match="compiled without an optimizer"):
        trainer.fit(lit, jobs.data())
    with pytest.raises(NanoValueError, match="optimizer=.... takes a torch optimizer"):
        Trainer.compile(jobs.two_layers(), torch.nn.MSELoss(), optimizer="sgd")


def test_validate_test_predict_take_an_accelerated_model():
    from nano import InferenceOptimizer
    from nano.errors import NanoValueError

    model = jobs.two_layers()
    lit = Trainer.compile(model, torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.05))
    trainer = Trainer(max_epochs=3, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(lit, jobs.data())
    x = torch.cat([b[0] for b in jobs.data()])
    fast = InferenceOptimizer.trace(lit, accelerator="jit", input_sample=x[:2])
    calls = []
    fast.register_forward_hook(lambda *_: calls.append(1))
    eager = trainer.validate(lit, jobs.data(), verbose=False)[0]["val/loss"]
    got = trainer.validate(fast, jobs.data(), verbose=False)[0]["val/loss"]
    assert len(calls) == 8 and got == pytest.approx(eager, rel=1e-5)  # the fast model ran
    assert trainer.test(fast, jobs.data(), verbose=False)[0]["test/loss"] == pytest.approx(eager,
                                                                                            rel=1e-5)
    torch.testing.assert_close(torch.cat(trainer.predict(fast, jobs.data())), model(x))
    assert "forward" not in lit.__dict__  # the user's module is left as it was
    plain = InferenceOptimizer.trace(jobs.two_layers(), accelerator="jit", input_sample=x[:2])
    with pytest.raises(NanoValueError, match="built from a Sequential: trace the LightningModule"):
        trainer.validate(plain, jobs.data())


def test_setup_returns_the_prepared_optimizer_when_ipex_replaces_it(monkeypatch):
    """IPEX hands back a new optimizer; setup must return it prepared (Fabric-wrapped), in
    the caller's position, not the bare replacement."""
    import nano.trainer.torch_nano as torch_nano
    from nano import TorchNano

    replacement = {}

    def fake_ipex(model, optimizer, bf16):
        replacement["opt"] = torch.optim.SGD(model.parameters(), lr=0.01)
        return model, replacement["opt"]

    monkeypatch.setattr(torch_nano, "ipex_optimize", fake_ipex)
    fabric = TorchNano(use_ipex=True)
    model = jobs.two_layers()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    _, ready, loader = fabric.setup(model, opt, jobs.data())
    assert ready is not replacement["opt"] and ready.optimizer is replacement["opt"]
    assert len(loader) == 8
