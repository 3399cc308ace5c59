"""Where GeoCLIP's released weights come from, read into numpy without PyTorch.

The weights ship inside the ``geoclip`` wheel on PyPI. They are read from, in order: the
installed package's data files (never imported: that pulls in torch), a wheel downloaded
earlier into :func:`geoguess.store.downloads_dir`, or the pinned wheel fetched now. A
wheel is read as a zip, never installed. A path or a Hugging Face hub id may name
another source: a wheel, an unpacked package, or a safetensors release as GeoCLIP's own
``_hub.py`` writes them.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import html.parser
import http.client
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import re
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_file
from ..errors import ExportError
from ..manifest import sha256_file
from ..reporting import Reporter
from ..store import downloads_dir
from .pth import load_pth


@dataclass(frozen=True)
class WheelPin:
    name: str
    version: str
    sha256: str
    size: int
    licence: str
    filename: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


GEOCLIP_WHEEL = WheelPin(
    name="geoclip",
    version="1.3.0",
    sha256="08a93791166a279d52b95c466a952c75f17f654cc61bdf6ab20355325b564dec",
    size=40_292_198,
    licence="MIT",
    filename="geoclip-1.3.0-py3-none-any.whl",
)

#: Import name looked up for an installed copy (tests point it elsewhere to hide theirs).
GEOCLIP_PACKAGE = "geoclip"
#: GeoCLIP's location encoder scales, fixed in the wheel (releases carry their own).
WHEEL_SIGMAS = (1.0, 16.0, 256.0)
DEFAULT_INDEX = "https://pypi.org/simple/"
RELEASE_MODEL_TYPE = "geoclip-geolocation"

LOCATION_FILE = "model/weights/location_encoder_weights.pth"
MLP_FILE = "model/weights/image_encoder_mlp_weights.pth"
LOGIT_FILE = "model/weights/logit_scale_weights.pth"
GALLERY_FILE = "model/gps_gallery/coordinates_100K.csv"
SAMPLE_FILE = "images/Kauai.png"

_CAPSULE_SHAPES = {
    "capsule.0.b": (256, 2),
    "capsule.1.weight": (1024, 512),
    "capsule.1.bias": (1024,),
    "capsule.3.weight": (1024, 1024),
    "capsule.3.bias": (1024,),
    "capsule.5.weight": (1024, 1024),
    "capsule.5.bias": (1024,),
    "head.0.weight": (512, 1024),
    "head.0.bias": (512,),
}
_MLP_SHAPES = {"0.weight": (768, 768), "0.bias": (768,), "2.weight": (512, 768), "2.bias": (512,)}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?")


# eq=False: comparing dicts of arrays with == has no single truth value.
@dataclass(frozen=True, eq=False)
class GeoclipWeights:
    location_encoder: dict[str, np.ndarray]
    mlp: dict[str, np.ndarray]
    logit_scale: float
    sigmas: tuple[float, ...]
    gallery: np.ndarray
    sample_image: Path | None
    provenance: dict[str, Any]


def geoclip_download_needed(source: str | Path | None = None) -> bool:
    """Whether :func:`load_geoclip` would have to download the wheel for this source."""
    return source is None and _installed_root() is None and _cached_wheel() is None


def load_geoclip(
    source: str | Path | None = None,
    *,
    allow_download: bool = False,
    offline: bool = False,
    reporter: Reporter | None = None,
) -> GeoclipWeights:
    """GeoCLIP's weights, gallery and sample photo from ``source`` (see the module docs).

    ``source`` may be a ``.whl`` file, a geoclip package folder (or a folder holding
    ``geoclip/``), a release folder (config.json + model.safetensors + gallery CSV), or
    a hub id ``owner/name[@revision]``. Without it, the installed package, then the
    cached wheel, then (with ``allow_download`` and not ``offline``) a download.
    """
    reporter = reporter or Reporter()
    if source is None:
        return _load_default(allow_download=allow_download, offline=offline, reporter=reporter)
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix != ".whl":
            raise ExportError(f"{path}: not a wheel (.whl); give a geoclip wheel or folder")
        return _read_wheel(path, "wheel")
    if path.is_dir():
        return _read_folder(path)
    if isinstance(source, str) and _HUB_ID.fullmatch(source):
        return _read_hub(source, allow_download=allow_download, offline=offline, reporter=reporter)
    raise ExportError(f"{source}: no such wheel or folder")


# --- the default source: installed package, cached wheel, download --------------------------


def _installed_root() -> Path | None:
    # find_spec of a top-level name locates the package without running its code.
    spec = importlib.util.find_spec(GEOCLIP_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        if (Path(location) / LOCATION_FILE).is_file():
            return Path(location)
    return None


def _cached_wheel() -> Path | None:
    path = downloads_dir() / GEOCLIP_WHEEL.filename
    if path.is_file() and sha256_file(path) == GEOCLIP_WHEEL.sha256:
        return path
    return None


def _load_default(*, allow_download: bool, offline: bool, reporter: Reporter) -> GeoclipWeights:
    root = _installed_root()
    if root is not None:
        try:
            version = importlib.metadata.version(GEOCLIP_PACKAGE)
        except importlib.metadata.PackageNotFoundError:
            version = None
        return _read_package(_FolderFiles(root), {"source": "installed", "version": version})
    wheel = _cached_wheel()
    if wheel is None:
        # A damaged cached wheel is left for the download to replace atomically: deleting it
        # here could delete the good one a parallel build has just put in its place.
        if not allow_download or offline:
            raise ExportError(_missing_message(offline))
        wheel = _download(reporter)
    return _read_wheel(wheel, "download")


def _missing_message(offline: bool) -> str:
    why = " (offline, so nothing is downloaded)" if offline else ""
    return (
        f"GeoCLIP's weights are missing{why}: the {GEOCLIP_PACKAGE} package is not installed "
        f"and {downloads_dir()} holds no verified {GEOCLIP_WHEEL.filename}; "
        f"run `geoguess models build` to fetch it ({GEOCLIP_WHEEL.size / 1e6:.0f} MB), "
        "pass `--geoclip PATH` with a geoclip wheel or folder, "
        f"or run `pip install --no-deps {GEOCLIP_WHEEL.requirement}`"
    )


def _download(reporter: Reporter) -> Path:
    folder = downloads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    # A private temporary folder beside the final name: parallel builds never see half a
    # file, and a refused download disappears with the folder.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        got = (
            _pip_download(Path(tmp), reporter)
            if _pip_available()
            else _urllib_download(Path(tmp), reporter)
        )
        digest = sha256_file(got)
        if digest != GEOCLIP_WHEEL.sha256:
            raise ExportError(
                f"{GEOCLIP_WHEEL.filename}: the downloaded wheel has sha256 {digest}, not the "
                f"pinned {GEOCLIP_WHEEL.sha256}; it was deleted (check your package index)"
            )
        final = folder / GEOCLIP_WHEEL.filename
        os.replace(got, final)
    return final


def _pip_available() -> bool:
    # uv tool and pipx environments may come without pip.
    return importlib.util.find_spec("pip") is not None


def _pip_download(dest: Path, reporter: Reporter) -> Path:
    # pip brings the user's index, proxy and certificate settings with it.
    reporter.message(
        f"Downloading {GEOCLIP_WHEEL.filename} ({GEOCLIP_WHEEL.size / 1e6:.0f} MB) with pip"
    )
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", "--no-input", "--dest", str(dest)]
    proc = subprocess.run(
        [*cmd, GEOCLIP_WHEEL.requirement], capture_output=True, text=True, errors="replace"
    )
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        # pip's last line may be a detail (a hash it got); its last ERROR line says what failed.
        errors = [line for line in lines if line.startswith("ERROR:")]
        last = (errors or lines or [f"exit status {proc.returncode}"])[-1]
        raise ExportError(f"pip could not download {GEOCLIP_WHEEL.requirement}: {last}")
    wheels = sorted(dest.glob("*.whl"))
    if [w.name for w in wheels] != [GEOCLIP_WHEEL.filename]:
        found = ", ".join(w.name for w in wheels) or "nothing"
        raise ExportError(f"pip download of {GEOCLIP_WHEEL.requirement} gave {found}")
    return wheels[0]


# --- the urllib fallback: a PEP 503 / PEP 691 simple index -----------------------------------


def _index_url() -> str:
    for var in ("PIP_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX"):
        if os.environ.get(var):
            return os.environ[var]
    return DEFAULT_INDEX


class _Http:
    """GETs with the user's proxies (urllib reads the environment) and CA bundle.

    Credentials written in the index URL go to the index host only, never to a file
    host it links to.
    """

    def __init__(self, index: str) -> None:
        parts = urllib.parse.urlsplit(index)
        self.auth: str | None = None
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
        self.index = urllib.parse.urlunsplit(parts)
        self.host = parts.netloc
        cafile = os.environ.get("PIP_CERT") or os.environ.get("REQUESTS_CA_BUNDLE")
        context = ssl.create_default_context(cafile=cafile or None)
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))

    @contextlib.contextmanager
    def get(self, url: str, accept: str = "*/*") -> Iterator[http.client.HTTPResponse]:
        request = urllib.request.Request(url, headers={"Accept": accept})
        if self.auth and urllib.parse.urlsplit(url).netloc == self.host:
            request.add_header("Authorization", self.auth)
        try:
            with self.opener.open(request, timeout=60) as response:
                yield response
        except urllib.error.HTTPError as exc:
            raise ExportError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise ExportError(f"{url}: cannot connect ({exc.reason})") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ExportError(
                f"{url}: download failed ({str(exc) or type(exc).__name__})"
            ) from None


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def _index_files(body: bytes, content_type: str, page: str) -> dict[str, tuple[str, str | None]]:
    """filename -> (absolute url, sha256 or None) from a simple-index project page."""
    files: dict[str, tuple[str, str | None]] = {}
    if "json" in content_type:
        for entry in json.loads(body).get("files", []):
            url = urllib.parse.urljoin(page, entry["url"])
            files[entry["filename"]] = (url, entry.get("hashes", {}).get("sha256"))
        return files
    links = _Links()
    links.feed(body.decode("utf-8", errors="replace"))
    for href in links.hrefs:
        url, fragment = urllib.parse.urldefrag(urllib.parse.urljoin(page, href))
        name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        algo, _, digest = fragment.partition("=")
        files[name] = (url, digest.lower() if algo == "sha256" else None)
    return files


def _urllib_download(dest: Path, reporter: Reporter) -> Path:
    pin = GEOCLIP_WHEEL
    client = _Http(_index_url())
    page = client.index.rstrip("/") + f"/{pin.name}/"
    accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    with client.get(page, accept) as response:
        body, content_type = response.read(), response.headers.get("Content-Type", "")
        page = response.geturl()
    try:
        files = _index_files(body, content_type, page)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ExportError(f"{page}: not a package index page ({exc})") from None
    if pin.filename not in files:
        raise ExportError(f"{page}: the index lists no {pin.filename}")
    url, listed = files[pin.filename]
    if listed is not None and listed != pin.sha256:
        raise ExportError(
            f"{page}: the index lists {pin.filename} with sha256 {listed}, "
            f"not the pinned {pin.sha256}; refusing it"
        )
    target = dest / pin.filename
    with client.get(url) as response, open(target, "wb") as out:
        total = int(response.headers.get("Content-Length") or pin.size)
        with reporter.task(f"Downloading {pin.filename}", total=total) as advance:
            written = 0
            while block := response.read(1 << 20):
                written += len(block)
                if written > pin.size:
                    raise ExportError(f"{url}: larger than the pinned {pin.size} bytes")
                out.write(block)
                advance(len(block))
    return target


# --- reading a geoclip package, in a folder or a wheel ---------------------------------------


class _FolderFiles:
    def __init__(self, root: Path) -> None:
        self.path = root

    def label(self, rel: str) -> str:
        return str(self.path / rel)

    def has(self, rel: str) -> bool:
        return (self.path / rel).is_file()

    def read(self, rel: str) -> bytes:
        return _read_bytes(self.path / rel)

    def sample(self) -> Path | None:
        return self.path / SAMPLE_FILE if self.has(SAMPLE_FILE) else None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ExportError(f"{path}: cannot read ({exc.strerror or exc})") from None


class _WheelFiles:
    def __init__(self, wheel: Path, zf: zipfile.ZipFile, sha256: str) -> None:
        self.path, self.zf, self.sha256 = wheel, zf, sha256
        self.names = set(zf.namelist())

    def label(self, rel: str) -> str:
        return f"{self.path}/geoclip/{rel}"  # how zipfile.Path spells a member

    def has(self, rel: str) -> bool:
        return f"geoclip/{rel}" in self.names

    def read(self, rel: str) -> bytes:
        if not self.has(rel):
            raise ExportError(f"{self.path}: geoclip/{rel} is missing from the wheel")
        try:
            return self.zf.read(f"geoclip/{rel}")
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise ExportError(f"{self.label(rel)}: damaged in the wheel ({exc})") from None

    def sample(self) -> Path | None:
        # Calibration wants a file on disk; keep one per wheel beside the downloads.
        if not self.has(SAMPLE_FILE):
            return None
        path = downloads_dir() / f"geoclip-{self.sha256[:16]}-{Path(SAMPLE_FILE).name}"
        if not path.is_file():
            write_file(path, self.read(SAMPLE_FILE))
        return path


def _read_wheel(wheel: Path, source: str) -> GeoclipWeights:
    pin = GEOCLIP_WHEEL
    digest = sha256_file(wheel)
    claims_pin = wheel.name.lower().startswith(f"{pin.name}-{pin.version}-")
    if claims_pin and digest != pin.sha256:
        raise ExportError(
            f"{wheel}: named like {pin.name} {pin.version} but its sha256 is {digest}, "
            f"not the pinned {pin.sha256}; refusing a wheel that differs from the release"
        )
    version = wheel.name.split("-")[1] if wheel.name.count("-") >= 2 else None
    try:
        with zipfile.ZipFile(wheel) as zf:
            files = _WheelFiles(wheel, zf, digest)
            if not files.has(LOCATION_FILE):
                raise ExportError(f"{wheel}: not a geoclip wheel (no geoclip/{LOCATION_FILE})")
            return _read_package(files, {"source": source, "version": version, "sha256": digest})
    except zipfile.BadZipFile as exc:
        raise ExportError(f"{wheel}: not a readable wheel ({exc})") from None


def _read_folder(path: Path) -> GeoclipWeights:
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        weights, provenance = _read_release(path)
        return _finish(weights, {"source": "hub-release", "path": str(path), **provenance})
    for root in (path, path / "geoclip"):
        if (root / LOCATION_FILE).is_file():
            version = _dist_version(root.parent)
            return _read_package(_FolderFiles(root), {"source": "folder", "version": version})
    raise ExportError(
        f"{path}: not a geoclip package folder, a folder holding geoclip/, "
        "or a release folder (config.json + model.safetensors)"
    )


def _dist_version(site: Path) -> str | None:
    infos = sorted(site.glob(f"{GEOCLIP_PACKAGE}-*.dist-info"))
    return infos[0].name[len(GEOCLIP_PACKAGE) + 1 : -len(".dist-info")] if infos else None


def _read_package(files: _FolderFiles | _WheelFiles, provenance: dict[str, Any]) -> GeoclipWeights:
    blobs = {rel: files.read(rel) for rel in (LOCATION_FILE, MLP_FILE, LOGIT_FILE, GALLERY_FILE)}
    location = load_pth(files.label(LOCATION_FILE), blobs[LOCATION_FILE])
    mlp = load_pth(files.label(MLP_FILE), blobs[MLP_FILE])
    logit = load_pth(files.label(LOGIT_FILE), blobs[LOGIT_FILE])
    weights = _Loaded(
        location=_state(location, files.label(LOCATION_FILE)),
        mlp=_state(mlp, files.label(MLP_FILE)),
        logit=logit,
        logit_label=files.label(LOGIT_FILE),
        sigmas=WHEEL_SIGMAS,
        gallery=_parse_gallery(blobs[GALLERY_FILE], files.label(GALLERY_FILE)),
        sample=files.sample(),
        files={rel: hashlib.sha256(data).hexdigest() for rel, data in blobs.items()},
        labels=(files.label(LOCATION_FILE), files.label(MLP_FILE)),
    )
    provenance = {**provenance, "path": str(files.path), "licence": GEOCLIP_WHEEL.licence}
    return _finish(weights, provenance)


def _state(obj: Any, label: str) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise ExportError(f"{label}: not a state dict of tensors")
    return obj


# --- hub releases -----------------------------------------------------------------------------


def _read_hub(
    source: str, *, allow_download: bool, offline: bool, reporter: Reporter
) -> GeoclipWeights:
    repo_id, _, revision = source.partition("@")
    cached_only = offline or not allow_download
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ExportError(f"{source}: reading a hub release needs huggingface_hub") from None
    if not cached_only:
        reporter.message(f"Fetching GeoCLIP release {source} from the Hugging Face hub")
    try:
        folder = Path(
            snapshot_download(
                repo_id,
                revision=revision or None,
                allow_patterns=["config.json", "model.safetensors", "*.csv"],
                local_files_only=cached_only,
            )
        )
    except Exception as exc:  # the hub client raises many kinds; all end the same way
        hint = ""
        if cached_only:
            hint = " (offline)" if offline else " (not in the hub cache; allow the download)"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(
            f"{source}: no such folder, and no GeoCLIP release from the Hugging Face hub: "
            f"{first}{hint}"
        ) from None
    weights, provenance = _read_release(folder)
    # A snapshot folder is named after the commit it holds.
    provenance = {"source": "hub-release", "id": repo_id, "revision": folder.name, **provenance}
    return _finish(weights, provenance)


def _read_release(folder: Path) -> tuple[_Loaded, dict[str, Any]]:
    config_path = folder / "config.json"
    config_bytes = _read_bytes(config_path)
    try:
        config = json.loads(config_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("model_type") != RELEASE_MODEL_TYPE:
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise ExportError(f"{config_path}: model_type is {kind!r}, not {RELEASE_MODEL_TYPE!r}")
    version = config.get("format_version")
    if type(version) is not int or version != 1:
        raise ExportError(f"{config_path}: format_version {version!r} is not 1, the one read here")
    sigma = config.get("sigma")
    if not (
        isinstance(sigma, list)
        and sigma
        and all(type(s) in (int, float) and math.isfinite(s) and s > 0 for s in sigma)
    ):
        raise ExportError(f"{config_path}: sigma must be a list of positive numbers")
    gallery_file = config.get("gallery_file")
    if not (
        isinstance(gallery_file, str)
        and gallery_file.endswith(".csv")
        and Path(gallery_file).name == gallery_file
        and gallery_file not in (".csv", "..csv")
    ):
        raise ExportError(f"{config_path}: gallery_file must name a CSV file inside the release")
    if not (folder / gallery_file).is_file():
        raise ExportError(f"{folder / gallery_file}: the release's gallery file is missing")
    backbone = config.get("backbone")
    if not (
        isinstance(backbone, dict)
        and isinstance(backbone.get("repo_id"), str)
        and isinstance(backbone.get("revision"), str)
    ):
        raise ExportError(f"{config_path}: backbone must give repo_id and revision")

    model_path = folder / "model.safetensors"
    model_bytes = _read_bytes(model_path)
    tensors = _load_safetensors(model_bytes, str(model_path))
    location = _strip(tensors, "location_encoder.")
    mlp = _strip(tensors, "image_encoder.mlp.")
    unexpected = sorted(
        k
        for k in tensors
        if k != "logit_scale" and not k.startswith(("location_encoder.", "image_encoder.mlp."))
    )
    if unexpected:
        raise ExportError(f"{model_path}: unexpected tensors {_few(unexpected)}")
    if "logit_scale" not in tensors:
        raise ExportError(f"{model_path}: no logit_scale tensor")
    gallery_bytes = _read_bytes(folder / gallery_file)
    loaded = _Loaded(
        location=location,
        mlp=mlp,
        logit=tensors["logit_scale"],
        logit_label=f"{model_path} (logit_scale)",
        sigmas=tuple(float(s) for s in sigma),
        gallery=_parse_gallery(gallery_bytes, str(folder / gallery_file)),
        sample=None,
        files={
            "config.json": hashlib.sha256(config_bytes).hexdigest(),
            "model.safetensors": hashlib.sha256(model_bytes).hexdigest(),
            gallery_file: hashlib.sha256(gallery_bytes).hexdigest(),
        },
        labels=(f"{model_path} (location_encoder.*)", f"{model_path} (image_encoder.mlp.*)"),
    )
    licence = config.get("license") or config.get("licence") or GEOCLIP_WHEEL.licence
    provenance = {
        "backbone": {"repo_id": backbone["repo_id"], "revision": backbone["revision"]},
        "licence": licence,
    }
    return loaded, provenance


def _load_safetensors(data: bytes, label: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    try:
        return load(data)
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise ExportError(f"{label}: not a readable safetensors file ({exc})") from None


def _strip(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


# --- checks shared by every source ------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Loaded:
    location: dict[str, np.ndarray]
    mlp: dict[str, np.ndarray]
    logit: Any
    logit_label: str
    sigmas: tuple[float, ...]
    gallery: np.ndarray
    sample: Path | None
    files: dict[str, str]
    labels: tuple[str, str]  # how messages name the location encoder and the mlp


def _finish(w: _Loaded, provenance: dict[str, Any]) -> GeoclipWeights:
    location_label, mlp_label = w.labels
    capsules = {k.split(".", 1)[0] for k in w.location}
    if len(capsules) != len(w.sigmas):
        raise ExportError(
            f"{location_label}: {len(capsules)} location-encoder capsules "
            f"but {len(w.sigmas)} sigmas {list(w.sigmas)}"
        )
    expected = {
        f"LocEnc{i}.{k}": shape
        for i in range(len(w.sigmas))
        for k, shape in _CAPSULE_SHAPES.items()
    }
    logit = w.logit
    if not isinstance(logit, np.ndarray) or logit.shape != () or logit.dtype.kind != "f":
        shape = getattr(logit, "shape", type(logit).__name__)
        raise ExportError(f"{w.logit_label}: logit_scale must be a float scalar, not {shape}")
    return GeoclipWeights(
        location_encoder=_checked(w.location, expected, location_label),
        mlp=_checked(w.mlp, _MLP_SHAPES, mlp_label),
        logit_scale=float(logit),
        sigmas=w.sigmas,
        gallery=w.gallery,
        sample_image=w.sample,
        provenance={**provenance, "files": w.files},
    )


def _checked(
    state: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], label: str
) -> dict[str, np.ndarray]:
    missing, unexpected = sorted(shapes.keys() - state), sorted(state.keys() - shapes)
    if missing or unexpected:
        raise ExportError(f"{label}: missing {_few(missing)}, unexpected {_few(unexpected)}")
    for key, shape in shapes.items():
        if state[key].shape != shape or state[key].dtype.kind != "f":
            raise ExportError(
                f"{label}: {key} is {state[key].dtype} {state[key].shape}, expected float {shape}"
            )
    # Released weights are float32; a half-precision release is widened, not rounded.
    return {k: np.asarray(state[k], dtype=np.float32) for k in shapes}


def _few(keys: list[str], n: int = 4) -> str:
    if not keys:
        return "none"
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _parse_gallery(data: bytes, label: str) -> np.ndarray:
    """(N, 2) float32 lat/lon from a CSV with LAT and LON columns (any order, any extra)."""
    try:
        reader = csv.reader(io.StringIO(data.decode("utf-8-sig")))
        header = [h.strip().upper() for h in next(reader, [])]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ExportError(f"{label}: not a CSV file ({exc})") from None
    if "LAT" not in header or "LON" not in header:
        raise ExportError(f"{label}: gallery CSV needs LAT and LON columns")
    ilat, ilon = header.index("LAT"), header.index("LON")
    rows = []
    try:
        for line, row in enumerate(reader, start=2):
            try:
                if row:
                    rows.append((float(row[ilat]), float(row[ilon])))
            except (IndexError, ValueError):
                raise ExportError(f"{label}: line {line} has no numeric LAT and LON") from None
    except csv.Error as exc:
        raise ExportError(f"{label}: not a CSV file ({exc})") from None
    # float32 like GeoCLIP's own gallery tensor, so coordinates compare exactly.
    gallery = np.asarray(rows, dtype=np.float32).reshape(-1, 2)
    if len(gallery) == 0:
        raise ExportError(f"{label}: the gallery has no coordinates")
    bad = ~((np.abs(gallery[:, 0]) <= 90) & (np.abs(gallery[:, 1]) <= 180))
    if bad.any():
        raise ExportError(
            f"{label}: row {int(np.argmax(bad)) + 1} is not a valid latitude/longitude"
        )
    return gallery
