"""Where GeoCLIP's weights come from: the installed package, wheels, folders, hub releases,
and downloads from a real package index served on 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from geoguess.builder import geoclip_weights as gw
from geoguess.builder.geoclip_weights import (
    GEOCLIP_WHEEL,
    GeoclipWeights,
    geoclip_download_needed,
    load_geoclip,
)
from geoguess.errors import ExportError
from geoguess.reporting import Reporter
from geoguess.store import downloads_dir

torch = pytest.importorskip("torch")


@pytest.fixture(scope="session")
def geoclip_dir() -> Path:
    spec = importlib.util.find_spec("geoclip")  # locates the package without importing torch
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs: pip install --no-deps geoclip==1.3.0")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True, eq=False)
class Reference:
    location: dict[str, np.ndarray]
    mlp: dict[str, np.ndarray]
    logit_scale: float
    gallery: np.ndarray


@pytest.fixture(scope="session")
def reference(geoclip_dir: Path) -> Reference:
    """The installed package read by torch.load and numpy, independently of our code."""
    weights = geoclip_dir / "model" / "weights"

    def load(name: str):
        return torch.load(weights / name, map_location="cpu", weights_only=True)

    csv = geoclip_dir / "model" / "gps_gallery" / "coordinates_100K.csv"
    assert csv.read_text().splitlines()[0] == "LAT,LON"
    return Reference(
        location={k: v.numpy() for k, v in load("location_encoder_weights.pth").items()},
        mlp={k: v.numpy() for k, v in load("image_encoder_mlp_weights.pth").items()},
        logit_scale=float(load("logit_scale_weights.pth")),
        gallery=np.loadtxt(csv, delimiter=",", skiprows=1).astype(np.float32),
    )


def assert_matches(w: GeoclipWeights, ref: Reference) -> None:
    for ours, theirs in ((w.location_encoder, ref.location), (w.mlp, ref.mlp)):
        assert sorted(ours) == sorted(theirs)
        for key in theirs:
            np.testing.assert_array_equal(ours[key], theirs[key], strict=True)
    assert w.logit_scale == ref.logit_scale and type(w.logit_scale) is float
    assert w.gallery.shape == (100_000, 2) and w.gallery.dtype == np.float32
    np.testing.assert_array_equal(w.gallery, ref.gallery)
    json.dumps(w.provenance)  # goes into manifests as is
    assert w.provenance["licence"] == "MIT"


@pytest.fixture(scope="session")
def real_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pinned wheel, fetched by plain pip from the real package index (CI reaches PyPI)."""
    dest = tmp_path_factory.mktemp("real-wheel")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    proc = subprocess.run(
        [*cmd, "--dest", str(dest), GEOCLIP_WHEEL.requirement], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"package index unreachable: {proc.stderr.strip().splitlines()[-1:]}")
    return dest / GEOCLIP_WHEEL.filename


@pytest.fixture(scope="session")
def wheel_bytes(real_wheel: Path) -> bytes:
    return real_wheel.read_bytes()


def tampered(data: bytes) -> bytes:
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    return bytes(flipped)


@pytest.fixture
def hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if geoclip were not installed."""
    monkeypatch.setattr(gw, "GEOCLIP_PACKAGE", "geoclip_not_installed_here")


# --- the installed package, wheels and folders ----------------------------------------------


def test_real_index_serves_the_pinned_wheel(real_wheel: Path) -> None:
    assert real_wheel.name == GEOCLIP_WHEEL.filename
    assert real_wheel.stat().st_size == GEOCLIP_WHEEL.size
    assert hashlib.sha256(real_wheel.read_bytes()).hexdigest() == GEOCLIP_WHEEL.sha256


def test_installed_package_equals_torch_load(geoclip_dir: Path, reference: Reference) -> None:
    w = load_geoclip()
    assert_matches(w, reference)
    assert w.sigmas == (1.0, 16.0, 256.0)
    assert w.sample_image == geoclip_dir / "images" / "Kauai.png"
    p = w.provenance
    assert (p["source"], p["version"], p["path"]) == ("installed", "1.3.0", str(geoclip_dir))
    for rel, digest in p["files"].items():
        assert hashlib.sha256((geoclip_dir / rel).read_bytes()).hexdigest() == digest
    assert len(p["files"]) == 4
    assert not geoclip_download_needed()


def test_loading_imports_neither_torch_nor_geoclip() -> None:
    code = (
        "import sys; from geoguess.builder.geoclip_weights import load_geoclip; load_geoclip(); "
        "print(sorted(m for m in ('torch', 'geoclip') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_local_wheel(real_wheel: Path, geoclip_dir: Path, reference: Reference) -> None:
    w = load_geoclip(real_wheel)
    assert_matches(w, reference)
    p = w.provenance
    assert (p["source"], p["version"], p["sha256"]) == ("wheel", "1.3.0", GEOCLIP_WHEEL.sha256)
    assert p["path"] == str(real_wheel)
    assert w.sample_image is not None
    assert w.sample_image.read_bytes() == (geoclip_dir / "images" / "Kauai.png").read_bytes()


def test_tampered_wheel_is_refused(wheel_bytes: bytes, tmp_path: Path) -> None:
    wheel = tmp_path / GEOCLIP_WHEEL.filename
    wheel.write_bytes(tampered(wheel_bytes))
    with pytest.raises(ExportError, match=f"^{wheel}: .* not the pinned {GEOCLIP_WHEEL.sha256}"):
        load_geoclip(wheel)


def test_package_folders(geoclip_dir: Path, wheel_bytes: bytes, tmp_path: Path, reference) -> None:
    w = load_geoclip(geoclip_dir)
    assert_matches(w, reference)
    assert (w.provenance["source"], w.provenance["version"]) == ("folder", "1.3.0")
    # A folder holding geoclip/, here an unpacked wheel.
    (tmp_path / "w.whl").write_bytes(wheel_bytes)
    with zipfile.ZipFile(tmp_path / "w.whl") as zf:
        zf.extractall(tmp_path / "unpacked")
    w = load_geoclip(str(tmp_path / "unpacked"))
    assert_matches(w, reference)
    assert w.provenance["path"] == str(tmp_path / "unpacked" / "geoclip")
    assert w.sample_image == tmp_path / "unpacked" / "geoclip" / "images" / "Kauai.png"


def test_unusable_paths(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ExportError, match=r"notes.txt: not a wheel"):
        load_geoclip(tmp_path / "notes.txt")
    with pytest.raises(ExportError, match=r"not a geoclip package folder"):
        load_geoclip(tmp_path)
    with pytest.raises(ExportError, match=r"absent: no such wheel or folder"):
        load_geoclip(tmp_path / "absent")


# --- hub-style releases -----------------------------------------------------------------------

RELEASE_CONFIG = {
    "model_type": "geoclip-geolocation",
    "format_version": 1,
    "sigma": [1, 16, 256],
    "gallery_file": "coordinates_100K.csv",
    "backbone": {"repo_id": "openai/clip-vit-large-patch14", "revision": "32bd6427"},
}


def release_tensors(ref: Reference) -> dict[str, np.ndarray]:
    tensors = {f"location_encoder.{k}": v for k, v in ref.location.items()}
    tensors |= {f"image_encoder.mlp.{k}": v for k, v in ref.mlp.items()}
    tensors["logit_scale"] = np.array(ref.logit_scale, dtype=np.float32)
    return tensors


def write_release(
    folder: Path, config: dict, tensors: dict[str, np.ndarray], gallery: Path
) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "model.safetensors"))
    shutil.copy(gallery, folder / "coordinates_100K.csv")
    return folder


@pytest.fixture(scope="session")
def release_dir(tmp_path_factory, reference: Reference, geoclip_dir: Path) -> Path:
    gallery = geoclip_dir / "model" / "gps_gallery" / "coordinates_100K.csv"
    folder = tmp_path_factory.mktemp("release")
    return write_release(folder, RELEASE_CONFIG, release_tensors(reference), gallery)


def test_hub_release_folder(release_dir: Path, reference: Reference) -> None:
    w = load_geoclip(release_dir)
    assert_matches(w, reference)
    assert w.sigmas == (1.0, 16.0, 256.0) and w.sample_image is None
    p = w.provenance
    assert (p["source"], p["path"]) == ("hub-release", str(release_dir))
    assert p["backbone"] == RELEASE_CONFIG["backbone"]
    assert sorted(p["files"]) == ["config.json", "coordinates_100K.csv", "model.safetensors"]


def test_geoclips_own_reader_accepts_the_test_release(release_dir: Path) -> None:
    """The release format above is the one GeoCLIP's _hub.py reads."""
    hub = pytest.importorskip("geoclip.model._hub", reason="needs geoclip's reference deps")
    _, config, weights = hub.read_release(release_dir, "geoclip-geolocation")
    ours = load_geoclip(release_dir)
    assert config["sigma"] == list(ours.sigmas)
    for key, value in ours.mlp.items():
        np.testing.assert_array_equal(weights[f"image_encoder.mlp.{key}"].numpy(), value)
    np.testing.assert_array_equal(hub.read_gallery(release_dir, config).numpy(), ours.gallery)


def _config(**changes):
    def change(config: dict, tensors: dict) -> None:
        config.update(changes)
        for key, value in changes.items():
            if value is None:
                del config[key]

    return change


def _tensors(fn):
    return lambda config, tensors: fn(tensors)


BAD_RELEASES = {
    "model_type": (_config(model_type="geoclip-location-encoder"), "model_type is"),
    "version-str": (_config(format_version="1"), "format_version '1' is not 1"),
    "version-bool": (_config(format_version=True), "format_version True is not 1"),
    "version-2": (_config(format_version=2), "format_version 2 is not 1"),
    "gallery-up": (_config(gallery_file="../coordinates_100K.csv"), "gallery_file must name"),
    "gallery-sub": (_config(gallery_file="sub/coordinates_100K.csv"), "gallery_file must name"),
    "gallery-txt": (_config(gallery_file="coordinates.txt"), "gallery_file must name"),
    "gallery-none": (_config(gallery_file=None), "gallery_file must name"),
    "gallery-absent": (_config(gallery_file="other.csv"), "gallery file is missing"),
    "sigma-count": (_config(sigma=[1, 16]), "3 location-encoder capsules but 2 sigmas"),
    "sigma-type": (_config(sigma="1,16,256"), "sigma must be a list"),
    "backbone": (_config(backbone=None), "backbone must give repo_id and revision"),
    "extra-key": (
        _tensors(lambda t: t.update(extra=np.zeros(2, np.float32))),
        "unexpected tensors extra",
    ),
    "missing-key": (
        _tensors(lambda t: t.pop("image_encoder.mlp.2.bias")),
        r"\(image_encoder.mlp.\*\): missing 2.bias",
    ),
    "logit-shape": (
        _tensors(lambda t: t.update(logit_scale=np.ones(1, np.float32))),
        r"logit_scale must be a float scalar, not \(1,\)",
    ),
    "mlp-shape": (
        _tensors(lambda t: t.update({"image_encoder.mlp.2.weight": np.zeros((768, 512), "f4")})),
        r"2.weight is float32 \(768, 512\), expected float \(512, 768\)",
    ),
}


@pytest.mark.parametrize("case", BAD_RELEASES)
def test_bad_releases_are_refused(case: str, tmp_path: Path, reference, geoclip_dir) -> None:
    change, message = BAD_RELEASES[case]
    config, tensors = json.loads(json.dumps(RELEASE_CONFIG)), release_tensors(reference)
    change(config, tensors)
    gallery = geoclip_dir / "model" / "gps_gallery" / "coordinates_100K.csv"
    folder = write_release(tmp_path / "release", config, tensors, gallery)
    with pytest.raises(ExportError, match=message) as err:
        load_geoclip(folder)
    assert str(err.value).startswith(str(folder)) and "\n" not in str(err.value)


def test_damaged_release_files(release_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "release"
    shutil.copytree(release_dir, folder)
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ExportError, match=r"model.safetensors: not a readable safetensors file"):
        load_geoclip(folder)
    (folder / "config.json").write_text("{")
    with pytest.raises(ExportError, match=r"config.json: not valid JSON"):
        load_geoclip(folder)


def _hub_cache(home: Path, repo: str, commit: str, release: Path) -> None:
    """Lay out a Hugging Face cache the way snapshot_download leaves it."""
    repo_dir = home / "hub" / f"models--{repo.replace('/', '--')}"
    shutil.copytree(release, repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)


def test_hub_id_from_the_cache_offline(release_dir: Path, tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    _hub_cache(tmp_path / "hf", "someone/geoclip-release", commit, release_dir)
    # A child process, so huggingface_hub reads HF_HOME afresh.
    code = (
        "import json, sys; from geoguess.builder.geoclip_weights import load_geoclip; "
        "w = load_geoclip(sys.argv[1], offline=True); print(json.dumps(w.provenance))"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    for source in ("someone/geoclip-release", "someone/geoclip-missing"):
        out = subprocess.run(
            [sys.executable, "-c", code, source], capture_output=True, text=True, env=env
        )
        if source.endswith("missing"):
            assert out.returncode != 0
            assert "someone/geoclip-missing: no such folder, and no GeoCLIP release" in out.stderr
            continue
        assert out.returncode == 0, out.stderr
        p = json.loads(out.stdout)
        assert (p["source"], p["id"], p["revision"]) == (
            "hub-release",
            "someone/geoclip-release",
            commit,
        )


def test_hub_id_not_cached_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ExportError) as err:
        load_geoclip("nobody-here/no-such-geoclip-release", offline=True)
    assert str(err.value).startswith("nobody-here/no-such-geoclip-release: no such folder")
    assert "(offline)" in str(err.value) and "\n" not in str(err.value)


# --- downloading from a package index on 127.0.0.1 ------------------------------------------


@dataclass
class Index:
    url: str
    hits: Counter

    @property
    def wheel_hits(self) -> int:
        return self.hits[f"/files/{GEOCLIP_WHEEL.filename}"]


@pytest.fixture
def serve_index(monkeypatch: pytest.MonkeyPatch):
    """Start a PEP 503/691 simple index serving given wheel bytes; point pip and urllib at it."""
    servers: list[ThreadingHTTPServer] = []

    def start(
        wheel: bytes | None, listed_sha: str | None = None, fmt: str = "html", auth: str = ""
    ) -> Index:
        hits: Counter = Counter()
        name = GEOCLIP_WHEEL.filename
        sha = listed_sha or hashlib.sha256(wheel or b"").hexdigest()
        href = f"../../files/{name}#sha256={sha}"  # relative, as many indexes write them

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits[self.path] += 1
                if auth and self.headers["Authorization"] != auth:
                    self.send_error(401)
                    return
                if self.path.rstrip("/") == "/simple/geoclip" and wheel is not None:
                    if fmt == "json" and "vnd.pypi.simple.v1+json" in self.headers["Accept"]:
                        files = [
                            {"filename": name, "url": href.split("#")[0], "hashes": {"sha256": sha}}
                        ]
                        body = json.dumps({"meta": {"api-version": "1.0"}, "files": files})
                        self.reply(body.encode(), "application/vnd.pypi.simple.v1+json")
                        hits["served json"] += 1
                    else:
                        page = (
                            f'<!DOCTYPE html><html><body><a href="{href}">{name}</a></body></html>'
                        )
                        self.reply(page.encode(), "text/html")
                elif self.path == f"/files/{name}" and wheel is not None:
                    self.reply(wheel, "application/octet-stream")
                else:
                    self.send_error(404)

            def reply(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        index = Index(f"http://127.0.0.1:{server.server_port}/simple/", hits)
        monkeypatch.setenv("PIP_INDEX_URL", index.url)
        # Only this index: no config files, find-links or extra indexes, no pip cache.
        monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
        monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
        for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
            monkeypatch.delenv(var, raising=False)
        return index

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class Recorder(Reporter):
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.tasks: list[list] = []  # [description, total, advanced]

    def message(self, text: str) -> None:
        self.messages.append(text)

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None):
        record = [description, total, 0]
        self.tasks.append(record)

        def advance(n: float = 1) -> None:
            record[2] += n

        yield advance


def downloads() -> list[str]:
    folder = downloads_dir()
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def check_download(w: GeoclipWeights, reference: Reference) -> None:
    assert_matches(w, reference)
    cached = downloads_dir() / GEOCLIP_WHEEL.filename
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == GEOCLIP_WHEEL.sha256
    p = w.provenance
    assert (p["source"], p["sha256"], p["path"]) == ("download", GEOCLIP_WHEEL.sha256, str(cached))
    # Only the wheel and its extracted sample photo: no temporary leftovers.
    assert downloads() == sorted([GEOCLIP_WHEEL.filename, w.sample_image.name])
    assert not geoclip_download_needed()


def test_download_with_pip(hidden, serve_index, wheel_bytes: bytes, reference) -> None:
    index = serve_index(wheel_bytes)
    assert geoclip_download_needed()
    reporter = Recorder()
    check_download(load_geoclip(allow_download=True, reporter=reporter), reference)
    assert index.wheel_hits == 1 and index.hits["/simple/geoclip/"] == 1
    assert any("with pip" in m for m in reporter.messages)
    # The second build reads the verified cached wheel; the index hears nothing.
    check_download(load_geoclip(allow_download=True), reference)
    check_download(load_geoclip(), reference)
    assert sum(index.hits.values()) == 2


@pytest.mark.parametrize("fmt", ["html", "json"])
def test_download_without_pip(hidden, serve_index, monkeypatch, wheel_bytes, reference, fmt):
    monkeypatch.setattr(gw, "_pip_available", lambda: False)
    index = serve_index(wheel_bytes, fmt=fmt)
    # A damaged wheel left in the cache is replaced by the download.
    downloads_dir().mkdir(parents=True)
    (downloads_dir() / GEOCLIP_WHEEL.filename).write_bytes(b"half a wheel")
    reporter = Recorder()
    check_download(load_geoclip(allow_download=True, reporter=reporter), reference)
    assert index.wheel_hits == 1
    size = GEOCLIP_WHEEL.size
    assert reporter.tasks == [[f"Downloading {GEOCLIP_WHEEL.filename}", size, size]]
    check_download(load_geoclip(allow_download=True), reference)
    assert index.wheel_hits == 1
    assert index.hits["served json"] == (fmt == "json")


def test_download_without_pip_sends_index_credentials(
    hidden, serve_index, monkeypatch, wheel_bytes, reference
) -> None:
    monkeypatch.setattr(gw, "_pip_available", lambda: False)
    index = serve_index(wheel_bytes, auth="Basic " + base64.b64encode(b"me:s3cret").decode())
    monkeypatch.setenv("PIP_INDEX_URL", index.url.replace("http://", "http://me:s3cret@"))
    check_download(load_geoclip(allow_download=True), reference)
    monkeypatch.setenv("PIP_INDEX_URL", index.url.replace("http://", "http://me:wrong@"))
    shutil.rmtree(downloads_dir())
    with pytest.raises(ExportError, match=r"^http://127.0.0.1:\d+/simple/geoclip/: HTTP 401"):
        load_geoclip(allow_download=True)  # and the password is not in the message


@pytest.mark.parametrize("listing", ["own-hash", "pinned-hash"])
@pytest.mark.parametrize("via", ["pip", "urllib"])
def test_tampered_download_is_refused(
    hidden, serve_index, monkeypatch, wheel_bytes: bytes, via: str, listing: str
) -> None:
    if via == "urllib":
        monkeypatch.setattr(gw, "_pip_available", lambda: False)
    listed = GEOCLIP_WHEEL.sha256 if listing == "pinned-hash" else None
    index = serve_index(tampered(wheel_bytes), listed_sha=listed)
    with pytest.raises(ExportError) as err:
        load_geoclip(allow_download=True)
    message = str(err.value)
    assert "\n" not in message
    if (via, listing) == ("pip", "pinned-hash"):
        # pip itself checks the #sha256 the index lists.
        assert message.startswith("pip could not download geoclip==1.3.0: ERROR: THESE PACKAGES")
    elif (via, listing) == ("urllib", "own-hash"):
        assert "the index lists geoclip-1.3.0-py3-none-any.whl with sha256" in message
        assert index.wheel_hits == 0  # refused before downloading
    else:
        assert f"not the pinned {GEOCLIP_WHEEL.sha256}; it was deleted" in message
    assert downloads() == []
    assert geoclip_download_needed()


@pytest.mark.parametrize("via", ["pip", "urllib"])
def test_index_without_geoclip(hidden, serve_index, monkeypatch, via: str) -> None:
    if via == "urllib":
        monkeypatch.setattr(gw, "_pip_available", lambda: False)
    index = serve_index(None)
    with pytest.raises(ExportError) as err:
        load_geoclip(allow_download=True)
    expected = {
        "pip": "pip could not download geoclip==1.3.0: ERROR: No matching distribution found",
        "urllib": f"{index.url}geoclip/: HTTP 404",
    }[via]
    assert str(err.value).startswith(expected)
    assert downloads() == []


def test_nothing_local_says_how_to_fix(hidden, serve_index) -> None:
    index = serve_index(b"never fetched")
    for kwargs in ({}, {"allow_download": True, "offline": True}):
        with pytest.raises(ExportError) as err:
            load_geoclip(**kwargs)
        message = str(err.value)
        assert "\n" not in message
        for fix in ("`geoguess models build`", "--geoclip PATH", "pip install --no-deps geoclip"):
            assert fix in message
    assert "offline" in message
    assert sum(index.hits.values()) == 0


def test_cached_wheel_is_rechecked(hidden, wheel_bytes: bytes, reference) -> None:
    cached = downloads_dir() / GEOCLIP_WHEEL.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(tampered(wheel_bytes))
    assert geoclip_download_needed()
    with pytest.raises(ExportError, match=f"holds no verified {re.escape(cached.name)}"):
        load_geoclip()
    cached.write_bytes(wheel_bytes)
    assert not geoclip_download_needed()
    check_download(load_geoclip(), reference)
