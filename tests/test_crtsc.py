"""CRTSC as a SQUID-family method: configuration, CRM placement, KL and TSCC terms, and the command line."""
import json
import math

import numpy as np
import pytest
import torch

from cxrlib import data as D
from cxrlib.cli import main
from cxrlib.methods.crtsc.crm import ChannelRecalibration, crm_parameter_count
from cxrlib.methods.crtsc.texture import tscc_loss
from cxrlib.methods.squid.config import preset, squid_config
from cxrlib.methods.squid.generator import SquidGenerator, build_models, count_parameters, parameter_report
from cxrlib.methods.squid.losses import adversarial_bce_generator_loss, generator_loss, kl_generator_loss
from cxrlib.methods.squid.train import train_step

# 32 px leaves the discriminator a 1x1 last map, where per-image normalisation is undefined
TINY = dict(image_size=32, base_width=4, mem_slots=10, decoder_memory_slots=10, batch_size=4, inpaint_heads=2,
            disc_eval_norm="running")


def tiny(method="crtsc", **kw):
    return squid_config(method, "quick", **{**TINY, **kw})


def crm_modules(gen):
    return [m for m in gen.modules() if isinstance(m, ChannelRecalibration)]


def test_crtsc_preset_values_and_profiles():
    cfg = preset("crtsc")
    assert (cfg.crm_place, cfg.crm_reduction, cfg.tscc_w, cfg.gen_loss, cfg.g_w) == ("paper", 24, 0.03, "kl", 0.002)
    # everything else is SQUID's
    squid = preset("squid")
    assert cfg.replace(name="squid", crm_place="none", crm_reduction=8, tscc_w=0.0, gen_loss="bce",
                       g_w=0.005) == squid
    for profile in ("quick", "cpu", "full"):
        c = squid_config("crtsc", profile)
        s = squid_config("squid", profile)
        assert (c.image_size, c.base_width, c.epochs) == (s.image_size, s.base_width, s.epochs)
        assert c.crm_place == "paper" and c.gen_loss == "kl"
    assert squid.crm_place == "none" and squid.tscc_w == 0.0 and squid.gen_loss == "bce"
    assert preset("simsid").crm_place == "none"
    for bad in (dict(crm_place="decoder"), dict(crm_reduction=0), dict(gen_loss="wasserstein"), dict(tscc_w=-1.0)):
        with pytest.raises(ValueError):
            preset("crtsc", **bad)


@pytest.mark.parametrize("place", ["none", "paper", "first_conv"])
def test_crm_placement_and_parameter_count(place):
    base = tiny("squid")
    cfg = tiny(crm_place=place, crm_reduction=2)
    gen, plain = SquidGenerator(cfg), SquidGenerator(base)
    crms = crm_modules(gen)
    f, L = cfg.filters, cfg.levels
    if place == "none":
        assert crms == [] and isinstance(gen.recalibration, torch.nn.Identity)
        extra = 0
    elif place == "paper":
        assert crms == [gen.recalibration] and gen.recalibration.channels == f[L]
        extra = crm_parameter_count(f[L], 2)
    else:
        assert len(crms) == 1 and crms[0] is gen.encoder.stem[1] and crms[0].channels == f[0]
        assert isinstance(gen.recalibration, torch.nn.Identity)
        extra = crm_parameter_count(f[0], 2)
    assert count_parameters(gen) == count_parameters(plain) + extra
    assert parameter_report(gen)["recalibration"] == extra
    assert parameter_report(gen)["encoder"] == parameter_report(plain)["encoder"]
    x = torch.rand(2, 1, 32, 32)
    gen.eval()
    with torch.no_grad():
        assert gen(x)["recon"].shape == (2, 1, 32, 32)
    if place != "none":
        assert crms[0].last_weights is not None  # the CRM is on the forward path


def test_crm_reduction_larger_than_channels_keeps_one_hidden_unit():
    gen = SquidGenerator(tiny(crm_place="first_conv", crm_reduction=24))  # 4 channels, T = 24
    assert gen.encoder.stem[1].fc[0].out_features == 1


def test_squid_full_parameter_count_unchanged():
    gen, disc = build_models(preset("squid"))
    assert crm_modules(gen) == []
    assert parameter_report(gen, disc)["total"] / 1e6 == pytest.approx(45.151, abs=5e-4)
    gen_c, disc_c = build_models(preset("crtsc"))
    assert count_parameters(gen_c) - count_parameters(gen) == crm_parameter_count(512, 24)


def test_kl_term_against_hand_computation():
    real = torch.tensor([[2.0], [-1.0], [0.5]])
    fake = torch.tensor([[0.0], [1.0], [0.5]])
    expected = 0.0
    for a, b in zip(real.flatten().tolist(), fake.flatten().tolist()):
        p, q = 1 / (1 + math.exp(-a)), 1 / (1 + math.exp(-b))
        expected += p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    expected /= 3
    assert kl_generator_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)
    # zero when the discriminator judges both alike; the BCE term when the real image is surely real
    assert kl_generator_loss(fake, fake).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_generator_loss(torch.full((3, 1), 30.0), fake).item() == pytest.approx(
        adversarial_bce_generator_loss(fake).item(), rel=1e-5)
    # the gradient reaches the fake logits only
    real_g, fake_g = real.clone().requires_grad_(), fake.clone().requires_grad_()
    kl_generator_loss(real_g, fake_g).backward()
    assert real_g.grad is None and fake_g.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        kl_generator_loss(real, fake[:2])


def test_generator_loss_terms_and_weights():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 32)
    recon = torch.rand(2, 1, 32, 32)
    d_real, d_fake = torch.tensor([[1.0], [-0.5]]), torch.tensor([[0.3], [0.2]])
    out = {"recon": recon}
    cfg = tiny(tscc_w=0.5, g_w=0.25)
    total, terms = generator_loss(out, x, d_fake, cfg, d_real_logits=d_real)
    assert set(terms) == {"recon", "kl", "teacher", "dist", "tscc"}
    assert terms["kl"].item() == pytest.approx(0.25 * kl_generator_loss(d_real, d_fake).item(), rel=1e-6)
    assert terms["tscc"].item() == pytest.approx(0.5 * tscc_loss(recon, x).item(), rel=1e-6)
    assert total.item() == pytest.approx(sum(v.item() for v in terms.values()), rel=1e-6)
    # one switch back to SQUID's BCE term; no TSCC term when its weight is 0
    _, terms = generator_loss(out, x, d_fake, cfg.replace(gen_loss="bce", tscc_w=0.0))
    assert set(terms) == {"recon", "adv", "teacher", "dist"}
    assert terms["adv"].item() == pytest.approx(0.25 * adversarial_bce_generator_loss(d_fake).item(), rel=1e-6)
    with pytest.raises(ValueError, match="d_real_logits"):
        generator_loss(out, x, d_fake, cfg)
    # SimSID's range: TSCC is computed on [0, 1] images
    cfg_t = cfg.replace(normalize="tanh")
    _, terms = generator_loss({"recon": recon * 2 - 1}, x * 2 - 1, d_fake, cfg_t, d_real_logits=d_real)
    assert terms["tscc"].item() == pytest.approx(0.5 * tscc_loss(recon, x).item(), rel=1e-5)


def test_tscc_and_kl_gradients_reach_the_generator():
    torch.manual_seed(0)
    cfg = tiny(crm_place="paper", crm_reduction=2, recon_w=0.0, t_w=0.0, dist_w=0.0, g_w=0.0, tscc_w=1.0)
    gen, disc = build_models(cfg)
    x = torch.rand(4, 1, 32, 32)
    out = gen(x)
    total, terms = generator_loss(out, x, disc(out["recon"]), cfg, d_real_logits=disc(x).detach())
    assert terms["tscc"].item() > 0
    total.backward()
    assert gen.decoder.out_conv.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.recalibration.parameters())


def test_train_step_runs_with_all_terms():
    torch.manual_seed(0)
    cfg = tiny(crm_reduction=2)
    gen, disc = build_models(cfg)
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-4)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-4)
    terms = train_step(gen, disc, opt_g, opt_d, torch.rand(4, 1, 32, 32), cfg, g_step=True)
    assert {"d", "recon", "kl", "teacher", "dist", "tscc"} <= set(terms)
    assert all(math.isfinite(v) for v in terms.values())


def test_cli_crtsc_train_then_score(tmp_path, capsys):
    npz = tmp_path / "d.npz"
    ds = D.load("embedded")
    # a part of the embedded sample keeps the run short: ~75 training normals, 4 iterations of 16
    ds = ds.subset(np.concatenate([np.flatnonzero(ds.labels == 0)[:100], np.flatnonzero(ds.labels == 1)[:60]]))
    np.savez(npz, images=ds.images, labels=ds.labels, names=ds.names)
    rc = main(["train", "--method", "crtsc", "--data", str(npz), "--profile", "quick", "--epochs", "1",
               "--crm-reduction", "16", "--lambda-tscc", "0.05", "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 0
    ck = torch.load(tmp_path / "run/model.pt", weights_only=False)
    assert ck["method"] == "crtsc"
    assert (ck["cfg"]["crm_reduction"], ck["cfg"]["tscc_w"], ck["cfg"]["gen_loss"], ck["cfg"]["crm_place"]) == (
        16, 0.05, "kl", "paper")
    assert {"kl", "tscc"} <= set(ck["history"][0])
    rc = main(["score", "--checkpoint", str(tmp_path / "run/model.pt"), "--data", str(npz), "--split", "test",
               "--out", str(tmp_path / "s.csv")])
    assert rc == 0
    res = json.loads((tmp_path / "s.json").read_text())
    assert res["method"] == "crtsc" and 0 <= res["auroc"] <= 1


def test_cli_crtsc_as_its_official_code_trains_it_is_the_crtsc_code_no_lbp_grad_lever():
    """The command line reaches every CRTSC part that lever changes (its arithmetic is the lever study's own)."""
    from cxrlib.cli import build_parser
    from cxrlib.methods.squid.scorer import CRTSC_SWITCHES, config_from_args
    from cxrlib.tables import squid_levers as SL

    args = build_parser("crtsc").parse_args(
        ["train", "--method", "crtsc", "--data", "embedded", "--profile", "cpu", "--out", "run",
         "--crm-place", "first_conv", "--crm-reduction", "8", "--lambda-tscc", "1", "--tscc-form", "code",
         "--gen-loss", "bce", "--lambda-gen", "0.005"])
    cfg, lever = config_from_args(args), SL.lever_config("crtsc", "crtsc_code_no_lbp_grad", 50)
    fields = CRTSC_SWITCHES.values()
    assert {f: getattr(cfg, f) for f in fields} == {f: getattr(lever, f) for f in fields}
    assert cfg.tscc_form == "code" and squid_config("crtsc", "cpu").tscc_form == "soft_lbp"


def test_cli_crtsc_switches_refused_for_squid(tmp_path, capsys):
    rc = main(["train", "--method", "squid", "--data", "embedded", "--profile", "quick", "--epochs", "1",
               "--gen-loss", "kl", "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--gen-loss" in err[0] and "crtsc" in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.filterwarnings("ignore:Applying `local_binary_pattern` to floating-point images")
def test_tscc_code_form_trains_with_the_official_tsim_gradient():
    """``tscc_form="code"``: the generator gets the gradient of the official code's
    ``tsim = mean((1 - (SSIM_map + LBP_term)) / 2)``, whose LBP term (skimage on numpy copies) is a constant."""
    from skimage.feature import local_binary_pattern

    from cxrlib.methods.crtsc.texture import ssim_terms
    from cxrlib.methods.squid.generator import from_model_range

    torch.manual_seed(0)
    cfg = tiny(recon_w=0.0, t_w=0.0, dist_w=0.0, g_w=0.0, tscc_w=1.0, tscc_form="code")
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    recon = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1).requires_grad_(True)
    _, terms = generator_loss({"recon": recon}, x, None, cfg)
    (ours,) = torch.autograd.grad(terms["tscc"], recon)

    r01, x01 = from_model_range(recon, cfg.normalize), from_model_range(x, cfg.normalize)
    def lbp(img):  # the official code's call, on a numpy copy: no gradient can pass
        return local_binary_pattern(img[0], 8, 1, "uniform")

    lbp_term = np.mean([np.abs(lbp(a) - lbp(b)).mean() for a, b in zip(r01.detach().numpy(), x01.numpy())])
    tsim = ((1 - (ssim_terms(r01, x01, padding="zeros").ssim_map + float(lbp_term))) / 2).mean()
    (official,) = torch.autograd.grad(tsim, recon)
    assert torch.allclose(ours, official, atol=1e-7) and ours.abs().sum() > 0
    # the default form adds this project's differentiable texture term, so its gradient differs
    _, soft = generator_loss({"recon": recon}, x, None, tiny(recon_w=0.0, t_w=0.0, dist_w=0.0, g_w=0.0, tscc_w=1.0))
    assert not torch.allclose(torch.autograd.grad(soft["tscc"], recon)[0], ours, atol=1e-6)
    with pytest.raises(ValueError, match="tscc_form"):
        tiny(tscc_form="hard")
