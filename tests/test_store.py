"""The model store: manifests, checksums, atomic builds and installs."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from damage import flip_byte
from typer.testing import CliRunner

import geoguess
from geoguess.cli import app
from geoguess.errors import ModelIntegrityError, ModelNotFoundError, SetupError, UsageError
from geoguess.manifest import load_manifest, manifest_text, sha256_file
from geoguess.store import get_model, install_model, list_models, models_dir

runner = CliRunner()


def test_built_manifest_lists_every_file_with_its_checksum(tiny_home):
    model = get_model("tiny")
    on_disk = {
        p.relative_to(model.path).as_posix()
        for p in model.path.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    assert on_disk == set(model.manifest.files)
    for rel, entry in model.manifest.files.items():
        assert entry.sha256 == sha256_file(model.path / rel)
        assert entry.size == (model.path / rel).stat().st_size
    raw = model.manifest.raw
    assert set(raw["image_encoder"]["files"]) == {"fp32", "int8"}
    assert raw["galleries"]["mp16-100k"]["size"] == 100_000
    assert raw["provenance"]["backbone"]["source"] == "local"
    backbone_files = raw["provenance"]["backbone"]["files"]
    assert {"config.json", "model.safetensors"} <= set(backbone_files)
    assert all(len(sha) == 64 for sha in backbone_files.values())
    assert raw["provenance"]["geoclip"]["licence"] == "MIT"
    assert raw["provenance"]["geoclip"]["version"] == "1.3.0"
    assert "onnx" in raw["provenance"]["tools"] and "torch" not in raw["provenance"]["tools"]
    assert abs(raw["logit_scale"] - 39.6874) < 1e-3
    q = raw["quality"]["int8"]
    assert 0.9 < q["cosine_mean"] <= 1.0 and q["scheme"] in {"per-tensor", "per-channel"}
    assert not model.manifest.random_weights


def _corrupt(path: Path, how: str) -> None:
    if how == "altered":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.unlink()


@pytest.mark.parametrize(
    ("how", "words"),
    [("altered", "sha256 does not match"), ("truncated", "truncated"), ("missing", "missing")],
)
def test_damaged_file_is_refused_with_its_name(tiny_home_copy, how, words):
    from geoguess import Geolocator

    model = get_model("tiny")
    target = model.path / model.manifest.location_encoder
    _corrupt(target, how)
    geo = Geolocator.load("tiny", device="cpu")
    with pytest.raises(ModelIntegrityError) as info:
        _ = geo.location_encoder
    assert str(target) in str(info.value) and words in str(info.value)
    # The CLI says the same in one line and exits 2.
    res = runner.invoke(app, ["models", "verify", "tiny"])
    assert res.exit_code == 2
    assert "location_encoder.onnx" in res.stderr and words in res.stderr


def test_verify_ok_and_info_and_list(tiny_home):
    res = runner.invoke(app, ["models", "verify", "tiny"])
    assert res.exit_code == 0, res.output
    assert "files OK" in res.stderr
    res = runner.invoke(app, ["models", "list", "--json"])
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["name"] for r in rows] == ["tiny"]
    assert rows[0]["precisions"] == ["fp32", "int8"]
    res = runner.invoke(app, ["models", "info", "tiny", "--json"])
    info = json.loads(res.stdout)
    assert info["provider"] == "CPUExecutionProvider" or info["provider"].endswith(
        "ExecutionProvider"
    )
    assert info["quality"]["int8"]["top1_agreement"] >= 0.0


def test_no_model_installed_says_what_to_run(photos_dir):
    res = runner.invoke(app, [str(photos_dir / "gps_DSCN0010.jpg")])
    assert res.exit_code == 2
    assert "geoguess models build" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert "pip install" not in res.stderr
    with pytest.raises(ModelNotFoundError):
        get_model()


def _tar_of(folder: Path, dest: Path, prefix: str = "tiny") -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(folder, arcname=prefix)
    return dest


def test_install_from_folder_and_tar(tiny_model_home, tmp_path, monkeypatch):
    src = tiny_model_home / "models" / "tiny"
    monkeypatch.setenv("GEOGUESS_HOME", str(tmp_path / "home"))
    m = install_model(str(src), name="copy1")
    assert m.path == models_dir() / "copy1"
    archive = _tar_of(src, tmp_path / "tiny.tar.gz")
    res = runner.invoke(app, ["models", "install", str(archive), "--name", "copy2"])
    assert res.exit_code == 0, res.output
    assert sorted(x.name for x in list_models()) == ["copy1", "copy2"]
    # Installing again without --force is refused; with --force it replaces.
    res = runner.invoke(app, ["models", "install", str(archive), "--name", "copy2"])
    assert res.exit_code == 2 and "--force" in res.stderr
    res = runner.invoke(app, ["models", "install", str(archive), "--name", "copy2", "--force"])
    assert res.exit_code == 0
    res = runner.invoke(app, ["models", "remove", "copy1", "--yes"])
    assert res.exit_code == 0
    assert [x.name for x in list_models()] == ["copy2"]
    assert not any(p.name.startswith(".") for p in models_dir().iterdir())


def _evil_tar(path: Path, member: str, *, symlink: bool = False) -> Path:
    manifest = {"format_version": 1, "name": "evil", "files": {}}
    with tarfile.open(path, "w") as tar:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("evil/manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(member)
        if symlink:
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"pwnd"))
    return path


@pytest.mark.parametrize(
    ("member", "symlink"),
    [
        ("../outside.txt", False),
        ("evil/../../outside.txt", False),
        ("/tmp/abs.txt", False),
        ("evil/link", True),
    ],
)
def test_install_refuses_members_outside_the_target(tmp_path, member, symlink):
    archive = _evil_tar(tmp_path / "evil.tar", member, symlink=symlink)
    with pytest.raises(SetupError) as info:
        install_model(str(archive))
    assert "evil.tar" in str(info.value)
    assert not (tmp_path / "outside.txt").exists()
    assert list_models() == []


def test_install_checks_checksums(tiny_model_home, tmp_path):
    src = tmp_path / "src"
    import shutil

    shutil.copytree(tiny_model_home / "models" / "tiny", src)
    _corrupt(src / "galleries" / "mp16-100k" / "coords.npy", "altered")
    with pytest.raises(ModelIntegrityError) as info:
        install_model(str(src))
    assert "coords.npy" in str(info.value)
    assert list_models() == []


def test_manifest_cannot_point_outside_the_model(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    raw = {
        "format_version": 1,
        "name": "m",
        "files": {"../../etc/passwd": {"size": 1, "sha256": "0" * 64}},
    }
    (folder / "manifest.json").write_text(manifest_text(raw))  # a valid checksum
    with pytest.raises(ModelIntegrityError, match="outside the model"):
        load_manifest(folder)


def test_interrupted_build_leaves_nothing_installed(monkeypatch, tiny_backbone_dir):
    pytest.importorskip("geoclip")
    from geoguess.builder import build

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "_best_int8", boom)
    with pytest.raises(KeyboardInterrupt):
        build.build_model_set(
            build.BuildOptions(name="half", backbone=str(tiny_backbone_dir), gallery_limit=500)
        )
    assert list_models() == []
    assert not models_dir().exists() or list(models_dir().iterdir()) == []


def test_build_from_random_backbone_is_marked_and_warned(monkeypatch, photos_dir):
    pytest.importorskip("geoclip")
    res = runner.invoke(
        app,
        [
            "models",
            "build",
            "--backbone",
            "random:tiny",
            "--name",
            "rnd",
            "--precision",
            "fp32",
            "--gallery-limit",
            "2000",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "random backbone weights" in res.stderr
    model = get_model("rnd")
    assert model.manifest.random_weights
    assert model.manifest.galleries["mp16-100k"].size == 2000
    res = runner.invoke(app, ["-m", "rnd", str(photos_dir / "gps_DSCN0010.jpg")])
    assert res.exit_code == 0
    assert "not geolocations" in res.stderr


def test_default_recipe_is_read_from_the_packaged_file(tmp_path):
    from geoguess.builder.recipe import DEFAULT_RECIPE, DEFAULT_RECIPE_PATH, load_recipe
    from geoguess.store import DEFAULT_MODEL

    # The one source of the default recipe ships inside the package (wheels included).
    assert DEFAULT_RECIPE_PATH.is_relative_to(Path(geoguess.__file__).parent)
    assert load_recipe(DEFAULT_RECIPE_PATH) == DEFAULT_RECIPE
    assert DEFAULT_RECIPE.name == DEFAULT_MODEL
    assert DEFAULT_RECIPE.backbone == "openai/clip-vit-large-patch14"
    # A user's recipe with other values is read as written, defaults filled in.
    text = DEFAULT_RECIPE_PATH.read_text(encoding="utf-8").replace(
        'name = "geoclip-vit-l14"', 'name = "mine"'
    )
    text = text.replace("opset = 17\n", "")
    (tmp_path / "mine.toml").write_text(text, encoding="utf-8")
    mine = load_recipe(tmp_path / "mine.toml")
    assert (mine.name, mine.opset, mine.gallery_csv) == ("mine", 17, DEFAULT_RECIPE.gallery_csv)
    (tmp_path / "bad.toml").write_text('name = "x"\n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"bad\.toml"):
        load_recipe(tmp_path / "bad.toml")


def test_fp16_encoder_builds_and_agrees_with_fp32(tiny_backbone_dir):
    pytest.importorskip("geoclip")
    import numpy as np

    from geoguess import Geolocator
    from geoguess.builder.build import BuildOptions, build_model_set

    build_model_set(
        BuildOptions(
            name="half",
            backbone=str(tiny_backbone_dir),
            precisions=("fp32", "fp16"),
            gallery_limit=500,
        )
    )
    x = np.random.default_rng(0).normal(0, 1, (2, 3, 224, 224)).astype(np.float32)
    full = Geolocator.load("half", precision="fp32", device="cpu").embed_pixels(x)
    half = Geolocator.load("half", precision="fp16", device="cpu").embed_pixels(x)
    assert half.dtype == np.float32
    assert np.sum(full * half, axis=1).min() > 0.99


def test_build_adds_fp16_when_cuda_is_there(tiny_backbone_dir, monkeypatch):
    pytest.importorskip("geoclip")
    from geoguess import providers
    from geoguess.builder.build import BuildOptions, build_model_set
    from geoguess.reporting import LoggingReporter

    monkeypatch.setattr(providers, "cuda_candidate", lambda: True)
    rep = LoggingReporter()
    opts = BuildOptions(name="gpu", backbone=str(tiny_backbone_dir), gallery_limit=300)
    model = build_model_set(opts, reporter=rep)
    assert sorted(model.manifest.image_encoders) == ["fp16", "fp32", "int8"]
    assert any("CUDA found" in m for m in rep.messages)
    # Asking for precisions explicitly is taken literally.
    opts = BuildOptions(name="cpu", backbone=str(tiny_backbone_dir), gallery_limit=300)
    opts.precisions = ("fp32",)
    assert list(build_model_set(opts).manifest.image_encoders) == ["fp32"]


# --- integrity: what the checksums catch ------------------------------------------------


def _flip_keeping_mtime(path: Path, offset: int = -4) -> None:
    """One byte changed, the timestamps put back: what bit rot leaves."""
    flip_byte(path, offset, mask=0x01)


def test_one_byte_in_coords_with_mtime_kept_is_refused(tiny_home_copy, photos_dir):
    from geoguess import Geolocator

    model = get_model("tiny")
    coords = model.path / model.manifest.galleries["mp16-100k"].coords
    _ = Geolocator.load("tiny").gallery  # checked and trusted once
    _flip_keeping_mtime(coords)
    with pytest.raises(ModelIntegrityError, match="sha256 does not match") as info:
        _ = Geolocator.load("tiny").gallery
    assert str(coords) in str(info.value)
    res = runner.invoke(app, ["--json", str(photos_dir / "gps_DSCN0010.jpg")])
    assert res.exit_code == 2 and "coords.npy" in res.stderr


def _bump_digit(text: str, *anchors: str) -> str:
    """The text with the first non-zero digit after the anchors (in turn) changed."""
    pos = 0
    for anchor in anchors:
        pos = text.index(anchor, pos) + len(anchor)
    while not text[pos].isdigit() or text[pos] == "0":
        pos += 1
    new = "1" if text[pos] == "9" else str(int(text[pos]) + 1)
    return text[:pos] + new + text[pos + 1 :]


@pytest.mark.parametrize(
    "anchors",
    [
        ('"logit_scale"',),
        ('"preprocess"', '"mean"'),
        ('"preprocess"', '"std"'),
        ('"preprocess"', '"size"'),
        ('"preprocess"', '"crop"'),
        ('"galleries"', '"size"'),
        ('"files"', '"sha256"'),
        ('"files"', '"size"'),
    ],
    ids=lambda a: "/".join(x.strip('"') for x in a),
)
def test_an_edit_to_the_manifest_is_refused_naming_the_manifest(
    tiny_home_copy, photos_dir, anchors
):
    path = tiny_home_copy / "models" / "tiny" / "manifest.json"
    path.write_text(_bump_digit(path.read_text(), *anchors))
    with pytest.raises(ModelIntegrityError, match="does not match its own checksum") as info:
        get_model("tiny")
    assert info.value.path == path
    for args in (["models", "verify", "tiny"], ["--json", str(photos_dir / "gps_DSCN0010.jpg")]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2
        assert "manifest.json" in res.stderr and "checksum" in res.stderr
        assert ".npy" not in res.stderr and ".onnx" not in res.stderr  # no other file blamed


def test_a_manifest_without_checksum_is_refused_with_a_rebuild_hint(tiny_home_copy):
    path = tiny_home_copy / "models" / "tiny" / "manifest.json"
    raw = json.loads(path.read_text())
    del raw["manifest_sha256"]
    path.write_text(json.dumps(raw, indent=2, sort_keys=True))
    with pytest.raises(ModelIntegrityError, match="no checksum") as info:
        get_model("tiny")
    assert "geoguess models build --force" in str(info.value)
    res = runner.invoke(app, ["models", "list"])
    assert "'tiny' cannot be used" in res.stderr and "no checksum" in res.stderr


def test_a_file_verify_found_damaged_stays_refused_until_repaired(
    tiny_home_copy, photos_dir, monkeypatch
):
    from geoguess import store

    # Every file trusted by its stat signature, as the large encoders of a real set are.
    monkeypatch.setattr(store, "HASH_EVERY_LOAD_BYTES", 0)
    photo = str(photos_dir / "gps_DSCN0010.jpg")
    first = runner.invoke(app, ["--json", photo])
    assert first.exit_code == 0
    weights = tiny_home_copy / "models" / "tiny" / "image_encoder.int8.onnx.data"
    _flip_keeping_mtime(weights, offset=len(weights.read_bytes()) // 2)
    res = runner.invoke(app, ["models", "verify", "tiny"])
    assert res.exit_code == 2
    assert "image_encoder.int8.onnx.data" in res.stderr and "refused until repaired" in res.stderr
    for _ in range(2):  # every later load, not just the next
        res = runner.invoke(app, ["--json", photo])
        assert res.exit_code == 2
        assert "image_encoder.int8.onnx.data" in res.stderr and "models verify" in res.stderr
    listed = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    assert listed["damaged"] is True
    _flip_keeping_mtime(weights, offset=len(weights.read_bytes()) // 2)  # repaired
    res = runner.invoke(app, ["models", "verify", "tiny"])
    assert res.exit_code == 0, res.output
    again = runner.invoke(app, ["--json", photo])
    assert again.exit_code == 0 and again.stdout == first.stdout


def test_a_rebuild_clears_the_verify_mark(tiny_home_copy, tiny_model_home):
    from geoguess import store

    mark = tiny_home_copy / "models" / "tiny" / store.VERIFY_FAILED
    mark.write_text(json.dumps({"files": {"coords.npy": "altered"}}))
    with pytest.raises(ModelIntegrityError, match="refused until it is repaired"):
        get_model("tiny").file("location_encoder.onnx")
    install_model(str(tiny_model_home / "models" / "tiny"), name="tiny", force=True)
    assert not mark.exists()
    get_model("tiny").file("location_encoder.onnx")


def test_integrity_hint_names_the_installed_set(tiny_model_home, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOGUESS_HOME", str(tmp_path / "home"))
    m = install_model(str(tiny_model_home / "models" / "tiny"), name="mine")
    assert m.manifest.name == "tiny"
    _corrupt(m.path / m.manifest.location_encoder, "truncated")
    with pytest.raises(ModelIntegrityError) as info:
        get_model("mine").file(m.manifest.location_encoder)
    assert "geoguess models verify mine" in str(info.value)


def test_models_list_in_80_columns_keeps_names_and_paths_whole(
    tiny_model_home, tmp_path, monkeypatch
):
    home = tmp_path / "a-rather-long-folder-name-for-the-geoguess-home" / "home"
    monkeypatch.setenv("GEOGUESS_HOME", str(home))
    name = "geoclip-vit-l14-finetuned-on-my-photos"
    install_model(str(tiny_model_home / "models" / "tiny"), name=name)
    res = runner.invoke(
        app,
        ["models", "list"],
        env={"COLUMNS": "80", "TTY_COMPATIBLE": "1", "GEOGUESS_MODEL": name},
    )
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert f"{name} (default)" in lines
    assert any(line.strip() == f"path       {home / 'models' / name}" for line in lines)
    assert "…" not in res.stdout
    assert all(len(line) <= 80 for line in lines if str(home) not in line)
