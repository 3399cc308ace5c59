"""The model store: where model sets live, and how they get there safely.

Layout under the home (``GEOGUESS_HOME``, else the platform's user data directory)::

    models/<name>/manifest.json      one folder per model set
    models/<name>/...                files listed in the manifest
    models/.staging-*/               half-built or half-installed sets (never listed)
    cache/verified.json              files whose sha256 was checked, by stat signature

Installs and builds write into a staging folder next to ``models/<name>`` and rename
it into place only once every checksum matches, so an interrupted build never
looks installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelIntegrityError, ModelNotFoundError, SetupError, UsageError
from .manifest import (
    MANIFEST_NAME,
    Manifest,
    check_file,
    file_signature,
    load_manifest,
    sha256_file,
    verify_all,
)

DEFAULT_MODEL = "geoclip-vit-l14"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_lock = threading.Lock()


def home() -> Path:
    env = os.environ.get("GEOGUESS_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("geoguess", appauthor=False))


def models_dir() -> Path:
    return home() / "models"


def downloads_dir() -> Path:
    """Where fetched source files (GeoCLIP's wheel) are kept between builds."""
    return home() / "downloads"


def default_model_name() -> str:
    return os.environ.get("GEOGUESS_MODEL") or DEFAULT_MODEL


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise UsageError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' or '-' (max 64)"
        )
    return name


@dataclass(frozen=True)
class InstalledModel:
    name: str
    path: Path
    manifest: Manifest

    def file(self, rel: str) -> Path:
        """Path of a file of this set, checked against the manifest before use.

        A graph whose weights live beside it (``<rel>.data``, ONNX external data) is
        checked together with them: ONNX Runtime reads both.
        """
        path = verified_path(self.path, self.manifest, rel)
        if data_companion(rel) in self.manifest.files:
            verified_path(self.path, self.manifest, data_companion(rel))
        return path

    def content_sha256(self, rel: str) -> str:
        """One sha256 for a file and its external data: what a cache of it is keyed on."""
        sha = self.manifest.files[rel].sha256
        data = self.manifest.files.get(data_companion(rel))
        if data is None:
            return sha
        return hashlib.sha256(f"{sha}+{data.sha256}".encode()).hexdigest()

    def size_bytes(self) -> int:
        return sum(e.size for e in self.manifest.files.values())


def data_companion(rel: str) -> str:
    """The external-data file that an ONNX graph ``rel`` may keep its weights in."""
    return rel + ".data"


def list_models() -> list[InstalledModel]:
    root = models_dir()
    if not root.is_dir():
        return []
    out = []
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not (child / MANIFEST_NAME).is_file():
            continue
        with contextlib.suppress(SetupError):
            out.append(InstalledModel(child.name, child, load_manifest(child)))
    return out


def get_model(name: str | None = None) -> InstalledModel:
    """The installed model set called ``name`` (default: ``GEOGUESS_MODEL`` or the default)."""
    name = check_name(name or default_model_name())
    path = models_dir() / name
    if not (path / MANIFEST_NAME).is_file():
        raise ModelNotFoundError(no_model_message(name))
    return InstalledModel(name, path, load_manifest(path))


def no_model_message(name: str) -> str:
    return (
        f"model set {name!r} is not installed in {models_dir()}; "
        + (
            "run: geoguess models build"
            if name == DEFAULT_MODEL
            else f"run: geoguess models build --name {name}"
        )
        + " (or install a built one: geoguess models install PATH_OR_URL)"
    )


# --- verification cache -------------------------------------------------------------


def _cache_path() -> Path:
    return home() / "cache" / "verified.json"


def _read_cache() -> dict[str, str]:
    try:
        data = json.loads(_cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(data: dict[str, str]) -> None:
    path = _cache_path()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=0, sort_keys=True))
        os.replace(tmp, path)


def _cache_key(path: Path, sha256: str) -> str:
    return f"{path.resolve()}|{sha256}"


def intact(path: Path, sha256: str) -> bool:
    """Whether ``path`` holds the bytes with this sha256, hashing only when needed.

    Hashing a 1.2 GB encoder costs seconds, too much for every start. A file whose
    size, mtime and inode are unchanged since a successful full check is trusted; any
    write to it changes the signature and forces a new hash. Model files and the
    derived cache (geoguess.derived) both go through here. OSError if it cannot be read.
    """
    key = _cache_key(path, sha256)
    with _lock:
        if _read_cache().get(key) == file_signature(path):
            return True
    if sha256_file(path) != sha256:
        return False
    remember(path, sha256)
    return True


def remember(path: Path, sha256: str) -> None:
    """Trust ``path`` as it is now; for a caller that has just hashed it."""
    with _lock:
        cache = _read_cache()
        cache[_cache_key(path, sha256)] = file_signature(path)
        _write_cache(cache)


def verified_path(model_dir: Path, manifest: Manifest, rel: str) -> Path:
    """Check a file against the manifest (see :func:`intact`); ModelIntegrityError if not."""
    path = check_file(model_dir, manifest, rel, full=False)
    if not intact(path, manifest.files[rel].sha256):
        check_file(model_dir, manifest, rel, full=True)  # raises, saying what is wrong
    return path


def remember_verified(
    model_dir: Path, manifest: Manifest, only: Collection[str] | None = None
) -> None:
    """Trust files as they are now; ``only`` limits it to files just hashed by the caller."""
    with _lock:
        cache = _read_cache()
        for rel, entry in manifest.files.items():
            if only is not None and rel not in only:
                continue
            p = model_dir / rel
            cache[_cache_key(p, entry.sha256)] = file_signature(p)
        _write_cache(cache)


def verify_model(name: str | None = None) -> tuple[InstalledModel, list[ModelIntegrityError]]:
    """Hash every file of a set; returns the problems (empty when intact)."""
    model = get_model(name)
    problems = verify_all(model.path, model.manifest)
    if not problems:
        remember_verified(model.path, model.manifest)
    return model, problems


def remove_model(name: str) -> Path:
    model = get_model(name)
    # Rename first so a half-deleted set is never seen as installed.
    trash = model.path.parent / f".trash-{model.name}-{os.getpid()}"
    os.replace(model.path, trash)
    shutil.rmtree(trash, ignore_errors=True)
    return model.path


# --- staging and atomic install --------------------------------------------------------


@contextlib.contextmanager
def staging(name: str) -> Iterator[Path]:
    """A scratch folder that becomes ``models/<name>`` only through :func:`commit`."""
    root = models_dir()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=root))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def commit(staged: Path, name: str, *, force: bool = False) -> InstalledModel:
    """Verify a staged set and move it into place atomically."""
    check_name(name)
    manifest = load_manifest(staged)
    problems = verify_all(staged, manifest)
    if problems:
        raise problems[0]
    target = models_dir() / name
    if target.exists():
        if not force:
            raise UsageError(
                f"model set {name!r} already exists at {target}; pass --force to replace it"
            )
        old = target.parent / f".trash-{name}-{os.getpid()}"
        os.replace(target, old)
        os.replace(staged, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, target)
    installed = InstalledModel(name, target, load_manifest(target))
    remember_verified(target, installed.manifest)
    return installed


def _safe_extract(tar: tarfile.TarFile, dest: Path, source: str) -> None:
    dest_resolved = dest.resolve()
    for member in tar.getmembers():
        target = (dest / member.name).resolve()
        if not target.is_relative_to(dest_resolved):
            raise SetupError(
                f"{source}: archive member {member.name!r} would land outside the model"
            )
        if member.issym() or member.islnk() or member.isdev():
            raise SetupError(f"{source}: archive member {member.name!r} is a link or device")
    # The data filter (Python >= 3.12, backported to security releases) refuses the same
    # things again; keep our own checks for interpreters without it.
    kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    tar.extractall(dest, **kwargs)


def _find_manifest_root(folder: Path, source: str) -> Path:
    if (folder / MANIFEST_NAME).is_file():
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir() and (p / MANIFEST_NAME).is_file()]
    if len(subs) == 1:
        return subs[0]
    raise SetupError(f"{source}: no manifest.json found; is this a geoguess model set?")


def install_model(source: str, *, name: str | None = None, force: bool = False) -> InstalledModel:
    """Install a built model set from a folder, a .tar/.tar.gz, or a URL to an archive."""
    with staging(name or "install") as stage, tempfile.TemporaryDirectory() as dl:
        src_path = Path(source).expanduser()
        parsed = urllib.parse.urlparse(source)
        if parsed.scheme in {"http", "https"}:
            archive = Path(dl) / "download.tar"
            try:
                with urllib.request.urlopen(source, timeout=60) as r, open(archive, "wb") as f:
                    shutil.copyfileobj(r, f)
            except OSError as exc:
                raise SetupError(f"{source}: download failed: {exc}") from exc
            src_path = archive
        elif parsed.scheme == "file":
            src_path = Path(urllib.request.url2pathname(parsed.path))
        if src_path.is_dir():
            root = _find_manifest_root(src_path, source)
            payload = stage / "set"
            shutil.copytree(root, payload)
        elif src_path.is_file():
            extract_to = stage / "extract"
            extract_to.mkdir()
            try:
                with tarfile.open(src_path) as tar:
                    _safe_extract(tar, extract_to, source)
            except tarfile.TarError as exc:
                raise SetupError(f"{source}: not a readable tar archive: {exc}") from exc
            payload = _find_manifest_root(extract_to, source)
        else:
            raise SetupError(f"{source}: no such file or folder")
        manifest = load_manifest(payload)
        # Nothing outside the manifest may ride along into the store.
        listed = set(manifest.files) | {MANIFEST_NAME}
        for p in payload.rglob("*"):
            if p.is_file() and p.relative_to(payload).as_posix() not in listed:
                p.unlink()
        final_name = check_name(name or manifest.name)
        return commit(payload, final_name, force=force)
