"""The package itself: cheap to import, public names present."""

import subprocess
import sys

import pytest


def test_import_nano_is_light():
    code = ("import sys, nano; heavy = [m for m in ('torch', 'onnxruntime', 'openvino', "
            "'lightning') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]"


def test_public_names_load_on_first_use():
    import nano

    assert nano.InferenceOptimizer.__name__ == "InferenceOptimizer"
    with pytest.raises(AttributeError, match="nonexistent"):
        nano.nonexistent
