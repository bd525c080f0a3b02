"""The precision decision: device, CPU bf16 flags (and the HEARTSEG_NO_BF16 switch), the timed probe, CUDA mocked.

``.ci/run`` runs this file twice: as the machine is, and with ``HEARTSEG_NO_BF16=1`` (a CPU without native bf16);
every test forces the branch it covers, so both runs pass on any CPU.
"""

from __future__ import annotations

import math

import pytest
import torch

from heartseg_utils import precision as P


def test_amp_decision_with_cuda_mocked(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert P.resolve_device("auto") == cuda
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert _dtype("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert _dtype("auto", cuda) is torch.float16 and _dtype("on", cuda) is torch.float16
    assert _dtype("off", cuda) is None and _dtype("off", cpu) is None
    assert _dtype("on", cpu) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert P.resolve_device("auto") == cpu
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        P.resolve_device("cuda")


def test_the_no_bf16_switch_hides_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """HEARTSEG_NO_BF16=1 makes any CPU look like one without native bf16; unset, /proc/cpuinfo decides."""
    monkeypatch.setattr(P.Path, "read_text", lambda self, *a, **k: "flags : fpu avx512f avx512_bf16 amx_bf16")
    monkeypatch.delenv(P.NO_BF16_ENV, raising=False)
    assert P.cpu_bf16_flags() == "avx512_bf16 amx_bf16"
    monkeypatch.setenv(P.NO_BF16_ENV, "0")
    assert P.cpu_bf16_flags() == "avx512_bf16 amx_bf16"
    monkeypatch.setenv(P.NO_BF16_ENV, "1")
    assert P.cpu_bf16_flags() == ""
    assert P.amp_decision("auto", torch.device("cpu")) == (
        None,
        "amp='auto' on a CPU without native bf16 (no avx512_bf16/amx_bf16): fp32",
    )
    monkeypatch.setattr(P.Path, "read_text", lambda self, *a, **k: "flags : fpu avx2")
    monkeypatch.delenv(P.NO_BF16_ENV)
    assert P.cpu_bf16_flags() == ""


def test_cpu_amp_auto_needs_native_bf16_and_a_faster_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: "")
    dtype, reason = P.amp_decision("auto", cpu)
    assert dtype is None and "without native bf16" in reason
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: "avx512_bf16")
    monkeypatch.setattr(P, "probe_cpu_bf16", lambda *a, **k: (0.2, 0.1))
    dtype, reason = P.amp_decision("auto", cpu)
    assert dtype is torch.bfloat16 and "avx512_bf16" in reason and "100 ms" in reason
    monkeypatch.setattr(P, "probe_cpu_bf16", lambda *a, **k: (0.1, 0.3))
    assert P.amp_decision("auto", cpu)[0] is None


def test_the_bf16_probe_times_both_precisions_and_leaves_the_random_state_alone() -> None:
    P._PROBED.clear()
    state = torch.random.get_rng_state()
    fp32_s, bf16_s = P.probe_cpu_bf16()
    assert fp32_s > 0 and bf16_s > 0 and math.isfinite(fp32_s + bf16_s)  # its cost: docs/benchmarks.md
    assert torch.equal(state, torch.random.get_rng_state())


def _dtype(amp: str, device: torch.device) -> torch.dtype | None:
    return P.amp_decision(amp, device)[0]


def test_a_run_recorded_in_bf16_predicts_in_bf16_only_on_a_cpu_that_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    recorded = {"device": "cpu", "amp": "bfloat16"}
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: "avx512_bf16")
    assert P.amp_decision("auto", cpu, train_step=False, recorded=recorded)[0] is torch.bfloat16
    assert P.amp_decision("off", cpu, recorded=recorded)[0] is None  # an explicit "off" wins
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: "")
    dtype, reason = P.amp_decision("auto", cpu, train_step=False, recorded=recorded)
    assert dtype is None and "without native bf16" in reason
    dtype, reason = P.amp_decision("auto", cpu, recorded={"device": "cpu", "amp": "off"})
    assert dtype is None and "as trained" in reason


def test_unknown_precision_and_device_names_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown amp 'maybe'"):
        P.amp_decision("maybe", torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        P.resolve_device("tpu")
    assert P.dtype_name(None) == "off" and P.dtype_name(torch.bfloat16) == "bfloat16"


def test_amp_on_warns_on_a_cpu_without_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """amp='on' is obeyed on any CPU, but where bf16 is emulated (no avx512_bf16/amx_bf16) it says it will be slow."""
    import warnings

    cpu = torch.device("cpu")
    monkeypatch.setenv(P.NO_BF16_ENV, "1")  # the one switch: any CPU answers as one without native bf16
    with pytest.warns(RuntimeWarning, match="without native bf16.*slower than fp32"):
        dtype, reason = P.amp_decision("on", cpu)
    assert dtype == torch.bfloat16 and "as asked" in reason
    monkeypatch.delenv(P.NO_BF16_ENV)
    monkeypatch.setattr(P.Path, "read_text", lambda self, *a, **k: "flags : fpu avx512f avx512_bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a CPU with native bf16: no warning
        dtype, reason = P.amp_decision("on", cpu)
    assert dtype == torch.bfloat16 and "avx512_bf16" in reason
