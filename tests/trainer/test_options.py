"""Bad options fail before anything starts, with a message naming the fix; lr scaling is exact."""

import warnings

import pytest
import torch

from nano import TorchNano, Trainer, nano
from nano.launcher.topology import LogicalCpu, Topology
from nano.trainer import AutoLR
from nano.trainer.auto_lr import attach_lr_scaling
from nano.trainer.training_options import training_options


def machine(cores=4, flags=("avx512f",)):
    cpus = [LogicalCpu(id=i, core=i, socket=0, node=0) for i in range(cores)]
    return Topology.build(cpus, flags=flags)


@pytest.mark.parametrize("make", [Trainer, TorchNano, nano])
def test_precision_typo(make):
    with pytest.raises(ValueError, match="precision must be 32 or 'bf16'"):
        make(precision="bf61")


def test_bf16_without_cpu_support_runs_emulated_with_one_warning():
    """BigDL-Nano trained in bf16 autocast whatever the CPU; Nano does too, and says once
    that it is emulated there."""
    with pytest.warns(RuntimeWarning, match=r"no native bf16 \(AVX2 only\).*emulated") as seen:
        options = training_options(precision="bf16", topology=machine(flags=("avx2",)))
    assert options.bf16 and len(seen) == 1 and "\n" not in str(seen[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert training_options(precision="bf16", topology=machine(flags=("avx512_bf16",))).bf16


def test_more_processes_than_cores_warns_and_shares():
    with pytest.warns(UserWarning, match="only 2 usable physical cores"):
        options = training_options(num_processes=3, topology=machine(cores=2))
    assert len(options.cpu_sets) == 3


def test_cores_split_evenly_and_disjoint():
    options = training_options(num_processes=2, topology=machine(cores=4))
    assert options.cpu_sets == ((0, 1), (2, 3))


def test_cpu_for_each_process_must_match():
    with pytest.raises(ValueError, match="has 1 core lists but num_processes=2"):
        training_options(num_processes=2, cpu_for_each_process=[[0]], topology=machine())
    with pytest.raises(ValueError, match="may not use"):
        training_options(num_processes=1, cpu_for_each_process=[[9]], topology=machine())
    assert training_options(num_processes=2, cpu_for_each_process=[[3], [1]],
                            topology=machine()).cpu_sets == ((3,), (1,))


@pytest.mark.parametrize("kwargs, message", [
    ({"num_processes": 0}, "num_processes must be a whole number"),
    ({"num_processes": "2"}, "num_processes must be a whole number"),
    ({"distributed_backend": "fork"}, "distributed_backend must be one of"),
    ({"channels_last": "yes"}, "channels_last must be True or False"),
    ({"auto_lr": 2}, "auto_lr must be True, False, nano.trainer.AutoLR"),
])
def test_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        training_options(topology=machine(), **kwargs)


def test_placement_kwargs_refused_with_num_processes():
    with pytest.raises(ValueError, match="drop \\['devices'\\]"):
        Trainer(num_processes=2, devices=2)
    with pytest.raises(ValueError, match="drop \\['strategy'\\]"):
        TorchNano(strategy="fsdp")  # BigDL's names (ddp, subprocess, spawn) are mapped


def test_auto_lr_warmup_values():
    with pytest.raises(ValueError, match="warmup_steps"):
        AutoLR(warmup_steps=-1)
    cfg = AutoLR(warmup_steps=4)
    # BigDL-Nano's ramp: the first step at the user's own lr, world_size x it from step 4
    assert [cfg.factor(t, 3) for t in range(6)] == [1.0, 1.5, 2.0, 2.5, 3.0, 3.0]
    assert cfg.factor(0, 1) == 1.0
    assert AutoLR(warmup_steps=0).factor(0, 3) == 3.0  # no ramp


def test_lr_scaling_applies_only_inside_step_and_composes_with_schedulers():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    attach_lr_scaling(opt, world_size=2, config=AutoLR(warmup_steps=2))
    attach_lr_scaling(opt, world_size=2, config=AutoLR(warmup_steps=2))  # again: no second hooks
    moves = []
    for _ in range(3):
        before = p.item()
        p.grad = torch.ones(1)
        opt.step()
        sched.step()
        moves.append(before - p.item())
        assert opt.param_groups[0]["lr"] == sched.get_last_lr()[0]  # user sees the unscaled lr
    # step t uses lr_t * factor_t: 1.0*1, 0.5*1.5, 0.25*2
    assert moves == pytest.approx([1.0, 0.75, 0.5])


def test_decorator_checks_options_when_decorating():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="distributed_backend"):
            nano(distributed_backend="threads")


@pytest.mark.parametrize("make", [torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop])
def test_adaptive_optimizers_keep_their_lr_unless_asked(make):
    """Scaling Adam's lr for 2 processes cost 12 points of accuracy on benchmarks/training.py."""
    seen = []
    for config in (AutoLR(warmup_steps=0), AutoLR(warmup_steps=0, adaptive=True)):
        opt = make([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        attach_lr_scaling(opt, world_size=2, config=config)
        opt.register_step_pre_hook(lambda o, a, k: seen.append(o.param_groups[0]["lr"]))
        opt.param_groups[0]["params"][0].grad = torch.ones(1)
        opt.step()
    assert seen == pytest.approx([0.1, 0.2])
    assert AutoLR.from_dict({"warmup_epochs": 1, "adaptive": True}).per_epoch(3) == AutoLR(
        warmup_steps=3, adaptive=True, visible=True)  # BigDL's dict form: BigDL's behaviour


def test_bigdls_visible_scaling_scales_schedulers_at_once_and_ramps_the_rest():
    from nano.trainer.auto_lr import VisibleScaling

    p, q, r = (torch.nn.Parameter(torch.zeros(1)) for _ in range(3))
    scheduled = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(scheduled, step_size=1, gamma=0.5)
    ramped, adam = torch.optim.SGD([q], lr=0.1), torch.optim.Adam([r], lr=0.1)
    config = AutoLR(visible=True, warmup_fraction=0.1).for_run(40)
    assert config.warmup_steps == 4
    scaling = VisibleScaling([scheduled, ramped, adam], [sched], world_size=2, config=config)
    assert sched.base_lrs == [0.2] and scheduled.param_groups[0]["lr"] == 0.2
    seen = []
    for step in range(6):
        scaling.before_step(step)
        seen.append(ramped.param_groups[0]["lr"])
    assert seen == pytest.approx([0.1, 0.125, 0.15, 0.175, 0.2, 0.2])
    assert adam.param_groups[0]["lr"] == 0.1 and ramped.max_step == 4  # Adam: not scaled
    with pytest.raises(ValueError, match="warmup_fraction"):
        AutoLR(warmup_fraction=2)
