"""A model loader that trusts nothing (issue 31): every manifest field checked by type and range,
the file's size and nesting bounded before it is parsed, the model file's size compared with the
manifest before it is hashed, and ``chromaforge info`` on a bad model folder: exit 2 and one
``chromaforge: error:`` line, never a traceback.

Each case is a real folder in tmp_path: the bundled manifest, edited, beside a symbolic link to
the bundled model file (nothing copies the 14 MB file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdk import cli, manifest
from sdk.errors import ModelCorruptError, ModelNotFoundError
from sdk.manifest import default_model_dir, load_manifest

REPO = Path(__file__).resolve().parents[1]
BUNDLED = default_model_dir()


def model_folder(tmp_path: Path, edit=None, text: str | None = None, name: str = "model") -> Path:
    """tmp_path/name: the bundled manifest (changed by ``edit``, or replaced by ``text``) and a
    link to the bundled model file."""
    d = tmp_path / name
    d.mkdir()
    (d / "model.onnx").symlink_to(BUNDLED / "model.onnx")
    raw = json.loads((BUNDLED / "manifest.json").read_text())
    if edit is not None:
        edit(raw)
    (d / "manifest.json").write_text(text if text is not None else json.dumps(raw))
    return d


def sparse(path: Path, size: int) -> Path:
    """A sparse file of ``size`` bytes (skips the test where the filesystem cannot make one)."""
    try:
        with open(path, "wb") as f:
            f.truncate(size)
    except OSError as e:
        pytest.skip(f"cannot make a {size}-byte sparse file here ({e})")
    return path


def set_(key, value):
    return lambda raw: raw.update({key: value})


def set_in(outer, key, value):
    return lambda raw: raw[outer].update({key: value})


def set_art(key, value, i=0):
    return lambda raw: raw["artifacts"][i].update({key: value})


def drop(key):
    return lambda raw: raw.pop(key)


def two_artifacts(raw):
    raw["artifacts"].append(dict(raw["artifacts"][0], file="model.fp16.onnx", precision="fp16"))


# (edit, words the message must hold); every message also says "expected" and how to fix it
FIELD_CASES = {
    # work_size: strings are not numbers, bool is not int, zero, negative, beyond 4096, floats
    "work_size-string-100000": (set_("work_size", "100000"), 'work_size "100000" (a JSON string)'),
    "work_size-string-0": (set_("work_size", "0"), 'work_size "0" (a JSON string)'),
    "work_size-string-minus-256": (set_("work_size", "-256"), 'work_size "-256"'),
    "work_size-0": (set_("work_size", 0), "work_size 0 (a JSON integer)"),
    "work_size-minus-256": (set_("work_size", -256), "work_size -256"),
    "work_size-100000": (set_("work_size", 100000), "an integer in [8, 4096]"),
    "work_size-4097": (set_("work_size", 4097), "work_size 4097"),
    "work_size-float": (set_("work_size", 256.0), "work_size 256.0 (a JSON number)"),
    "work_size-true": (set_("work_size", True), "work_size true (a JSON boolean)"),
    "work_size-null": (set_("work_size", None), "work_size null"),
    "work_size-infinity": (set_("work_size", float("inf")), "work_size Infinity"),
    "work_size-below-multiple": (set_("work_size", 16), "at least size_multiple (32)"),
    "work_size-list": (set_("work_size", [256]), "work_size [256] (a JSON array)"),
    # size_multiple: a power of two in [8, 128]
    "size_multiple-0": (set_("size_multiple", 0), "a power of two in [8, 128]"),
    "size_multiple-4": (set_("size_multiple", 4), "size_multiple 4"),
    "size_multiple-12": (set_("size_multiple", 12), "size_multiple 12"),
    "size_multiple-256": (set_("size_multiple", 256), "size_multiple 256"),
    "size_multiple-string": (set_("size_multiple", "32"), 'size_multiple "32"'),
    "size_multiple-true": (set_("size_multiple", True), "size_multiple true"),
    "size_multiple-float": (set_("size_multiple", 32.0), "size_multiple 32.0"),
    # stylize geometry
    "style_work_size-8": (set_("style_work_size", 8), "style_work_size 8"),
    "style_work_size-string": (set_("style_work_size", "224"), 'style_work_size "224"'),
    "style_work_size-5000": (set_("style_work_size", 5000), "style_work_size 5000"),
    "style_pad-16": (set_("style_pad", 16), "a multiple of size_multiple (32)"),
    "style_pad-minus-32": (set_("style_pad", -32), "style_pad -32"),
    "style_pad-true": (set_("style_pad", True), "style_pad true"),
    "style_pad-2048": (set_("style_pad", 2048), "style_pad 2048"),
    # bytes, sha256, opset, precision, format, model_file, name, manifest_version
    "bytes-negative": (set_("bytes", -1), "bytes -1"),
    "bytes-string": (set_("bytes", "14616341"), 'bytes "14616341"'),
    "bytes-true": (set_("bytes", True), "bytes true"),
    "bytes-float": (set_("bytes", 1.5), "bytes 1.5"),
    "bytes-too-many": (set_("bytes", 1 << 40), "the file's size in bytes"),
    "sha256-short": (set_("sha256", "abc"), "64 lower-case hexadecimal digits"),
    "sha256-not-hex": (set_("sha256", "z" * 64), "sha256"),
    "sha256-upper-case": (lambda r: r.update(sha256=r["sha256"].upper()), "lower-case"),
    "sha256-number": (set_("sha256", 123), "sha256 123 (a JSON integer)"),
    "opset-string": (set_("opset", "17"), 'opset "17"'),
    "opset-0": (set_("opset", 0), "opset 0"),
    "precision-fp64": (set_("precision", "fp64"), 'one of "fp32", "fp16"'),
    "precision-number": (set_("precision", 32), "precision 32"),
    "format-tensorrt": (set_("format", "tensorrt"), 'format "tensorrt"'),
    "model_file-parent": (lambda r: (r.update(model_file="../model.onnx"), r["artifacts"][0].update(file="../model.onnx")), "model_file"),
    "model_file-absolute": (lambda r: (r.update(model_file="/dev/zero"), r["artifacts"][0].update(file="/dev/zero")), "no leading /"),
    "model_file-empty": (set_("model_file", ""), "model_file"),
    "model_file-number": (set_("model_file", 5), "model_file 5"),
    "name-number": (set_("name", 5), "name 5"),
    "name-long": (set_("name", "n" * 100_000), "100002 characters"),
    "manifest_version-negative": (set_("manifest_version", -1), "manifest_version -1"),
    "manifest_version-string": (set_("manifest_version", "1"), 'manifest_version "1"'),
    "manifest_version-true": (set_("manifest_version", True), "manifest_version true"),
    # styles: a non-empty list of unique valid names, natural first
    "styles-empty": (set_("styles", []), "styles [] (a JSON array)"),
    "styles-string": (set_("styles", "natural"), 'styles "natural" (a JSON string)'),
    "styles-duplicate": (set_("styles", ["natural", "ukiyoe", "ukiyoe"]), "distinct"),
    "styles-natural-not-first": (set_("styles", ["ukiyoe", "natural"]), '"natural" (plain colorization) first'),
    "styles-no-natural": (set_("styles", ["plain", "ukiyoe"]), "natural"),
    "styles-bad-name": (set_("styles", ["natural", "Ukiyo E"]), "a lower-case letter"),
    "styles-empty-name": (set_("styles", ["natural", ""]), "styles"),
    "styles-number": (set_("styles", ["natural", 5]), "styles"),
    "styles-huge-name": (set_("styles", ["natural", "x" * 900_000]), "characters)"),
    "styles-too-many": (set_("styles", ["natural"] + [f"s{i}" for i in range(70)]), "1 to 64"),
    # io
    "io-string": (set_("io", "luma"), 'io "luma" (a JSON string)'),
    "io-one-input": (set_in("io", "inputs", ["luma"]), "io.inputs"),
    "io-same-inputs": (set_in("io", "inputs", ["luma", "luma"]), "two distinct names"),
    "io-number-inputs": (set_in("io", "inputs", [1, 2]), "io.inputs"),
    "io-no-outputs": (set_in("io", "outputs", []), "io.outputs"),
    "io-dtype": (set_in("io", "dtype", "int8"), 'io.dtype "int8"'),
    "io-shapes": (set_in("io", "shapes", []), "io.shapes"),
    "io-missing-inputs": (lambda r: r["io"].pop("inputs"), "lacks field io.inputs"),
    # colour space
    "color_space-string": (set_("color_space", "ycbcr-bt601-full"), "color_space"),
    "color_space-other": (set_in("color_space", "name", "lab-d65"), '"lab-d65"'),
    "color_space-matrix": (lambda r: r["color_space"]["rgb_to_ycbcr"][0].__setitem__(0, 0.2126), "color_space.rgb_to_ycbcr"),
    "color_space-no-name": (lambda r: r["color_space"].pop("name"), "lacks field color_space.name"),
    # artifacts
    "artifacts-empty": (set_("artifacts", []), "artifacts [] (a JSON array)"),
    "artifacts-string": (set_("artifacts", "model.onnx"), "artifacts"),
    "artifacts-number-entry": (set_("artifacts", [1]), "artifacts"),
    "artifact-no-sha256": (lambda r: r["artifacts"][0].pop("sha256"), "lacks field artifacts[0].sha256"),
    "artifact-format": (set_art("format", "zip"), 'artifacts[0].format "zip"'),
    "artifact-precision": (set_art("precision", "int4"), "artifacts[0].precision"),
    "artifact-bytes-string": (set_art("bytes", "1"), 'artifacts[0].bytes "1"'),
    "artifact-profiles": (set_art("profiles", [{"min": [1, 1, 64, 64], "opt": [1, 1, 32, 32], "max": [1, 1, 64, 64]}]), "min <= opt <= max"),
    "artifact-profiles-string": (set_art("profiles", [{"min": "1x1", "opt": [1], "max": [1]}]), "artifacts[0].profiles"),
    "artifact-compute-capability": (set_art("compute_capability", "nine"), "artifacts[0].compute_capability"),
    "artifact-tensorrt": (set_art("tensorrt", 10), "artifacts[0].tensorrt 10"),
    "artifact-duplicate-file": (lambda r: r["artifacts"].append(dict(r["artifacts"][0], precision="fp16")), "one entry per file"),
    "artifact-primary-engine": (set_art("format", "tensorrt"), "the first artifact is the primary model"),
    "artifact-second-bad": (lambda r: (two_artifacts(r), r["artifacts"][1].update(sha256="x")), "artifacts[1].sha256"),
    "artifact-disagrees": (set_art("precision", "fp16"), "disagree"),
}
MISSING = ["model_file", "sha256", "precision", "color_space", "styles", "work_size", "size_multiple", "io"]


@pytest.mark.parametrize("case", list(FIELD_CASES))
def test_every_field_is_checked_by_type_and_range(tmp_path, case):
    edit, needle = FIELD_CASES[case]
    d = model_folder(tmp_path, edit)
    with pytest.raises(ModelCorruptError) as ei:
        load_manifest(d)
    msg = str(ei.value)
    assert needle in msg and "expected" in msg and ("manifest.json" in msg or "re-export" in msg), msg
    assert len(msg) < 1000, msg  # a 900 KB value is not echoed whole


@pytest.mark.parametrize("field", MISSING)
def test_a_missing_required_field_is_named(tmp_path, field):
    d = model_folder(tmp_path, drop(field))
    with pytest.raises(ModelCorruptError, match=f"lacks field {field}; expected"):
        load_manifest(d)


def test_the_bundled_manifests_pass_every_check():
    """Both shipped models (and so the field tables) agree with what the export writes."""
    for d in (BUNDLED, BUNDLED.parent / "stylenet"):
        m = load_manifest(d, verify=False)
        assert m.styles[0] == "natural" and m.work_size == 256 and m.size_multiple == 32 and m.style_pad == 32


def test_null_optional_fields_read_as_absent(tmp_path):
    d = model_folder(tmp_path, lambda r: r.update(name=None, style_pad=None, opset=None, artifacts=None, bytes=None))
    m = load_manifest(d)
    assert (m.name, m.style_pad, m.primary.opset, m.primary.bytes) == ("", 0, None, None)


def test_style_name_rule_is_the_style_add_rule():
    from sdk import style_add

    assert style_add.NAME_PATTERN is manifest.STYLE_NAME


# -------------------------------------------------------------------------------- the file itself
def _bundled_text() -> str:
    return (BUNDLED / "manifest.json").read_text()


def test_nesting_200000_deep_is_refused_before_parsing(tmp_path):
    """Raised RecursionError from the JSON parser."""
    deep = _bundled_text().rstrip()[:-1] + ', "x": ' + "[" * 200_000 + "]" * 200_000 + "}"
    d = model_folder(tmp_path, text=deep)
    with pytest.raises(ModelCorruptError, match=r"nests arrays and objects more than 64 levels deep; expected at most 64"):
        load_manifest(d)


def test_nesting_at_the_limit_is_read(tmp_path):
    ok = _bundled_text().rstrip()[:-1] + ', "x": ' + "[" * 63 + "]" * 63 + "}"
    m = load_manifest(model_folder(tmp_path, text=ok))
    depth, v = 1, m.extra["x"]
    while v:
        depth, v = depth + 1, v[0]
    assert depth == 63


def test_brackets_inside_strings_do_not_count(tmp_path):
    text = _bundled_text().rstrip()[:-1] + ', "x": "' + "[{" * 5000 + '\\"]"}'
    assert load_manifest(model_folder(tmp_path, text=text)).extra["x"].startswith("[{[{")


def test_a_5000_digit_integer_is_refused(tmp_path):
    """Raised ValueError from Python's integer-string conversion limit."""
    text = _bundled_text().rstrip()[:-1] + ', "x": ' + "1" * 5000 + "}"
    d = model_folder(tmp_path, text=text)
    with pytest.raises(ModelCorruptError, match=r"an integer of 5000 digits \(starting 111111111111\.\.\.\); expected integers of at most 20 digits"):
        load_manifest(d)
    d2 = model_folder(tmp_path, set_("work_size", 10 ** 25), name="m2")
    with pytest.raises(ModelCorruptError, match="26 digits"):
        load_manifest(d2)


def test_a_huge_sparse_manifest_is_refused_before_reading(tmp_path):
    """Raised MemoryError (read_text of 1 TB)."""
    d = model_folder(tmp_path)
    sparse(d / "manifest.json", 1 << 40)
    with pytest.raises(ModelCorruptError, match=r"is 1099511627776 bytes; expected a manifest of at most 1048576 bytes"):
        load_manifest(d)


def test_a_manifest_over_1_mib_is_refused(tmp_path):
    text = _bundled_text().rstrip()[:-1] + ', "x": "' + "a" * (1 << 20) + '"}'
    with pytest.raises(ModelCorruptError, match="at most 1048576 bytes"):
        load_manifest(model_folder(tmp_path, text=text))


@pytest.mark.parametrize("text, needle", [
    ("{ not json", "not valid JSON"), ("[1, 2]", "holds a JSON list"), ('"x"', "holds a JSON string"), ("", "not valid JSON"),
    ('{"work_size": 256, "work_size": 512}', 'key "work_size" appears twice'),
], ids=["broken", "list", "string", "empty", "duplicate-key"])
def test_not_a_manifest_object(tmp_path, text, needle):
    with pytest.raises(ModelCorruptError, match=needle):
        load_manifest(model_folder(tmp_path, text=text))


def test_not_utf8(tmp_path):
    d = model_folder(tmp_path)
    (d / "manifest.json").write_bytes(b'{"name": "\xff\xfe"}')
    with pytest.raises(ModelCorruptError, match="not UTF-8 text"):
        load_manifest(d)


def test_an_unreadable_manifest_is_typed(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    d = model_folder(tmp_path)
    (d / "manifest.json").chmod(0)
    with pytest.raises(ModelNotFoundError, match="cannot read"):
        load_manifest(d)


# ------------------------------------------------------------------------------ the model file
@pytest.fixture
def no_hashing(monkeypatch):
    """Fails the test if anything hashes a model file."""
    def refuse(path):
        raise AssertionError(f"{path} was hashed")
    monkeypatch.setattr(manifest, "sha256_file", refuse)


def test_model_file_linked_to_a_1_tb_sparse_file_is_refused_by_its_size(tmp_path, no_hashing):
    """Was hashed for 40 s+ before the checksum failed."""
    big = sparse(tmp_path / "big.bin", 1 << 40)
    d = model_folder(tmp_path)
    (d / "model.onnx").unlink()
    (d / "model.onnx").symlink_to(big)
    with pytest.raises(ModelCorruptError, match=r"model.onnx is 1099511627776 bytes, the manifest expects 14616341; the file is damaged"):
        load_manifest(d)


def test_without_bytes_a_model_file_over_4_gib_is_refused_unread(tmp_path, no_hashing):
    big = sparse(tmp_path / "big.bin", 1 << 40)
    d = model_folder(tmp_path, lambda r: (r.pop("bytes"), r["artifacts"][0].pop("bytes")))
    (d / "model.onnx").unlink()
    (d / "model.onnx").symlink_to(big)
    with pytest.raises(ModelCorruptError, match=r"is 1099511627776 bytes; expected a model file of at most 4294967296 bytes"):
        load_manifest(d)


def test_right_size_wrong_content_is_caught_by_the_sha256(tmp_path):
    d = model_folder(tmp_path)
    (d / "model.onnx").unlink()
    sparse(d / "model.onnx", 14616341)
    with pytest.raises(ModelCorruptError, match="sha256"):
        load_manifest(d)
    assert load_manifest(d, verify=False).primary.bytes == 14616341  # verify=False reads nothing


def test_model_file_that_is_a_folder_or_missing(tmp_path):
    d = model_folder(tmp_path)
    (d / "model.onnx").unlink()
    with pytest.raises(ModelNotFoundError, match="missing"):
        load_manifest(d)
    (d / "model.onnx").mkdir()
    with pytest.raises(ModelNotFoundError, match="missing"):
        load_manifest(d)


# ------------------------------------------------------------------------------------ the CLI
CLI_CASES = {
    "string-work_size": lambda tmp: model_folder(tmp, set_("work_size", "100000")),
    "deep": lambda tmp: model_folder(tmp, text=_bundled_text().rstrip()[:-1] + ', "x": ' + "[" * 200_000 + "]" * 200_000 + "}"),
    "5000-digits": lambda tmp: model_folder(tmp, text=_bundled_text().rstrip()[:-1] + ', "x": ' + "1" * 5000 + "}"),
    "sparse-manifest": lambda tmp: sparse(model_folder(tmp) / "manifest.json", 1 << 40).parent,
    "styles-natural-last": lambda tmp: model_folder(tmp, set_("styles", ["ukiyoe", "impressionism", "pointillism", "rococo", "natural"])),
    "missing-folder": lambda tmp: tmp / "nowhere",
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_info_on_a_bad_model_exits_2_with_one_error_line(tmp_path, capsys, case):
    d = CLI_CASES[case](tmp_path)
    assert cli.main(["info", "--model-dir", str(d), "--backend", "onnxruntime-cpu"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("chromaforge: error: ") and err.count("\n") == 1 and len(err) < 1000, err


def test_cli_info_in_a_fresh_process_prints_no_traceback(tmp_path):
    """The same through ``python -m sdk`` (the installed command), for the two cases that raised
    RecursionError and exited 0."""
    for d in (CLI_CASES["deep"](tmp_path), model_folder(tmp_path, set_("work_size", "100000"), name="m2")):
        r = subprocess.run([sys.executable, "-m", "sdk", "info", "--model-dir", str(d), "--backend", "onnxruntime-cpu"],
                           capture_output=True, text=True, cwd=REPO, timeout=120)
        assert r.returncode == 2 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
        assert r.stderr.startswith("chromaforge: error: ") and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("model_dir", ["/x/" + "y" * 5000, 5, "a\x00b"], ids=["name-too-long", "not-a-path", "nul-byte"])
def test_an_unusable_model_dir_is_typed_and_cut(model_dir):
    with pytest.raises(ModelNotFoundError) as ei:
        load_manifest(model_dir)
    assert len(str(ei.value)) < 800 and "python -m export onnx" in str(ei.value)
