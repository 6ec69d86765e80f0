"""Two pinned processes with batch b each train exactly like one process with batch 2b."""

import json
import os
import subprocess
import sys
import textwrap

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from nano import Trainer, nano
from tests.trainer.jobs import (LR, QUIET, LoopNano, RegressionModule, linear, regression_data,
                                sgd_loop)

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # every test starts processes
B = 4


def reference():
    model = linear()
    sgd_loop(model, torch.optim.SGD(model.parameters(), lr=LR),
             DataLoader(regression_data(), batch_size=2 * B))
    return model


def assert_same(a, b):
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)


def assert_ranks_pinned(out_dir, n=2):
    ranks = [json.load(open(os.path.join(out_dir, f"rank{r}.json"))) for r in range(n)]
    cpu_sets = [set(int(c) for c in r["cpus"].replace("-", ",").split(",")) for r in ranks]
    cores = len(os.sched_getaffinity(0))
    if cores >= n:
        assert not set.intersection(*cpu_sets), f"ranks share cores: {cpu_sets}"
    for r, cpus in zip(ranks, cpu_sets):
        assert r["threads"] == len(cpus), r
        assert set(r["affinity"]) <= cpus, r


def test_nano_decorator_matches_single_process(tmp_path):
    model = linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    out = nano(num_processes=2, auto_lr=False)(sgd_loop)(
        model, optimizer, loader=DataLoader(regression_data(), batch_size=B), out_dir=str(tmp_path))
    assert out == {"rank": 0}
    assert_same(model, reference())
    assert_ranks_pinned(tmp_path)


def test_torch_nano_matches_single_process(tmp_path):
    model = linear()
    world = LoopNano(num_processes=2, auto_lr=False).train(model, B, out_dir=str(tmp_path))
    assert world == 2
    assert_same(model, reference())
    assert_ranks_pinned(tmp_path)


def test_trainer_matches_single_process_from_python_c(tmp_path):
    """Run from `python -c` (no __main__ file, no guard), as a notebook would."""
    code = textwrap.dedent(f"""
        import torch
        from nano import Trainer
        from tests.trainer.jobs import QUIET, RegressionModule, regression_data
        from torch.utils.data import DataLoader
        model = RegressionModule({B}, out_dir={str(tmp_path)!r})
        trainer = Trainer(num_processes=2, auto_lr=False, max_epochs=2,
                          use_distributed_sampler=False, **QUIET)
        trainer.fit(model)
        metrics = trainer.validate(model, DataLoader(regression_data(), batch_size=8))
        after_validate = dict(trainer.callback_metrics)
        tested = trainer.test(model, DataLoader(regression_data(), batch_size=8))
        callback = dict(trainer.callback_metrics)  # predict empties them, as in Lightning
        predicted = trainer.predict(model, DataLoader(regression_data(), batch_size=8))
        torch.save({{"state": model.state_dict(), "metrics": metrics, "tested": tested,
                    "predicted": torch.cat(predicted), "callback": after_validate,
                    "callback_test": callback}},
                   {str(tmp_path / 'out.pt')!r})
    """)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt")
    model = RegressionModule(B)
    model.load_state_dict(out["state"])
    plain = RegressionModule(2 * B)
    pl.Trainer(max_epochs=2, **QUIET).fit(plain)
    assert_same(model, plain)
    assert out["metrics"][0]["val_loss"] < 0.01
    assert out["tested"][0]["test_loss"] < 0.01
    x, _ = regression_data().tensors
    with torch.no_grad():
        torch.testing.assert_close(out["predicted"], model(x))  # all inputs, in order
    assert "val_loss" in out["callback"] and "test_loss" in out["callback_test"]
    assert_ranks_pinned(tmp_path)


def test_spawn_backend_with_main_guard(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import torch
        from torch.utils.data import DataLoader
        from nano import nano
        from tests.trainer.jobs import LR, linear, regression_data, sgd_loop

        if __name__ == "__main__":
            model = linear()
            train = nano(num_processes=2, auto_lr=False, distributed_backend="spawn")(sgd_loop)
            train(model, torch.optim.SGD(model.parameters(), lr=LR),
                  DataLoader(regression_data(), batch_size={B}))
            torch.save(model.state_dict(), {str(tmp_path / 'w.pt')!r})
    """))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root)
    done = subprocess.run([sys.executable, str(script)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    model = linear()
    model.load_state_dict(torch.load(tmp_path / "w.pt"))
    assert_same(model, reference())


def test_single_process_trainer_is_plain_lightning():
    model = RegressionModule(2 * B)
    Trainer(max_epochs=2, auto_lr=False, **QUIET).fit(model)
    plain = RegressionModule(2 * B)
    pl.Trainer(max_epochs=2, **QUIET).fit(plain)
    assert_same(model, plain)
