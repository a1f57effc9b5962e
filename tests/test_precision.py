"""Training arithmetic (cxrlib.precision): fp16 autocast with gradient scaling, bf16, auto."""
import math

import pytest
import torch

from cxrlib import precision as P
from cxrlib.cli import main
from cxrlib.methods.squid.config import squid_config
from cxrlib.methods.squid.generator import build_models
from cxrlib.methods.squid.train import train_step


def test_resolve_and_names():
    assert P.resolve("auto", "cpu") == "fp32"  # no mixed precision is chosen for a CPU unasked
    for p in P.PRECISIONS:
        assert P.resolve(p, "cpu") == p
    with pytest.raises(ValueError, match="precision"):
        P.resolve("fp8", "cpu")
    assert not P.grad_scaler("bf16", "cpu").is_enabled() and P.grad_scaler("fp16", "cpu").is_enabled()


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_squid_train_step_in_each_precision(precision):
    torch.manual_seed(0)
    cfg = squid_config("squid", "quick", image_size=32, base_width=4, mem_slots=10, decoder_memory_slots=10,
                       batch_size=4, inpaint_heads=2, disc_eval_norm="running", precision=precision)
    gen, disc = build_models(cfg)
    opt_g, opt_d = torch.optim.Adam(gen.parameters(), 1e-4), torch.optim.Adam(disc.parameters(), 1e-4)
    before = [p.detach().clone() for p in gen.parameters()]
    scalers = (P.grad_scaler(precision, "cpu"), P.grad_scaler(precision, "cpu"))
    terms = train_step(gen, disc, opt_g, opt_d, torch.rand(4, 1, 32, 32), cfg, g_step=True, scalers=scalers)
    assert all(math.isfinite(v) for v in terms.values())
    assert all(p.dtype == torch.float32 for p in gen.parameters())  # weights stay fp32
    assert any(not torch.equal(a, p) for a, p in zip(before, gen.parameters()))
    if precision == "fp16":
        assert scalers[1].get_scale() > 0
        with pytest.raises(ValueError, match="scalers"):
            train_step(gen, disc, opt_g, opt_d, torch.rand(4, 1, 32, 32), cfg, g_step=True)


def test_precision_option_is_refused_for_methods_without_trained_networks(tmp_path, capsys):
    assert main(["train", "--method", "patchcore", "--precision", "bf16", "--out", str(tmp_path)]) == 2
    assert "trains no network" in capsys.readouterr().err


def test_bf16_on_a_cpu_without_bf16_hardware_is_refused_with_what_to_do(tmp_path, capsys, monkeypatch):
    """A bf16 run on a CPU that only emulates bf16 (many times slower than fp32) stops at once with one line that
    names the way out; with bf16 hardware, on CUDA, in fp32 or with CXR_ALLOW_EMULATED_BF16=1 it goes ahead."""
    monkeypatch.delenv(P.ALLOW_EMULATED_BF16, raising=False)
    monkeypatch.setattr(P, "native_cpu_bf16", lambda: False)
    with pytest.raises(P.EmulatedBF16Error, match="--precision fp32.*CXR_ALLOW_EMULATED_BF16=1"):
        P.check_cpu_bf16("bf16", "cpu", "training squid")
    for precision, device in (("fp32", "cpu"), ("fp16", "cpu"), ("bf16", "cuda")):
        P.check_cpu_bf16(precision, device, "x")  # no error
    # through the command line: the cpu profile trains in bf16, so it is refused before any epoch is written
    out = tmp_path / "run"
    assert main(["train", "--method", "squid", "--profile", "cpu", "--data", "embedded", "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: training squid") and "--precision fp32" in err and not (out / "last.pt").exists()
    monkeypatch.setattr(P, "native_cpu_bf16", lambda: True)
    P.check_cpu_bf16("bf16", "cpu", "x")
    monkeypatch.setattr(P, "native_cpu_bf16", lambda: False)
    monkeypatch.setenv(P.ALLOW_EMULATED_BF16, "1")
    P.check_cpu_bf16("bf16", "cpu", "x")


def test_native_cpu_bf16_agrees_with_torch_on_x86():
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86 only")
    assert P.native_cpu_bf16() == bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
