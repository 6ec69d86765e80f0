"""The processor's capability: what each kind of CPU makes Nano do, from its flags."""

import os
import subprocess
import sys

import pytest

from nano.launcher.capability import CpuCapability, current, effective_flags, proc_flags
from nano.launcher.cpuid import FEATURES, cpuid_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# the flags of real processors, as /proc/cpuinfo lists them (trimmed to what matters)
ZEN3 = "sse4_2 avx f16c fma avx2 bmi2"
ZEN4 = ZEN3 + " avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni"
SAPPHIRE_RAPIDS = ZEN4 + " avx_vnni avx512_fp16 amx_bf16 amx_tile amx_int8"
ALDER_LAKE = ZEN3 + " avx_vnni"
SKYLAKE_SP = ZEN3 + " avx512f avx512dq avx512bw avx512vl"
GRAVITON3 = "fp asimd asimdhp asimddp sve i8mm bf16"


@pytest.mark.parametrize("flags,arch,kind,int8,bf16,saturates", [
    (ZEN3, "x86_64", "avx2", None, None, True),
    (SKYLAKE_SP, "x86_64", "avx512", None, None, True),
    (ALDER_LAKE, "x86_64", "avx_vnni", "AVX-VNNI", None, False),
    (ZEN4, "x86_64", "avx512_vnni", "AVX512-VNNI", "AVX512-BF16", False),
    (SAPPHIRE_RAPIDS, "x86_64", "amx", "AMX", "AMX-BF16", False),
    (GRAVITON3, "aarch64", "arm_dot", "I8MM", "BF16", False),
])
def test_each_kind_of_processor(flags, arch, kind, int8, bf16, saturates):
    cap = CpuCapability.from_flags(flags.split(), arch)
    assert (cap.kind, cap.int8_dot, cap.bf16, cap.int8_saturates) == (kind, int8, bf16, saturates)
    assert cap.native("bf16") == (bf16 is not None)
    assert cap.emulates("bf16") == (bf16 is None) and not cap.emulates("int8")
    assert CpuCapability.from_dict(cap.to_dict()) == cap


def test_plain_words_say_what_nano_does_about_it():
    avx2 = "\n".join(CpuCapability.from_flags(ZEN3.split()).describe())
    assert "int8 dot product: no (AVX2): INT8 uses 7-bit weights to avoid overflow" in avx2
    assert "optimize() leaves bf16 out" in avx2
    amx = "\n".join(CpuCapability.from_flags(SAPPHIRE_RAPIDS.split()).describe())
    assert "int8 dot product: yes (AMX)" in amx and "bf16: native (AMX-BF16)" in amx


def test_a_feature_counts_only_where_cpuid_confirms_it():
    """Under QEMU's user mode /proc/cpuinfo is the host's: CPUID is what kernels run on."""
    kernel = frozenset(SAPPHIRE_RAPIDS.split())
    emulated_haswell = frozenset({"avx", "avx2", "fma", "f16c"})
    flags = effective_flags(kernel, emulated_haswell)
    assert CpuCapability.from_flags(flags).kind == "avx2"
    assert "sse4_2" in flags  # what CPUID is not asked about stays as the kernel says
    assert effective_flags(kernel, None) == kernel  # no CPUID (not x86, or W^X): kernel alone


def test_ignoring_a_feature_only_takes_away():
    kernel = frozenset(SAPPHIRE_RAPIDS.split())
    flags = effective_flags(kernel, None, ["avx512f", "avx_vnni"])
    assert CpuCapability.from_flags(flags).kind == "avx2"  # every AVX-512/AMX one went too
    assert effective_flags(frozenset(ZEN3.split()), None, []) == frozenset(ZEN3.split())


def test_cpuid_agrees_with_the_kernel_on_this_machine():
    if os.environ.get("NANO_TEST_EMULATOR"):
        pytest.skip("under an emulator /proc/cpuinfo is the host's; the test above covers it")
    arch, kernel = proc_flags()
    read = cpuid_flags()
    if read is None:
        assert arch not in ("x86_64", "amd64") or not kernel, "CPUID could not run on x86"
        return
    # the kernel lists only what CPUID reports (it may hide more, never add)
    assert (kernel & set(FEATURES)) <= read, (kernel & set(FEATURES)) - read


@pytest.mark.parametrize("command", [["-m", "nano.launcher.init_cli", "--explain"],
                                     ["-m", "nano", "--report-only"]])
def test_reports_print_the_capability(command):
    env = {**os.environ, "NANO_CPU_IGNORE": "avx512f avx_vnni"}
    out = subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "int8 dot product: no (AVX2): INT8 uses 7-bit weights" in out.stdout
    plain = subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=ROOT,
                           timeout=120)
    assert f"processor class: {current().kind}" in plain.stdout
