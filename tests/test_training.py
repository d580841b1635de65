"""Training: model shapes, conditioning, data loading, the colour trainer's flags, and that real steps lower the loss."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdk import contract
from training.data import ImageBank, is_grayscale
from training.config import config_flags, config_from_args
from training.model import Discriminator, Generator, GeneratorConfig, MultiModalAttention, rgb_to_ycbcr, ycbcr_to_rgb
from training.train import TrainConfig, Trainer, chroma_gain_reference, parse_args

from conftest import MOBILENET, REPO, TINY


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
    """Different style vectors give different outputs once the weights are non-zero: natural vs a
    painting style (colour decoder vs style path), and one painting style vs another."""
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(**TINY)).eval()
    for p in G.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        a, b, c = (G(x, torch.eye(5)[[k]]) for k in (0, 1, 2))
    assert (a - b).abs().max() > 1e-4 and (b - c).abs().max() > 1e-4


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


# ---------------------------------------------------------------------------------- flags


def test_cli_flags_are_kebab_case():
    """Every config field has a kebab-case flag; the generator's settings are flags of their own
    (the nested GeneratorConfig flattened); tuples and booleans parse."""
    cfg = parse_args(["--photo-limit", "7", "--widths", "4", "8", "8", "8", "4", "--no-attention", "--crop-scale", "1", "1.5",
                      "--temperature", "0.5", "--styles", "natural", "rococo"])
    assert cfg.photo_limit == 7 and cfg.crop_scale == (1.0, 1.5)
    assert cfg.generator == dataclasses.replace(TrainConfig().generator, widths=(4, 8, 8, 8, 4), attention=False, temperature=0.5,
                                                styles=("natural", "rococo"))
    for bad in (["--photo_limit", "2"], ["--style-fraction", "0.5"], ["--generator", "x"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
    with pytest.raises(SystemExit):  # GeneratorConfig refuses the value: an argparse error, not a traceback
        parse_args(["--temperature", "0"])


def _argv(cfg: TrainConfig) -> list[str]:
    """The flags that give ``cfg`` (every leaf field, nested generator fields flattened)."""
    out: list[str] = []

    def add(obj) -> None:
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            flag = "--" + f.name.replace("_", "-")
            if dataclasses.is_dataclass(v):
                add(v)
            elif isinstance(v, bool):
                out.append(flag if v else "--no-" + flag[2:])
            elif isinstance(v, tuple):
                out.extend([flag, *map(str, v)])
            else:
                out.extend([flag, str(v)])

    add(cfg)
    return out


def test_nested_generator_config_round_trips_through_flags(tmp_path: Path):
    """TrainConfig -> flags -> TrainConfig is the identity, the generator's defaults are
    TrainConfig's own (not GeneratorConfig's), and the saved form (config.json) rebuilds too."""
    assert parse_args([]) == TrainConfig()
    assert TrainConfig().generator.widths == (96, 64, 32, 24, 12) != GeneratorConfig().widths
    cfg = TrainConfig(size=96, crop_scale=(1.0, 1.25), progress=False, init_ema=True,
                      generator=GeneratorConfig(widths=(16, 8, 8, 8, 4), styles=("natural", "ukiyoe"), style_widths=(2, 4, 6),
                                                style_res_blocks=2, attention=True, semantic=True, upsample="nearest",
                                                temperature=0.42, chroma_gain=1.0, chroma_gain_ref=0.07, prior_correction=0.3,
                                                chroma_guide=2, chroma_guide_eps=0.01))
    again = parse_args(_argv(cfg))
    assert again == cfg and isinstance(again.generator, GeneratorConfig) and isinstance(again.generator.widths, tuple)
    saved = json.loads(json.dumps(dataclasses.asdict(cfg)))  # what config.json holds
    assert saved["generator"]["widths"] == [16, 8, 8, 8, 4] and "widths" not in saved
    assert config_from_args(TrainConfig, argparse.Namespace(**{k: v for k, v in saved.items() if k != "generator"}, **saved["generator"])) == cfg


def test_nested_flag_names_must_not_collide():
    """Flattening a nested config whose field names repeat its owner's (or a sibling's) is refused
    when the flags are defined, naming both fields."""

    @dataclasses.dataclass(frozen=True)
    class Inner:
        size: int = 1
        depth: int = 2

    @dataclasses.dataclass(frozen=True)
    class Clash:
        size: int = 3
        inner: Inner = Inner()

    @dataclasses.dataclass(frozen=True)
    class Twins:
        a: Inner = Inner()
        b: Inner = Inner(depth=5)

    with pytest.raises(ValueError, match=r"Clash\.inner\.size and Clash\.size"):
        config_flags(argparse.ArgumentParser(), Clash)
    with pytest.raises(ValueError, match=r"Twins\.b\.size and Twins\.a\.size"):
        config_flags(argparse.ArgumentParser(), Twins)

    @dataclasses.dataclass(frozen=True)
    class Fine:
        steps: int = 3
        inner: Inner = Inner(depth=7)

    p = argparse.ArgumentParser()
    config_flags(p, Fine)
    assert config_from_args(Fine, p.parse_args([])) == Fine()
    assert config_from_args(Fine, p.parse_args(["--depth", "9", "--steps", "1"])) == Fine(steps=1, inner=Inner(size=1, depth=9))


def test_python_m_training_help():
    """`python -m training --help` lists kebab-case flags with help text, the generator's under
    their own heading (their help from GeneratorConfig's docstring), and no style-training flags."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "training", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--resume" in out and "continue this checkpoint's run" in out
    assert "generator (GeneratorConfig):" in out and "--temperature" in out and "annealed-mean temperature" in out
    for gone in ("--style-fraction", "--styles-root", "--vgg", "--ink-style", "--tune-style", "--no-colour", "--w-style"):
        assert gone not in out, gone


# ---------------------------------------------------------------------------------- training


def _tiny_cfg(tmp_path: Path, photos: Path, generator: dict | None = None, **kw) -> TrainConfig:
    base = dict(photos=str(photos), val_photos=str(photos), out=str(tmp_path / "run"), size=64, batch=4,
                steps=40, load_size=96, generator=GeneratorConfig(**{**TINY, **(generator or {})}), val_every=20,
                mobilenet=str(MOBILENET), ckpt_every=20, val_images=2, progress=False, lr_g=2e-3)
    base.update(kw)
    return TrainConfig(**base)


def test_colour_steps_lower_the_loss(tmp_path: Path, photo_folder: Path):
    """Real colorization steps on real photos reduce the rebalanced colour cross-entropy; the
    encoder stays frozen and the style path (trained by training.style_train) untouched."""
    tr = Trainer(_tiny_cfg(tmp_path, photo_folder))
    enc_before = [p.clone() for p in tr.G.encoder.parameters()]
    style_before = {k: v.clone() for k, v in tr.G.style_net.state_dict().items()}
    first = np.mean([tr.train_step()["ce"] for _ in range(5)])
    for _ in range(40):
        tr.train_step()
    last = np.mean([tr.train_step()["ce"] for _ in range(5)])
    assert last < 0.8 * first, (first, last)
    assert all(torch.equal(a, b) for a, b in zip(enc_before, tr.G.encoder.parameters()))
    assert all(torch.equal(v, tr.G.style_net.state_dict()[k]) for k, v in style_before.items())
    assert all(torch.equal(v, tr.G_ema.style_net.state_dict()[k]) for k, v in style_before.items())
    assert not any(p.requires_grad for p in tr.G.style_net.parameters())


def test_training_through_the_exported_colour_read_out(tmp_path: Path, photo_folder: Path):
    """The read-out flags build the export's read-out in training (prior correction with this run's
    class weights, gain, factor, guided upsampling), so L1 and colourfulness losses on the output
    train the decoder through it; the checkpoint carries it to the export, with the chroma gain's
    reference measured on the training photos at save time."""
    from export.onnx_export import load_generator

    flags = dict(temperature=0.5, prior_correction=0.75, chroma_scale=1.17, chroma_gain=1.0, chroma_gain_ref=0.5,
                 chroma_guide=1, chroma_guide_eps=0.001)
    tr = Trainer(_tiny_cfg(tmp_path, photo_folder, generator=flags, w_l1=20.0, rebalance=0.0, w_cf=2.0))
    for g in (tr.G, tr.G_ema):
        assert {k: getattr(g.cfg, k) for k in flags} == flags
        assert torch.allclose(g.class_log_weights, torch.log(tr.class_weights)) and g.class_log_weights.abs().sum() > 0
    head = tr.G.colour_head.weight.clone()
    stats = [tr.train_step() for _ in range(3)]
    assert all({"ce", "l1", "cf"} <= set(st) for st in stats) and not torch.equal(head, tr.G.colour_head.weight)
    G, ck = load_generator(tr.save())
    ref = chroma_gain_reference(tr.G_ema, photo_folder)
    assert ref > 0 and ref != flags["chroma_gain_ref"] and ck["generator"]["chroma_gain_ref"] == ref
    assert {k: getattr(G.cfg, k) for k in flags} == {**flags, "chroma_gain_ref": ref}
    assert ck["config"]["generator"]["chroma_gain_ref"] == flags["chroma_gain_ref"]  # the run's own setting, as given
    assert torch.allclose(G.class_log_weights, torch.log(tr.class_weights))
    assert parse_args(["--chroma-gain", "1", "--prior-correction", "0.5"]).generator.prior_correction == 0.5


def test_chroma_gain_reference_is_the_median_over_the_photos(tmp_path: Path, photo_folder: Path):
    """The reference is the median of the per-photo mean expected chroma magnitude, each photo's
    luminance at the 256 working size; no photos is an error."""
    from sdk import resample

    torch.manual_seed(0)
    G = Generator(GeneratorConfig(**TINY)).eval()
    values = []
    with torch.no_grad():
        for f in sorted(photo_folder.rglob("*.png")) + [photo_folder / "grey.jpg"]:
            luma = np.asarray(Image.open(f).convert("L"))
            x = resample.resize_luma(luma, resample.work_shape(*luma.shape, 256, contract.SIZE_MULTIPLE))
            assert max(x.shape) == 256
            values.append(float(G.annealed_mean(G.colour_logits(G.encoder(torch.from_numpy(x)[None, None])))[1][0]))
    assert chroma_gain_reference(G, photo_folder) == round(float(np.median(values)), 4)
    with pytest.raises(FileNotFoundError, match="no photos"):
        chroma_gain_reference(G, tmp_path / "nothing")


def test_saved_checkpoint_exports_without_reading_shared_data(tmp_path: Path, photo_folder: Path, monkeypatch):
    """A checkpoint of this trainer carries what the export needs (generator config with the
    measured gain reference, class weights for the prior correction): with the training photos
    gone and the working folder away from ../shared, it still exports with parity, and the only
    image the export opens is the bundled parity photo."""
    import shutil

    import PIL.Image

    from export.onnx_export import ExportConfig, export_onnx

    tr = Trainer(_tiny_cfg(tmp_path, photo_folder, generator=dict(chroma_gain=1.0, prior_correction=0.5)))
    tr.train_step()
    ck_path = tr.save()
    ck = torch.load(ck_path, weights_only=False)
    ref = ck["generator"]["chroma_gain_ref"]
    moved = shutil.move(str(photo_folder), str(tmp_path / "elsewhere"))
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)  # ../shared (the config's defaults) does not exist from here
    opened: list[Path] = []
    real_open = PIL.Image.open

    def spy(fp, *a, **kw):
        opened.append(Path(fp).resolve() if isinstance(fp, (str, Path)) else Path("<stream>"))
        return real_open(fp, *a, **kw)

    monkeypatch.setattr(PIL.Image, "open", spy)
    m = export_onnx(ExportConfig(checkpoint=str(ck_path), out=str(tmp_path / "model"), name="trained", simplify=False))
    assert m["parity"]["max_abs"] < 1e-4
    assert m["generator"]["chroma_gain_ref"] == ref and m["generator"]["chroma_gain"] == 1.0 and m["generator"]["prior_correction"] == 0.5
    assert m["styles"] == list(contract.STYLES)
    assert opened and all(p.is_relative_to(REPO / "sdk" / "examples") for p in opened), opened
    assert Path(moved).is_dir() and not photo_folder.exists()


def test_semantic_features_are_the_pretrained_head_and_train_the_colour_decoder(tmp_path: Path, photo_folder: Path):
    """--semantic: the encoder's 1x1 head carries MobileNetV2's ImageNet weights and stays frozen,
    while the two layers that read it start at zero and learn."""
    from safetensors.torch import load_file

    tr = Trainer(_tiny_cfg(tmp_path, photo_folder, generator=dict(semantic=True)))
    ref = load_file(str(MOBILENET))
    assert torch.equal(tr.G.encoder.head.conv.weight, ref["head.conv.weight"])
    assert not tr.G.encoder.head.conv.weight.requires_grad
    assert tr.G.lat_sem.weight.abs().sum() == 0 and tr.G.global_sem.weight.abs().sum() == 0
    for _ in range(5):
        tr.train_step()
    assert torch.equal(tr.G.encoder.head.conv.weight, ref["head.conv.weight"])
    assert tr.G.lat_sem.weight.abs().sum() > 0 and tr.G.global_sem.weight.abs().sum() > 0
    assert parse_args(["--semantic"]).generator.semantic


def test_encoder_tune_stride_trains_only_the_coarse_layers(tmp_path: Path, photo_folder: Path):
    """--lr-encoder with --encoder-tune-stride 16: the stride-16/32 blocks and the head change, the
    stem and the blocks at strides 2-8 keep their ImageNet weights; a stride that is no stage is refused."""
    from safetensors.torch import load_file

    tr = Trainer(_tiny_cfg(tmp_path, photo_folder, generator=dict(semantic=True), lr_encoder=1e-3, encoder_tune_stride=16))
    ref = load_file(str(MOBILENET))
    tuned = {id(p) for layer in tr.G.encoder.layers_from(16) for p in layer.parameters()}
    fixed = {n for n, p in tr.G.encoder.named_parameters() if id(p) not in tuned}
    assert "stem.conv.weight" in fixed and "blocks.5.project.conv.weight" in fixed
    assert "blocks.12.project.conv.weight" not in fixed and "head.conv.weight" not in fixed
    for _ in range(3):
        tr.train_step()
    enc = tr.G.encoder.state_dict()
    assert all(torch.equal(enc[k], ref[k]) for k in fixed if k != "stem.conv.weight")
    assert torch.equal(enc["stem.conv.weight"], ref["stem.conv.weight"].sum(dim=1, keepdim=True))  # folded to one channel
    assert not torch.equal(enc["blocks.12.project.conv.weight"], ref["blocks.12.project.conv.weight"])
    assert not torch.equal(enc["head.conv.weight"], ref["head.conv.weight"])
    with pytest.raises(ValueError, match="encoder_tune_stride"):
        Trainer(_tiny_cfg(tmp_path / "bad", photo_folder, encoder_tune_stride=3))


def test_adversarial_colour_loss_and_discriminator_warmup(tmp_path: Path, photo_folder: Path):
    """--w-adv-color: a one-class discriminator judges real photos vs colorized ones and the
    generator gets its hinge loss; --d-warmup trains the discriminator alone for its first steps;
    bad values are refused."""
    cfg = _tiny_cfg(tmp_path, photo_folder, w_adv_color=1.0, d_warmup=2)
    tr = Trainer(cfg)
    assert tr.D.embed.num_embeddings == 1
    g0 = [p.clone() for p in tr.G.parameters()]
    d0 = [p.clone() for p in tr.D.parameters()]
    for _ in range(2):
        stats = tr.train_step()
        assert {"d", "adv_c", "ce"} <= set(stats)
    assert all(torch.equal(a, b) for a, b in zip(g0, tr.G.parameters()))  # the generator waited
    assert not all(torch.equal(a, b) for a, b in zip(d0, tr.D.parameters()))
    tr.train_step()
    assert not all(torch.equal(a, b) for a, b in zip(g0, tr.G.parameters()))  # and then learns
    assert "d" not in Trainer(_tiny_cfg(tmp_path / "plain", photo_folder)).train_step()  # no weight: no discriminator step
    with pytest.raises(ValueError, match="d_warmup"):
        Trainer(dataclasses.replace(cfg, d_warmup=-1))
    with pytest.raises(ValueError, match="w_adv_color"):
        Trainer(dataclasses.replace(cfg, w_adv_color=0.0))
    with pytest.raises(ValueError, match="multiple of 32"):
        Trainer(dataclasses.replace(cfg, size=48))


def test_fit_saves_config_samples_and_resumes(tmp_path: Path, photo_folder: Path):
    """fit() writes a checkpoint, the resolved config beside it, a sample grid; resume continues the step count."""
    cfg = _tiny_cfg(tmp_path, photo_folder, steps=20, keep_every=10)
    Trainer(cfg).fit()
    run = Path(cfg.out)
    assert (run / "last.pt").is_file() and (run / "samples_000020.png").is_file()
    assert sorted(p.name for p in run.glob("step_*.pt")) == ["step_000010.pt", "step_000020.pt"]
    saved = json.loads((run / "config.json").read_text())
    assert saved["size"] == 64 and saved["generator"]["widths"] == list(TINY["widths"])
    assert saved == json.loads(json.dumps(dataclasses.asdict(cfg)))
    grid = Image.open(run / "samples_000020.png")
    assert grid.size == (256 * 3, 256 * 2)  # grey, colorized, truth; two validation photos
    resumed = Trainer(_tiny_cfg(tmp_path, photo_folder, steps=25, resume=str(run / "last.pt")))
    assert resumed.step == 20
    resumed.fit()
    assert resumed.step == 25
    lines = (run / "log.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 25
    assert "val_psnr" in json.loads(lines[19])
    ck = torch.load(run / "last.pt", weights_only=False)
    assert ck["class_weights"].shape == (len(resumed.G.bins),)
    assert ck["generator"] == dataclasses.asdict(cfg.generator)  # no chroma gain: the run's generator config as it is
    assert GeneratorConfig.from_dict(ck["generator"]) == cfg.generator
    # An init takes the raw weights, or the EMA with --init-ema (a fine-tune of what a release shipped).
    for ema, key in ((False, "G"), (True, "G_ema")):
        t = Trainer(_tiny_cfg(tmp_path / key, photo_folder, steps=1, init=str(run / "last.pt"), init_ema=ema))
        assert all(torch.equal(v, ck[key][k]) for k, v in t.G_ema.state_dict().items()) and t.step == 0
    assert not all(torch.equal(ck["G"][k], ck["G_ema"][k]) for k in ck["G"])
    with pytest.raises(ValueError, match="--init"):
        Trainer(_tiny_cfg(tmp_path, photo_folder, steps=1, init_ema=True))


def test_init_from_an_earlier_design_keeps_what_fits(tmp_path: Path, photo_folder: Path):
    """--init from a checkpoint of another design (here: other decoder widths, and a discriminator
    with a class per style, as the style runs of release 13 had): tensors that fit are taken, the
    others left as initialised."""
    other = Trainer(_tiny_cfg(tmp_path / "other", photo_folder, generator=dict(widths=(16, 8, 8, 8, 4))))
    ck = {"G": other.G.state_dict(), "G_ema": other.G_ema.state_dict(), "D": Discriminator(border=0).state_dict(), "step": 7}
    torch.save(ck, tmp_path / "old.pt")
    fresh = Trainer(_tiny_cfg(tmp_path / "fresh", photo_folder))
    tr = Trainer(_tiny_cfg(tmp_path / "init", photo_folder, init=str(tmp_path / "old.pt")))
    own = tr.G.state_dict()
    assert torch.equal(own["lat8.weight"], ck["G"]["lat8.weight"])  # same shape (c8 = 8): taken
    assert torch.equal(own["lat16.weight"], fresh.G.state_dict()["lat16.weight"])  # c16 differs: as initialised
    assert torch.equal(tr.D.state_dict()["psi.weight_orig"], ck["D"]["psi.weight_orig"])
    assert tr.D.embed.num_embeddings == 1 and tr.step == 0


def test_colourfulness_loss_matches_the_reported_metric(astronaut: np.ndarray):
    """The training loss's colourfulness is the number validation and evaluation report."""
    from training import metrics
    from training import losses

    x = torch.from_numpy(astronaut[:64, :96].copy()).permute(2, 0, 1)[None].float() / 255.0
    assert losses.colourfulness(x).item() == pytest.approx(metrics.colourfulness(astronaut[:64, :96]), rel=1e-4)
