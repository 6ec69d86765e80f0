"""Shared fixtures: a small CNN trained on scikit-learn's bundled digits (no download); each
xdist worker's own temporary directory; no Nano temporary directory left after the session."""

import gc
import glob
import os
import shutil
import tempfile

import pytest
import torch

_worker_tmp = None


def pytest_configure(config):
    """Under pytest-xdist each worker gets its own temporary directory (TMPDIR, which the
    processes tests start inherit), so a test that checks what Nano left behind sees only
    its own worker's files, not another test's still at work."""
    global _worker_tmp
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        _worker_tmp = tempfile.mkdtemp(prefix=f"tests-{worker}-")
        os.environ["TMPDIR"] = _worker_tmp
        tempfile.tempdir = None  # gettempdir() reads TMPDIR again
        # Two workers share the cores: eager PyTorch's OpenMP threads, spinning at their
        # barriers on a core the other worker holds, made in-process work up to 10x slower.
        # The processes tests start keep their own threads (the environment is untouched).
        torch.set_num_threads(1)


def pytest_unconfigure(config):
    if _worker_tmp:
        shutil.rmtree(_worker_tmp, ignore_errors=True)


def _nano_temporaries():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "nano-*")))


@pytest.fixture(autouse=True, scope="session")
def _no_nano_temporary_left(request):
    """Every path Nano takes removes its temporary directories; the session fails if one
    is left (tests that stop Nano on purpose check their own directories too)."""
    before = _nano_temporaries()
    yield
    # A directory goes with its object (an optimizer, a model) once that is freed. The last
    # test still holds its fixtures' values here (pytest drops them after this teardown),
    # and a module fixture's optimizer held that way is not a leak: drop them first.
    for item in request.session.items:
        if getattr(item, "funcargs", None):
            item.funcargs = {}
    gc.collect()
    left = sorted(_nano_temporaries() - before)
    assert not left, f"Nano temporary directories left after the tests: {left}"


def _digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=g)
    x, y = x[order], y[order]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


@pytest.fixture(scope="session")
def digits():
    """((train_x, train_y), (test_x, test_y)) of 8x8 digit images in [0, 1]."""
    return _digits()


@pytest.fixture(scope="session")
def digits_cnn(digits):
    """A SmallCNN trained for a few seconds to > 90% test accuracy, in eval mode."""
    from tests.inference.models import SmallCNN

    (x, y), (tx, ty) = digits
    torch.manual_seed(0)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(6):
        for i in range(0, len(y), 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(tx).argmax(1) == ty).float().mean().item()
    assert acc > 0.9, f"digits CNN only reached {acc:.3f}"
    return model


def accuracy(pred, target):
    """Top-1 accuracy for metric= arguments."""
    return (pred.argmax(-1) == target).float().mean().item()


@pytest.fixture(autouse=True, scope="session")
def _no_build_cache_by_default():
    """Tests build afresh (and leave nothing in ~/.cache); the build-cache tests pass
    cache_dir= themselves. Set in the environment, so the processes tests start see it."""
    previous = os.environ.get("NANO_CACHE_DIR")
    os.environ["NANO_CACHE_DIR"] = "off"
    yield
    if previous is None:
        os.environ.pop("NANO_CACHE_DIR", None)
    else:
        os.environ["NANO_CACHE_DIR"] = previous


@pytest.fixture(autouse=True, scope="session")
def _searches_run_as_this_cpu():
    """Under scripts/test-emulated.sh the suite runs as another CPU; optimize()'s zygote,
    started plainly, would build and judge its candidates on the host's."""
    from nano.search import isolation
    from tests.fresh_process import python_command

    if os.environ.get("NANO_TEST_EMULATOR"):
        isolation.PYTHON_COMMAND = python_command()
    yield
