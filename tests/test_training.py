"""Training: model shapes, conditioning, data loading, and that real steps lower the loss."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdk import contract
from training.data import ImageBank, is_grayscale
from training.model import Discriminator, Generator, GeneratorConfig, MultiModalAttention, one_hot_style, rgb_to_ycbcr, ycbcr_to_rgb
from training.train import TrainConfig, Trainer, parse_args

from conftest import MOBILENET, TINY


@pytest.fixture()
def photo_folder(tmp_path: Path, astronaut: np.ndarray) -> Path:
    """A folder of real colour crops of the astronaut photo, plus one grey image that must be skipped."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for i, (y, x) in enumerate([(0, 0), (100, 150), (200, 50), (256, 256)]):
        Image.fromarray(astronaut[y : y + 256, x : x + 256]).save(root / ("sub" if i % 2 else ".") / f"crop{i}.png")
    Image.fromarray(astronaut).convert("L").convert("RGB").save(root / "grey.jpg")
    (root / "notes.txt").write_text("not an image")
    return root


def test_generator_shapes_and_ranges():
    """Outputs are [N,3,H,W] with Y in [0,1] and Cb/Cr in [-0.5,0.5] for any multiple-of-32 size."""
    G = Generator(GeneratorConfig(**TINY)).eval()
    for n, h, w in [(1, 32, 64), (2, 96, 160), (3, 64, 32)]:
        style = torch.softmax(torch.randn(n, contract.STYLES.__len__()), 1)
        out = G(torch.rand(n, 1, h, w), style)
        assert out.shape == (n, 3, h, w)
        assert 0.0 <= out[:, 0].min() and out[:, 0].max() <= 1.0
        assert out[:, 1:].abs().max() <= 0.5


def test_style_input_changes_output():
    """Different style vectors give different outputs once FiLM weights are non-zero."""
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(**TINY)).eval()
    for p in G.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x = torch.rand(1, 1, 64, 64)
    a = G(x, torch.eye(5)[[0]])
    b = G(x, torch.eye(5)[[1]])
    assert (a - b).abs().max() > 1e-4


def test_attention_weights_are_a_softmax():
    """The three branch weights are positive and sum to 1 per image."""
    att = MultiModalAttention(8, 5)
    w = att.branch_weights(torch.randn(4, 8, 4, 4), torch.eye(5)[:4])
    assert w.shape == (4, 3)
    assert torch.allclose(w.sum(1), torch.ones(4))
    assert (w > 0).all()


def test_colour_conversion_round_trip():
    """The contract's YCbCr matrices invert each other (training uses the same constants as the SDK)."""
    rgb = torch.rand(2, 3, 8, 8)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-5)
    m = np.asarray(contract.RGB_TO_YCBCR) @ np.asarray(contract.YCBCR_TO_RGB)
    assert np.allclose(m, np.eye(3), atol=1e-6)


def test_discriminator_is_conditioned():
    """The projection term makes D's patch logits depend on the style label."""
    D = Discriminator(width=8)
    x = torch.rand(2, 3, 32, 32)
    assert D(x, torch.tensor([0, 0])).shape == (2, 1, 4, 4)
    assert not torch.allclose(D(x, torch.tensor([0, 0])), D(x, torch.tensor([1, 3])))


def test_discriminator_border_drops_the_edge_patches():
    """--d-border: D's logits without the patches along the edges, the same numbers as the full
    map's interior; what lies only under the dropped patches cannot change them; too small an
    input or a negative border is refused."""
    torch.manual_seed(0)
    full = Discriminator(width=8).eval()
    inner = Discriminator(width=8, border=2).eval()
    inner.load_state_dict(full.state_dict())
    x = torch.rand(2, 3, 128, 128)
    label = torch.tensor([0, 4])
    with torch.no_grad():
        a, b = full(x, label), inner(x, label)
        assert a.shape == (2, 1, 16, 16) and b.shape == (2, 1, 12, 12)
        assert torch.allclose(b, a[..., 2:-2, 2:-2])
        y = x.clone()
        y[..., :, :1] = 0.0  # a dark edge one pixel wide: only the dropped patches see it (patch 2 starts at pixel 1)
        assert torch.allclose(inner(y, label), b) and not torch.allclose(full(y, label), a)
    with pytest.raises(ValueError, match="none inside a border"):
        inner(torch.rand(1, 3, 32, 32), torch.tensor([0]))
    with pytest.raises(ValueError, match="0 or more"):
        Discriminator(border=-1)


def test_image_bank_skips_grey_and_non_images(photo_folder: Path):
    """Any folder works (recursive); grey images and non-image files are skipped."""
    bank = ImageBank(photo_folder, load_size=128)
    assert len(bank) == 4
    assert [p.name for p in bank.skipped] == ["grey.jpg"]
    crops = bank.batch(np.random.default_rng(0), 5, 64, (1.0, 1.5))
    assert crops.shape == (5, 64, 64, 3) and crops.dtype == np.uint8
    assert is_grayscale(np.repeat(np.arange(64, dtype=np.uint8)[:, None, None], 3, 2).repeat(64, 1))


def test_image_bank_errors(tmp_path: Path):
    """A missing folder and a folder with no colour images raise clear errors."""
    with pytest.raises(FileNotFoundError):
        ImageBank(tmp_path / "nope")
    (tmp_path / "g").mkdir()
    Image.new("L", (32, 32), 128).save(tmp_path / "g" / "a.png")
    with pytest.raises(ValueError, match="no colour images"):
        ImageBank(tmp_path / "g")


def test_cli_flags_are_kebab_case():
    """Every config field has a kebab-case flag; tuples and booleans parse."""
    cfg = parse_args(["--style-fraction", "0.25", "--widths", "4", "8", "8", "8", "4", "--no-attention", "--crop-scale", "1", "1.5"])
    assert cfg.style_fraction == 0.25 and cfg.widths == (4, 8, 8, 8, 4) and cfg.attention is False
    assert cfg.crop_scale == (1.0, 1.5)
    with pytest.raises(SystemExit):
        parse_args(["--style_fraction", "0.2"])


def _tiny_cfg(tmp_path: Path, photos: Path, **kw) -> TrainConfig:
    base = dict(photos=str(photos), val_photos=str(photos), out=str(tmp_path / "run"), size=64, batch=4,
                steps=40, style_fraction=0.0, load_size=96, widths=TINY["widths"], val_every=20, mobilenet=str(MOBILENET),
                ckpt_every=20, val_images=2, progress=False, lr_g=2e-3)
    base.update(kw)
    return TrainConfig(**base)


def test_colour_steps_lower_the_loss(tmp_path: Path, photo_folder: Path):
    """Real colorization steps on real photos reduce the rebalanced colour cross-entropy; the encoder stays frozen."""
    tr = Trainer(_tiny_cfg(tmp_path, photo_folder))
    enc_before = [p.clone() for p in tr.G.encoder.parameters()]
    first = np.mean([tr.train_step()["ce"] for _ in range(5)])
    for _ in range(40):
        tr.train_step()
    last = np.mean([tr.train_step()["ce"] for _ in range(5)])
    assert last < 0.8 * first, (first, last)
    assert all(torch.equal(a, b) for a, b in zip(enc_before, tr.G.encoder.parameters()))


def test_training_through_the_exported_colour_read_out(tmp_path: Path, photo_folder: Path):
    """The read-out flags build the export's read-out in training (prior correction with this run's
    class weights, gain, factor, guided upsampling), so L1 and colourfulness losses on the output
    train the decoder through it; the checkpoint carries it to the export unchanged."""
    from export.onnx_export import load_generator

    flags = dict(temperature=0.5, prior_correction=0.75, chroma_scale=1.17, chroma_gain=1.0, chroma_gain_ref=0.06,
                 chroma_guide=1, chroma_guide_eps=0.001)
    tr = Trainer(_tiny_cfg(tmp_path, photo_folder, w_l1=20.0, rebalance=0.0, w_cf=2.0, **flags))
    for g in (tr.G, tr.G_ema):
        assert {k: getattr(g.cfg, k) for k in flags} == flags
        assert torch.allclose(g.class_log_weights, torch.log(tr.class_weights)) and g.class_log_weights.abs().sum() > 0
    head = tr.G.colour_head.weight.clone()
    stats = [tr.train_step() for _ in range(3)]
    assert all({"ce", "l1", "cf"} <= set(st) for st in stats) and not torch.equal(head, tr.G.colour_head.weight)
    G, _ = load_generator(tr.save())
    assert {k: getattr(G.cfg, k) for k in flags} == flags
    assert torch.allclose(G.class_log_weights, torch.log(tr.class_weights))
    assert parse_args(["--chroma-gain", "1", "--prior-correction", "0.5"]).generator_config().prior_correction == 0.5


def test_semantic_features_are_the_pretrained_head_and_train_the_colour_decoder(tmp_path: Path, photo_folder: Path):
    """--semantic: the encoder's 1x1 head carries MobileNetV2's ImageNet weights and stays frozen,
    while the two layers that read it start at zero and learn."""
    from safetensors.torch import load_file

    tr = Trainer(_tiny_cfg(tmp_path, photo_folder, semantic=True))
    ref = load_file(str(MOBILENET))
    assert torch.equal(tr.G.encoder.head.conv.weight, ref["head.conv.weight"])
    assert not tr.G.encoder.head.conv.weight.requires_grad
    assert tr.G.lat_sem.weight.abs().sum() == 0 and tr.G.global_sem.weight.abs().sum() == 0
    for _ in range(5):
        tr.train_step()
    assert torch.equal(tr.G.encoder.head.conv.weight, ref["head.conv.weight"])
    assert tr.G.lat_sem.weight.abs().sum() > 0 and tr.G.global_sem.weight.abs().sum() > 0
    assert parse_args(["--semantic"]).generator_config().semantic


def test_encoder_tune_stride_trains_only_what_the_colour_decoder_reads(tmp_path: Path, photo_folder: Path):
    """--lr-encoder with --encoder-tune-stride 16: the stride-16/32 blocks and the head change, the
    stem and the blocks behind the style branch's stride-4/8 features keep their ImageNet weights."""
    from safetensors.torch import load_file

    tr = Trainer(_tiny_cfg(tmp_path, photo_folder, semantic=True, lr_encoder=1e-3, encoder_tune_stride=16))
    ref = load_file(str(MOBILENET))
    style_keys = {k.removeprefix("encoder.") for k in tr.G.encoder_keys_read_by_style()}
    assert "stem.conv.weight" in style_keys and "blocks.5.project.conv.weight" in style_keys
    assert "blocks.6.dw.conv.weight" not in style_keys and "head.conv.weight" not in style_keys
    for _ in range(3):
        tr.train_step()
    enc = tr.G.encoder.state_dict()
    assert all(torch.equal(enc[k], ref[k]) for k in style_keys if k != "stem.conv.weight")
    assert torch.equal(enc["stem.conv.weight"], ref["stem.conv.weight"].sum(dim=1, keepdim=True))  # folded to one channel
    assert not torch.equal(enc["blocks.12.project.conv.weight"], ref["blocks.12.project.conv.weight"])
    assert not torch.equal(enc["head.conv.weight"], ref["head.conv.weight"])
    with pytest.raises(ValueError, match="encoder_tune_stride"):
        Trainer(_tiny_cfg(tmp_path / "bad", photo_folder, encoder_tune_stride=3))


def test_style_steps_lower_the_style_loss(tmp_path: Path, photo_folder: Path, datasets: Path, vgg_path: Path):
    """Style steps (VGG Gram + content + adversarial) on real paintings lower the Gram loss."""
    cfg = _tiny_cfg(tmp_path, photo_folder, style_fraction=1.0, styles_root=str(datasets / "styles"),
                    style_limit=8, gram_samples=4, vgg=str(vgg_path), lr_g=3e-3, w_adv_style=0.1, w_adv_color=0.05,
                    w_tv=0.1, w_l1=1.0, painting_scale=1.0)
    tr = Trainer(cfg)
    first = np.mean([tr.train_step()["style"] for _ in range(3)])
    for _ in range(25):
        tr.train_step()
    last = np.mean([tr.train_step()["style"] for _ in range(3)])
    assert last < first, (first, last)


def test_fit_saves_config_samples_and_resumes(tmp_path: Path, photo_folder: Path):
    """fit() writes a checkpoint, the resolved config beside it, a sample grid; resume continues the step count."""
    cfg = _tiny_cfg(tmp_path, photo_folder, steps=20, keep_every=10)
    Trainer(cfg).fit()
    run = Path(cfg.out)
    assert (run / "last.pt").is_file() and (run / "samples_000020.png").is_file()
    assert sorted(p.name for p in run.glob("step_*.pt")) == ["step_000010.pt", "step_000020.pt"]
    saved = json.loads((run / "config.json").read_text())
    assert saved["size"] == 64 and saved["widths"] == list(TINY["widths"])
    grid = Image.open(run / "samples_000020.png")
    assert grid.size == (32 * 0 + 256 * (len(contract.STYLES) + 2), 256 * 2)
    resumed = Trainer(_tiny_cfg(tmp_path, photo_folder, steps=25, resume=str(run / "last.pt")))
    assert resumed.step == 20
    resumed.fit()
    assert resumed.step == 25
    lines = (run / "log.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 25
    assert "val_psnr" in json.loads(lines[19])
    ck = torch.load(run / "last.pt", weights_only=False)
    assert ck["class_weights"].shape == (len(resumed.G.bins),)
    # An init takes the raw weights, or the EMA with --init-ema (a fine-tune of what a release shipped).
    for ema, key in ((False, "G"), (True, "G_ema")):
        t = Trainer(_tiny_cfg(tmp_path / key, photo_folder, steps=1, init=str(run / "last.pt"), init_ema=ema))
        assert all(torch.equal(v, ck[key][k]) for k, v in t.G_ema.state_dict().items()) and t.step == 0
    assert not all(torch.equal(ck["G"][k], ck["G_ema"][k]) for k in ck["G"])
    with pytest.raises(ValueError, match="--init"):
        Trainer(_tiny_cfg(tmp_path, photo_folder, steps=1, init_ema=True))


def test_python_m_training_help():
    """`python -m training --help` lists kebab-case flags."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "training", "--help"], capture_output=True, text=True, check=True)
    assert "--style-fraction" in out.stdout and "--resume" in out.stdout


def test_bilinear_decoder_upsampling():
    """``upsample="bilinear"`` changes only the decoder's resampling: same parameters, other output."""
    torch.manual_seed(0)
    near = Generator(GeneratorConfig(**TINY, upsample="nearest")).eval()
    bil = Generator(GeneratorConfig(**TINY, upsample="bilinear")).eval()
    bil.load_state_dict(near.state_dict())  # identical weights load: nothing but the resampling differs
    x, s = torch.rand(1, 1, 64, 96), torch.eye(len(contract.STYLES))[:1]
    a, b = near(x, s), bil(x, s)
    assert a.shape == b.shape and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="upsample"):
        GeneratorConfig(upsample="bicubic")


def test_colourfulness_loss_matches_the_reported_metric(astronaut: np.ndarray):
    """The training loss's colourfulness is the number validation and evaluation report."""
    from sdk import metrics
    from training import losses

    x = torch.from_numpy(astronaut[:64, :96].copy()).permute(2, 0, 1)[None].float() / 255.0
    assert losses.colourfulness(x).item() == pytest.approx(metrics.colourfulness(astronaut[:64, :96]), rel=1e-4)


def test_style_only_run_with_exemplars_and_margin(tmp_path: Path, photo_folder: Path, datasets: Path, vgg_path: Path):
    """A style-only run (--no-colour) picks exemplar paintings once, caches them, and trains only the style branch."""
    cfg = _tiny_cfg(tmp_path, photo_folder, style_fraction=1.0, colour=False, styles_root=str(datasets / "styles"),
                    style_limit=6, gram_samples=4, vgg=str(vgg_path), style_exemplars=2, loss_margin=16, style_batch=2)
    tr = Trainer(cfg)
    cache = json.loads((Path(cfg.out) / "exemplars.json").read_text())
    assert sorted(cache) == sorted(contract.PAINTING_STYLES)
    assert all(len(v) == 2 for v in cache.values()) and all(len(b) == 2 for b in tr.paintings.values())
    colour_before = {k: v.clone() for k, v in tr.G.state_dict().items() if not k.startswith("style_")}
    stats = tr.train_step()
    assert "ce" not in stats and "style" in stats
    assert all(torch.equal(v, tr.G.state_dict()[k]) for k, v in colour_before.items())
    again = Trainer(cfg)  # the cache is reused: same exemplars, no new pick
    assert [p.name for p in again.paintings[1].files] == cache["ukiyoe"]
    # --whole-school: ukiyo-e's targets and real crops from all its paintings (here the 6 of style_limit), the cache untouched
    school = Trainer(dataclasses.replace(cfg, whole_school="ukiyoe"))
    assert len(school.paintings[1].files) == 6 and all(len(school.paintings[k].files) == 2 for k in (2, 3, 4))
    assert json.loads((Path(cfg.out) / "exemplars.json").read_text()) == cache
    with pytest.raises(ValueError, match="whole_school"):
        Trainer(dataclasses.replace(cfg, whole_school="ukiyoe,cubism"))


def test_tune_style_trains_one_style_and_leaves_the_rest_bit_identical(tmp_path: Path, photo_folder: Path, datasets: Path,
                                                                        vgg_path: Path):
    """--tune-style trains only the weights that style reads: its output changes, the other styles,
    a blend without it and colorization give the same numbers, and only masked entries moved."""
    cfg = _tiny_cfg(tmp_path, photo_folder, style_fraction=1.0, colour=False, styles_root=str(datasets / "styles"),
                    style_limit=4, gram_samples=2, vgg=str(vgg_path), style_batch=2, w_adv_style=1.0,
                    style_probs=(0.0, 1.0, 0.0, 0.0), tune_style="impressionism", lr_g=1e-2)
    tr = Trainer(cfg)
    k = contract.STYLES.index("impressionism")
    masks = tr.G.style_parameter_masks(k)
    before = {n: p.detach().clone() for n, p in tr.G.named_parameters()}
    luma = torch.rand(1, 1, 64, 64)
    blend = torch.tensor([[0.3, 0.4, 0.0, 0.0, 0.3]])  # natural / ukiyoe / rococo, no impressionism
    styles = [torch.eye(len(contract.STYLES))[[i]] for i in range(len(contract.STYLES))] + [blend]
    with torch.no_grad():
        outs = [tr.G(luma, s) for s in styles]
    for _ in range(3):
        tr.train_step()
    with torch.no_grad():
        after = [tr.G(luma, s) for s in styles]
    for i, (a, b) in enumerate(zip(outs, after)):
        assert torch.equal(a, b) == (i != k), contract.STYLES[i] if i < len(contract.STYLES) else "blend"
    for n, p in tr.G.named_parameters():
        moved = p.detach() != before[n]
        assert not (moved & (masks[n] == 0) if n in masks else moved).any(), n
    assert any((p.detach() != before[n]).any() for n, p in tr.G.named_parameters() if n in masks)
    for bad, match in (({"tune_style": "cubism"}, "painting styles"), ({"tune_style": "rococo", "lr_encoder": 1e-5}, "lr_encoder")):
        with pytest.raises(ValueError, match=match):
            Trainer(dataclasses.replace(cfg, **bad))


def test_style_sampling_and_adversarial_weights_per_style(tmp_path: Path, photo_folder: Path, datasets: Path, vgg_path: Path):
    """--style-probs draws style labels by relative weight (a zero weight never comes), --style-adv weights the
    generator's adversarial term per style, and weights that cannot be a distribution are refused."""
    cfg = _tiny_cfg(tmp_path, photo_folder, style_fraction=1.0, colour=False, styles_root=str(datasets / "styles"),
                    style_limit=4, gram_samples=2, vgg=str(vgg_path), style_batch=4, w_adv_style=1.0,
                    style_probs=(0.0, 1.0, 0.0, 3.0))
    tr = Trainer(cfg)
    seen: list[int] = []
    real_losses = tr._style_losses

    def spy(rgb, labels, pred):
        seen.extend(labels.tolist())
        return real_losses(rgb, labels, pred)

    tr._style_losses = spy
    for _ in range(6):
        tr.train_step()
    assert set(seen) == {2, 4} and len(seen) == 24  # impressionism and rococo only
    assert Trainer(dataclasses.replace(cfg, style_probs=(1.0, 1.0, 1.0, 1.0))).style_p is None  # uniform: the default draw

    rgb = torch.rand(2, 3, 64, 64)
    labels = torch.tensor([1, 3])
    pred = torch.cat([rgb_to_ycbcr(rgb)[:, :1], 0.1 * torch.randn(2, 2, 64, 64)], dim=1)
    tr.cfg = dataclasses.replace(cfg, style_adv=(2.0, 1.0, 0.0, 1.0))  # ukiyoe doubled, pointillism off
    tr.D.eval()  # spectral norm's power iteration would change D between the two calls
    _, stats, fake = real_losses(rgb, labels, pred)
    with torch.no_grad():
        per_image = tr.D(fake, labels).mean(dim=(1, 2, 3))
    assert stats["adv_s"] == pytest.approx(-(2.0 * float(per_image[0]) + 0.0) / 2, rel=1e-4, abs=1e-6)
    for bad in [(-1.0, 1.0, 1.0, 1.0), (0.0, 0.0, 0.0, 0.0)]:
        with pytest.raises(ValueError, match="style_probs"):
            Trainer(dataclasses.replace(cfg, style_probs=bad))


def test_training_through_the_ink_read_out(tmp_path: Path, photo_folder: Path, datasets: Path, vgg_path: Path):
    """--ink-style trains the style branch through the ink read-out the export bakes in (here with --ink-fields'
    vote): both generators get the school's palette (the one export recomputes), and the losses see the inked output."""
    from training.train import ink_palette

    cfg = _tiny_cfg(tmp_path, photo_folder, style_fraction=1.0, colour=False, styles_root=str(datasets / "styles"),
                    style_limit=4, gram_samples=2, vgg=str(vgg_path), style_batch=2, ink_style="ukiyoe", inks=4, ink_fields=1)
    tr = Trainer(cfg)
    palette = ink_palette(cfg.styles_root, "ukiyoe", 4)
    assert torch.equal(tr.G.ink_palette, palette) and torch.equal(tr.G_ema.ink_palette, palette)
    assert tr.G.cfg.ink_style == "ukiyoe" and tr.G.cfg.ink_fields == 1 and "ink_palette" not in tr.G.state_dict()
    stats = tr.train_step()
    assert np.isfinite(stats["g"]) and torch.equal(tr.G_ema.ink_palette, palette)
    luma = torch.linspace(0.0, 1.0, 64)[None, None, :, None] * torch.linspace(0.5, 1.0, 64)  # a smooth image: few ties in the vote
    with torch.no_grad():
        out = tr.G(luma, torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0]]))
    assert float(torch.cdist(out.flatten(2)[0].T, palette).min(dim=1).values.median()) < 1e-3  # on the inks


def test_style_statistics_and_border_losses(tmp_path: Path, photo_folder: Path, datasets: Path, vgg_path: Path):
    """--w-stats adds the log channel-statistics loss (zero at the target), --w-border penalises a coloured
    streak in the margin the style losses leave free, --style-tv weights total variation per style, and a content
    layer outside VGG's taps is refused."""
    from training import losses

    cfg = _tiny_cfg(tmp_path, photo_folder, style_fraction=1.0, colour=False, styles_root=str(datasets / "styles"),
                    style_limit=6, gram_samples=4, vgg=str(vgg_path), style_exemplars=2, loss_margin=16, style_batch=2,
                    w_stats=1.0, w_border=10.0, content_layer=1)
    tr = Trainer(cfg)
    assert all(len(v) == 3 and v[0].shape == (2, 64) for v in tr.style_stats.values())
    stats = tr.train_step()
    assert stats["stats"] > 0 and stats["border"] >= 0
    rgb = torch.rand(2, 3, 64, 64)
    labels = torch.tensor([1, 3])
    plain = torch.cat([rgb_to_ycbcr(rgb)[:, :1], torch.zeros(2, 2, 64, 64)], dim=1)
    streak = plain.clone()
    streak[:, 1, -3:, :] = 0.3  # an orange-ish band along the bottom edge
    _, s_plain, _ = tr._style_losses(rgb, labels, plain)
    _, s_streak, _ = tr._style_losses(rgb, labels, streak)
    # one 0.3 step in Cb per column (64) and image (2), averaged over the band's pixels (64^2 - 32^2), images and 2 planes
    assert s_plain["border"] == 0.0 and s_streak["border"] == pytest.approx(0.3 * 64 * 2 / (3072 * 2 * 2), rel=1e-4)
    # --style-tv: total variation weighted per style (ukiyoe, impressionism, pointillism, rococo), per image
    tr.cfg = dataclasses.replace(cfg, style_tv=(5.0, 0.0, 0.0, 0.0))
    _, s_tv, fake = tr._style_losses(rgb, labels, streak)
    assert s_tv["style_tv"] == pytest.approx(5.0 * float(losses.total_variation(fake[0])) / 2, rel=1e-5)
    _, s_tv3, _ = tr._style_losses(rgb, torch.tensor([3, 3]), streak)
    assert s_tv3["style_tv"] == 0.0 and "style_tv" not in s_plain
    assert torch.allclose(losses.total_variation(fake, per_image=True).mean(), losses.total_variation(fake))
    feats = tr.vgg(torch.rand(1, 3, 64, 64))
    assert losses.channel_stats(feats[0]).shape == (1, 2, 64)
    with pytest.raises(ValueError, match="content_layer"):
        Trainer(dataclasses.replace(cfg, content_layer=3))


def test_tone_layout_loss_and_discriminator_warmup(tmp_path: Path, photo_folder: Path, datasets: Path, vgg_path: Path):
    """--w-tone is the mean |difference| of cell-averaged luminance between the styled output and the
    photo: zero for the photo's own luminance, the shift for a uniformly lighter output, blind to detail
    inside a cell; --d-warmup trains the discriminator alone for its first steps; bad values are refused."""
    cfg = _tiny_cfg(tmp_path, photo_folder, style_fraction=1.0, colour=False, styles_root=str(datasets / "styles"),
                    style_limit=6, gram_samples=4, vgg=str(vgg_path), style_exemplars=2, style_batch=2,
                    w_tone=10.0, tone_cell=16, w_adv_style=1.0, d_warmup=2)
    tr = Trainer(cfg)
    rgb = torch.rand(2, 3, 64, 64)
    labels = torch.tensor([1, 4])
    luma = rgb_to_ycbcr(rgb)[:, :1]
    own = torch.cat([luma, torch.zeros(2, 2, 64, 64)], dim=1)
    assert tr._style_losses(rgb, labels, own)[1]["tone"] == pytest.approx(0.0, abs=1e-6)
    lighter = own.clone()
    lighter[:, :1] += 0.1
    assert tr._style_losses(rgb, labels, lighter)[1]["tone"] == pytest.approx(0.1, rel=1e-4)
    detail = own.clone()  # +-0.2 in a checkerboard: the same cell means
    detail[:, :1] += 0.2 * (1 - 2 * ((torch.arange(64)[:, None] + torch.arange(64)) % 2)).float()
    assert tr._style_losses(rgb, labels, detail)[1]["tone"] == pytest.approx(0.0, abs=1e-6)

    g0 = [p.clone() for p in tr.G.parameters()]
    d0 = [p.clone() for p in tr.D.parameters()]
    for _ in range(2):
        stats = tr.train_step()
        assert "d" in stats and "tone" in stats
    assert all(torch.equal(a, b) for a, b in zip(g0, tr.G.parameters()))  # the generator waited
    assert not all(torch.equal(a, b) for a, b in zip(d0, tr.D.parameters()))
    tr.train_step()
    assert not all(torch.equal(a, b) for a, b in zip(g0, tr.G.parameters()))  # and then learns
    with pytest.raises(ValueError, match="tone_cell"):
        Trainer(dataclasses.replace(cfg, tone_cell=24))
    with pytest.raises(ValueError, match="d_warmup"):
        Trainer(dataclasses.replace(cfg, d_warmup=-1))


def test_shift_consistency_loss(tmp_path: Path, photo_folder: Path, datasets: Path, vgg_path: Path):
    """--w-shift compares the styled crop with the same region of the styled photo around it: zero
    for that region itself, positive for the crop's own output (it differs at the crop's borders),
    reported by a style step; a margin off the encoder's 32-px grid is refused."""
    cfg = _tiny_cfg(tmp_path, photo_folder, style_fraction=1.0, colour=False, styles_root=str(datasets / "styles"),
                    style_limit=6, gram_samples=4, vgg=str(vgg_path), style_exemplars=2, style_batch=2,
                    w_shift=5.0, shift_margin=32)
    tr = Trainer(cfg)
    with torch.no_grad():  # a fresh style branch paints the grey input (zero head), the same in every region
        torch.nn.init.normal_(tr.G.style_head.weight, std=0.1)
    stats = tr.train_step()
    assert stats["shift"] > 0 and "style" in stats
    big = torch.rand(2, 3, 128, 128)
    labels = torch.tensor([1, 4])
    with torch.no_grad():
        luma = rgb_to_ycbcr(big)[:, :1]
        around = tr.G.styled(tr.G.encoder(luma), luma, one_hot_style(labels))
        crop = luma[..., 32:-32, 32:-32]
        own = tr.G.styled(tr.G.encoder(crop), crop, one_hot_style(labels))
        assert tr._shift_loss(big, labels, around[..., 32:-32, 32:-32]).item() == 0.0
        loss = tr._shift_loss(big, labels, own).item()
    assert loss > 0
    assert loss == pytest.approx((own - around[..., 32:-32, 32:-32]).abs().mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="multiple of 32"):
        Trainer(dataclasses.replace(cfg, shift_margin=16))
