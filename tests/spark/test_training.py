"""The same Trainer / @nano code trained in Spark tasks with TorchDistributor; weights come back."""

import pytest
import torch

import nano.spark as ns
from tests.spark import jobs


def _loss(model) -> float:
    with torch.no_grad():
        return sum(torch.nn.functional.mse_loss(model(x), y).item() for x, y in jobs.data())


@pytest.mark.slow
def test_trainer_code_runs_as_spark_tasks_and_rank0_weights_come_back(spark):
    module = jobs.Regressor()
    before = _loss(module.net)
    result = ns.run_training(jobs.fit_with_trainer, module, num_processes=2)
    assert result["world_size"] == 2
    assert result["threads"] == int(spark.conf.get("spark.task.cpus"))
    after = _loss(module.net)  # the driver's module now holds rank 0's weights
    assert after < before / 10, (before, after)


@pytest.mark.slow
def test_a_nano_decorated_loop_runs_as_spark_tasks(spark):
    model = jobs.two_layers()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    before = _loss(model)
    result = ns.run_training(jobs.loop, model, optimizer, jobs.data(), num_processes=2)
    assert result["world_size"] == 2
    # the distributed sampler splits 8 batches over 2 ranks: rank 0 saw 4 per epoch
    assert len(result["losses"]) == 3 * 4
    assert _loss(model) < before / 10


def test_bad_training_options_are_one_line(spark):
    with pytest.raises(ValueError) as e:
        ns.run_training(jobs.loop, num_processes=0)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError) as e:
        ns.run_training("train.py")
    assert "\n" not in str(e.value)
