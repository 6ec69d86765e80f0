"""patch_cuda / unpatch_cuda / patch_torch: a script written for a CUDA GPU runs on the CPU
unchanged, and unpatching gives back the very objects that were there."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from nano import patch_cuda, unpatch_cuda

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# everything the issue names, read the way user code reaches it
PATCHED = [
    (torch.Tensor, "to"), (torch.Tensor, "cuda"), (torch.Tensor, "pin_memory"),
    (torch.nn.Module, "to"), (torch.nn.Module, "cuda"), (torch, "device"), (torch, "zeros"),
    (torch, "ones"), (torch, "empty"), (torch, "full"), (torch, "rand"), (torch, "randn"),
    (torch, "randint"), (torch, "arange"), (torch, "tensor"), (torch, "as_tensor"),
    (torch, "zeros_like"), (torch, "eye"), (torch, "load"),
    (torch.amp.autocast_mode.autocast, "__init__"), (torch.amp.GradScaler, "__init__"),
    (torch.cuda, "is_available"), (torch.cuda, "device_count"), (torch.cuda, "synchronize"),
    (torch.cuda, "empty_cache"), (torch.cuda, "manual_seed"), (torch.cuda, "manual_seed_all"),
    (torch.cuda, "set_device"), (torch.cuda, "memory_allocated"),
    (torch.cuda, "max_memory_allocated"), (torch.cuda, "reset_peak_memory_stats"),
    (torch.cuda, "FloatTensor"), (dist, "init_process_group"), (dist, "new_group"),
    (DistributedDataParallel, "__init__"),
]


def snapshot():
    return [getattr(owner, name) for owner, name in PATCHED]


@pytest.fixture
def patched():
    patch_cuda()
    try:
        yield
    finally:
        unpatch_cuda()


def test_unpatch_gives_back_the_identical_objects():
    before = snapshot()
    patch_cuda()
    patch_cuda()  # twice is once
    changed = [f"{getattr(o, '__name__', o)}.{n}" for (o, n), a, b in zip(PATCHED, before,
                                                                           snapshot()) if a is b]
    assert changed == [], "not patched"
    unpatch_cuda()
    assert all(a is b for a, b in zip(before, snapshot()))
    assert "cuda" not in torch.Tensor.__dict__ and "to" not in torch.Tensor.__dict__
    unpatch_cuda()  # unpatching an unpatched process does nothing
    assert all(a is b for a, b in zip(before, snapshot()))


class WithBuffers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Sequential(torch.nn.BatchNorm1d(3))  # nested buffers
        self.register_buffer("steps", torch.zeros(1))

    def forward(self, x):
        return self.inner(x) + self.steps


def test_every_way_of_asking_for_cuda_stays_on_the_cpu(patched, tmp_path):
    cuda = torch.device("cuda")
    assert cuda == torch.device("cpu") and isinstance(cuda, torch.device)
    assert torch.device("cpu", 0).index == 0  # other devices are made as before
    x = torch.randn(2, 3)
    for moved in (x.cuda(), x.cuda(1), x.to("cuda"), x.to("cuda:1"), x.to(0), x.to(cuda),
                  x.to(device="cuda"), x.pin_memory()):
        assert moved.device.type == "cpu"
    assert x.to("cuda", torch.float64).dtype == torch.float64  # the dtype still applies
    made = [torch.zeros(2, device="cuda"), torch.ones(2, device=cuda), torch.rand(2, device=0),
            torch.randn(2, device="cuda:0"), torch.randint(3, (2,), device="cuda"),
            torch.arange(3, device="cuda"), torch.tensor([1.0], device="cuda"),
            torch.full((2,), 1.0, device="cuda"), torch.eye(2, device="cuda"),
            torch.zeros_like(x, device="cuda"), torch.empty(2, device="cuda"),
            torch.cuda.FloatTensor(2)]
    assert all(t.device.type == "cpu" for t in made)
    model = WithBuffers().cuda()
    model.to("cuda:0")
    assert {t.device.type for t in list(model.parameters()) + list(model.buffers())} == {"cpu"}
    assert model(torch.randn(4, 3)).shape == (4, 3)
    # a checkpoint asked to load onto the GPU loads onto the CPU
    torch.save({"w": torch.ones(2).cuda()}, tmp_path / "ckpt.pt")
    for where in ("cuda", "cuda:0", cuda, None):
        assert torch.load(tmp_path / "ckpt.pt", map_location=where)["w"].device.type == "cpu"
    # housekeeping is harmless
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.set_device(0)
    torch.cuda.manual_seed(0)
    torch.cuda.manual_seed_all(0)
    torch.cuda.reset_peak_memory_stats()
    assert torch.cuda.memory_allocated() == 0 and torch.cuda.max_memory_allocated() == 0
    assert torch.cuda.is_available() is False and torch.cuda.device_count() == 0


def test_a_library_choosing_its_device_stays_on_the_cpu(patched):
    import lightning

    trainer = lightning.Trainer(accelerator="auto", devices=1, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False)
    assert trainer.strategy.root_device.type == "cpu"


def test_cuda_autocast_is_cpu_bf16_and_the_scaler_passes_through(patched):
    from nano.launcher.topology import read_topology

    if not read_topology().has_bf16:
        pytest.skip("this CPU has no bf16: see test_autocast_without_bf16_is_fp32")
    layer, x = torch.nn.Linear(4, 4), torch.randn(2, 4)
    with torch.autocast("cuda", dtype=torch.float16):
        assert layer(x).dtype == torch.bfloat16
    with pytest.warns(FutureWarning):  # torch's own deprecation of the cuda.amp names
        with torch.cuda.amp.autocast():
            assert layer(x).dtype == torch.bfloat16
    scaler = torch.amp.GradScaler("cuda")
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    loss = layer(x).sum()
    assert scaler.scale(loss) is loss
    scaler.scale(loss).backward()
    before = layer.weight.detach().clone()
    scaler.step(opt)
    scaler.update()
    assert not torch.equal(before, layer.weight)  # the step was taken


def test_autocast_without_bf16_is_fp32_with_one_warning(monkeypatch):
    import nano.cuda_patch as cuda_patch
    from nano.launcher import topology

    real = topology.read_topology()
    monkeypatch.setattr(topology, "read_topology",
                        lambda: topology.Topology.build(real.cpus, None, None, real.source,
                                                        real.flags - {"avx512_bf16", "amx_bf16"}))
    cuda_patch._half_dtype.cache_clear()
    patch_cuda()
    try:
        layer, x = torch.nn.Linear(4, 4), torch.randn(2, 4)
        with pytest.warns(UserWarning, match="no bf16 instructions, so CUDA autocast runs in "
                                             "fp32"):
            with torch.autocast("cuda"):
                assert layer(x).dtype == torch.float32
        with torch.autocast("cuda"):  # warned once only
            assert layer(x).dtype == torch.float32
    finally:
        unpatch_cuda()
        cuda_patch._half_dtype.cache_clear()


CUDA_SCRIPT = """
{patch}
import sys
import torch

torch.manual_seed(0)
torch.cuda.manual_seed(0)
device = torch.device("cuda")
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)).cuda()
opt = torch.optim.SGD(model.parameters(), lr=0.05)
scaler = torch.cuda.amp.GradScaler()
x = torch.randn(64, 8).to(device)
y = torch.randn(64, 1, device="cuda")
for step in range(20):
    opt.zero_grad()
    with torch.cuda.amp.autocast():
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    torch.cuda.synchronize()
torch.save({{"model": model.state_dict(), "opt": opt.state_dict()}}, sys.argv[1])
state = torch.load(sys.argv[1], map_location="cuda")
model.load_state_dict(state["model"])
print(torch.cuda.max_memory_allocated(), repr(loss.item()))
"""

CPU_TWIN = """
import sys
import torch

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
x = torch.randn(64, 8)
y = torch.randn(64, 1)
for step in range(20):
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
    loss.backward()
    opt.step()
print(0, repr(loss.item()))
"""


def run_script(tmp_path, name, source):
    path = tmp_path / name
    path.write_text(source)
    out = subprocess.run([sys.executable, str(path), str(tmp_path / f"{name}.ckpt")],
                         capture_output=True, text=True, cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.split()


@pytest.mark.slow
def test_an_unmodified_cuda_training_script_matches_its_cpu_twin(tmp_path):
    from nano.launcher.topology import read_topology

    if not read_topology().has_bf16:
        pytest.skip("the twin trains in bf16 autocast")
    unpatched = subprocess.run([sys.executable, "-c", CUDA_SCRIPT.format(patch="")],
                               capture_output=True, text=True, timeout=120)
    assert unpatched.returncode != 0  # the script really needs CUDA without the patch
    cuda = run_script(tmp_path, "cuda_script.py", CUDA_SCRIPT.format(
        patch="from nano import patch_cuda; patch_cuda()"))
    twin = run_script(tmp_path, "cpu_twin.py", CPU_TWIN)
    assert cuda == twin  # the same loss, bit for bit


DDP_SCRIPT = """
from nano import patch_cuda; patch_cuda()
import json, os, sys
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

dist.init_process_group("nccl")
rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
torch.cuda.set_device(local_rank)
torch.manual_seed(0)
model = torch.nn.Linear(4, 1).cuda(local_rank)
ddp = DDP(model, device_ids=[local_rank], output_device=local_rank)
opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
g = torch.Generator().manual_seed(rank)
for _ in range(5):
    x = torch.randn(8, 4, generator=g).cuda(non_blocking=True)
    opt.zero_grad()
    ddp(x).pow(2).mean().backward()
    opt.step()
json.dump({"backend": dist.get_backend(), "world": dist.get_world_size(),
           "params": [p.tolist() for p in model.parameters()]},
          open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w"))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_a_nccl_ddp_script_runs_under_bigdl_nano_run(tmp_path):
    import json

    from nano.trainer.local_ranks import free_port

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    out = subprocess.run([sys.executable, "-m", "nano.launcher.run_cli", "--nnodes", "1",
                          "--node-rank", "0", "--master-addr", "127.0.0.1", "--master-port",
                          str(free_port()), "--nproc-per-node", "2", "--", sys.executable,
                          str(script), str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=240,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    assert [r["backend"] for r in ranks] == ["gloo", "gloo"] and ranks[0]["world"] == 2
    assert ranks[0]["params"] == ranks[1]["params"]  # DDP kept them in step


def test_patch_torch_makes_lightning_trainer_nano_and_unpatch_undoes_it():
    import lightning
    import lightning.pytorch

    from nano import Trainer, patch_torch, unpatch_torch

    original, before = lightning.Trainer, snapshot()
    patch_torch()
    try:
        assert lightning.Trainer is Trainer and lightning.pytorch.Trainer is Trainer
        assert torch.cuda.is_available() is False  # cuda_to_cpu=True by default
        patch_torch()  # twice is once
    finally:
        unpatch_torch()
    assert lightning.Trainer is original and lightning.pytorch.Trainer is original
    assert all(a is b for a, b in zip(before, snapshot()))
    patch_torch(cuda_to_cpu=False)
    try:
        assert lightning.Trainer is Trainer and torch.cuda.is_available is before[21]
    finally:
        unpatch_torch()
    # a patch_cuda() of the user's is left in place by unpatch_torch()
    patch_cuda()
    patch_torch()
    unpatch_torch()
    try:
        assert torch.cuda.device_count() == 0
    finally:
        unpatch_cuda()
    assert all(a is b for a, b in zip(before, snapshot()))


def test_a_lightning_script_trains_under_patch_torch():
    import lightning

    from nano import Trainer, patch_torch, unpatch_torch
    from tests.compat import training_jobs as jobs

    patch_torch()
    try:
        model = jobs.two_layers().cuda()
        lit = Trainer.compile(model, torch.nn.MSELoss(),
                              torch.optim.SGD(model.parameters(), lr=0.05))
        trainer = lightning.Trainer(max_epochs=2, accelerator="auto", logger=False,
                                    enable_checkpointing=False, enable_progress_bar=False)
        assert isinstance(trainer, Trainer)
        before = trainer.validate(lit, jobs.data(), verbose=False)[0]["val/loss"]
        trainer.fit(lit, jobs.data())
        assert trainer.validate(lit, jobs.data(), verbose=False)[0]["val/loss"] < before
    finally:
        unpatch_torch()
