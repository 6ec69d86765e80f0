"""The same Trainer / @nano code trained in Spark tasks with TorchDistributor; weights come back.

Both forms run in one job (one TorchDistributor start-up, about 8 s, instead of two)."""

import pytest
import torch

import nano.spark as ns
from tests.spark import jobs


def _loss(model) -> float:
    with torch.no_grad():
        return sum(torch.nn.functional.mse_loss(model(x), y).item() for x, y in jobs.data())


@pytest.mark.slow
def test_trainer_and_nano_code_run_as_spark_tasks_and_rank0_weights_come_back(spark):
    module = jobs.Regressor()
    model = jobs.two_layers()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    before = _loss(module.net), _loss(model)
    fitted, looped = ns.run_training(jobs.both_forms, module, model, optimizer, num_processes=2)
    assert fitted["world_size"] == looped["world_size"] == 2
    assert fitted["threads"] == int(spark.conf.get("spark.task.cpus"))
    # the distributed sampler splits 8 batches over 2 ranks: rank 0 saw 4 per epoch
    assert len(looped["losses"]) == 3 * 4
    # the driver's modules now hold rank 0's weights
    assert _loss(module.net) < before[0] / 10 and _loss(model) < before[1] / 10, before


def test_bad_training_options_are_one_line(spark):
    with pytest.raises(ValueError) as e:
        ns.run_training(jobs.loop, num_processes=0)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError) as e:
        ns.run_training("train.py")
    assert "\n" not in str(e.value)
