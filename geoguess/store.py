"""The model store: where model sets live, and how they get there safely.

Layout under the home (``GEOGUESS_HOME``, else the platform's user data directory)::

    models/<name>/manifest.json      one folder per model set
    models/<name>/...                files listed in the manifest
    models/<name>/.verify-failed.json  what `models verify` found damaged (set refused)
    models/.tmp-*/                   half-built or half-installed sets (never listed)
    cache/verified.json              files whose sha256 was checked, by stat signature

Installs and builds write into a private folder next to ``models/<name>`` and rename
it into place only once every checksum matches (geoguess.atomic), so an interrupted
build never looks installed. Caches that can be rebuilt (geoguess.derived) live under
:func:`cache_root`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
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
from typing import Any

from . import atomic, environment
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
#: Files up to this size are hashed at every load; larger ones are trusted while their
#: stat signature is unchanged (see :func:`intact`). 256 MiB covers the arrays that
#: answers are read from (coordinates, a 100K gallery and its float32 copy: sha256 runs
#: at about 1.5 GB/s, 0.14 s for the 205 MB float32 gallery) but not the encoders.
HASH_EVERY_LOAD_BYTES = 256 << 20
#: Written into a set's folder by `models verify` when it finds a damaged file.
VERIFY_FAILED = ".verify-failed.json"


def home() -> Path:
    env = os.environ.get(environment.HOME)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("geoguess", appauthor=False))


def models_dir() -> Path:
    return home() / "models"


def cache_root() -> Path:
    """Where rebuildable caches live: ``GEOGUESS_CACHE_DIR``, else
    ``$GEOGUESS_HOME/cache``, else the platform's user cache directory."""
    env = os.environ.get(environment.CACHE_DIR)
    if env:
        return Path(env).expanduser()
    if os.environ.get(environment.HOME):
        return home() / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir("geoguess", appauthor=False))


def downloads_dir() -> Path:
    """Where fetched source files (GeoCLIP's wheel) are kept between builds."""
    return home() / "downloads"


def default_model_name() -> str:
    return os.environ.get(environment.MODEL) or DEFAULT_MODEL


def check_name(name: str, what: str = "model") -> str:
    """``name`` when it can name a model set or a gallery (a folder on every system)."""
    if not _NAME_RE.match(name):
        raise UsageError(
            f"invalid {what} name {name!r}: use letters, digits, '.', '_' or '-' (max 64)"
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
    """Installed sets whose manifest can be read (see :func:`scan_models`)."""
    return scan_models()[0]


def scan_models() -> tuple[list[InstalledModel], dict[str, SetupError]]:
    """Installed sets, and the folders of those whose manifest is damaged, by name."""
    root = models_dir()
    good: list[InstalledModel] = []
    bad: dict[str, SetupError] = {}
    if not root.is_dir():
        return good, bad
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not (child / MANIFEST_NAME).is_file():
            continue
        try:
            good.append(InstalledModel(child.name, child, load_manifest(child)))
        except SetupError as exc:
            bad[child.name] = exc
    return good, bad


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


# --- trust records: files whose sha256 was checked ----------------------------------


def _trust_path() -> Path:
    return home() / "cache" / "verified.json"


def _read_trust() -> dict[str, str]:
    try:
        data = json.loads(_trust_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_trust(data: dict[str, str]) -> None:
    # Unwritable: files are hashed again next time, which costs only time.
    with contextlib.suppress(OSError):
        atomic.write_file(_trust_path(), json.dumps(data, indent=0, sort_keys=True))


def _trust_key(path: Path, sha256: str) -> str:
    return f"{path.resolve()}|{sha256}"


def intact(path: Path, sha256: str) -> bool:
    """Whether ``path`` holds the bytes with this sha256, hashing only when needed.

    Files up to :data:`HASH_EVERY_LOAD_BYTES` are hashed every time. Hashing a 1.2 GB
    encoder costs seconds, too much for every start: a larger file whose size, mtime
    and inode are unchanged since a successful full check is trusted. Any write through
    the file system changes that signature and forces a new hash; a change that keeps
    it (bit rot, or an edit with the timestamp put back) is found only by
    ``geoguess models verify``. Model files and the derived cache (geoguess.derived)
    both go through here. OSError if the file cannot be read.
    """
    before = file_signature(path)
    big = os.stat(path).st_size > HASH_EVERY_LOAD_BYTES
    if big:
        with _lock:
            if _read_trust().get(_trust_key(path, sha256)) == before:
                return True
    if sha256_file(path) != sha256:
        return False
    if big:
        remember(path, sha256, signature=before)
    return True


def remember(path: Path, sha256: str, *, signature: str | None = None) -> None:
    """Trust ``path`` as it is now, for a caller that has just hashed it; with
    ``signature`` (taken before hashing) only if the file has not changed since."""
    with _lock:
        now = file_signature(path)
        if signature is not None and now != signature:
            return
        # Records of files gone since (cache entries set aside) go, so the file stays small.
        trust = {k: v for k, v in _read_trust().items() if Path(k.rpartition("|")[0]).exists()}
        trust[_trust_key(path, sha256)] = now
        _write_trust(trust)


def verify_failures(model_dir: Path) -> dict[str, str] | None:
    """What `models verify` last found damaged in a set (file -> problem), or None."""
    mark = model_dir / VERIFY_FAILED
    try:
        data = json.loads(mark.read_text(encoding="utf-8"))
        files = data["files"]
        return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # a mark we cannot read still marks the set


def verified_path(model_dir: Path, manifest: Manifest, rel: str) -> Path:
    """Check a file against the manifest (see :func:`intact`); ModelIntegrityError if
    not, or if `models verify` found a file of the set damaged and it is not repaired."""
    failures = verify_failures(model_dir)
    if failures is not None:
        bad, problem = next(iter(failures.items()), (VERIFY_FAILED, "damaged"))
        raise ModelIntegrityError(
            model_dir / bad,
            f"{problem}; found by `geoguess models verify`, so model set "
            f"{model_dir.name!r} is refused until it is repaired",
            f"restore the file and run `geoguess models verify {model_dir.name}`, "
            "or rebuild or reinstall the set with --force",
        )
    path = check_file(model_dir, manifest, rel, full=False)
    if not intact(path, manifest.files[rel].sha256):
        check_file(model_dir, manifest, rel, full=True)  # raises, saying what is wrong
    return path


def remember_verified(
    model_dir: Path, manifest: Manifest, only: Collection[str] | None = None
) -> None:
    """Trust files as they are now; ``only`` limits it to files just hashed by the caller."""
    with _lock:
        trust = _read_trust()
        for rel, entry in manifest.files.items():
            if only is not None and rel not in only:
                continue
            p = model_dir / rel
            with contextlib.suppress(OSError):
                trust[_trust_key(p, entry.sha256)] = file_signature(p)
        _write_trust(trust)


def verify_model(name: str | None = None) -> tuple[InstalledModel, list[ModelIntegrityError]]:
    """Hash every file of a set; returns the problems (empty when intact).

    Problems are recorded in the set's folder (:data:`VERIFY_FAILED`), and every later
    load refuses the set until a verify finds it whole again or it is replaced.
    """
    model = get_model(name)
    problems = verify_all(model.path, model.manifest)
    mark = model.path / VERIFY_FAILED
    if problems:
        found: dict[str, Any] = {
            "files": {p.path.relative_to(model.path).as_posix(): p.problem for p in problems},
            "checked": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        with contextlib.suppress(OSError):  # a read-only store: the report still stands
            atomic.write_file(mark, json.dumps(found, indent=2, sort_keys=True) + "\n")
        bad = set(found["files"])
        remember_verified(model.path, model.manifest, only=set(model.manifest.files) - bad)
    else:
        mark.unlink(missing_ok=True)
        remember_verified(model.path, model.manifest)
    return model, problems


def remove_model(name: str) -> Path:
    """Delete an installed set (renamed aside first: never seen half-deleted)."""
    model = get_model(name)
    atomic.discard(model.path)
    return model.path


# --- staging and atomic install --------------------------------------------------------


@contextlib.contextmanager
def staging(name: str) -> Iterator[Path]:
    """A scratch folder that becomes ``models/<name>`` only through :func:`commit`."""
    root = models_dir()
    atomic.sweep(root)  # what crashed builds left behind
    with atomic.private_folder(root, name) as tmp:
        yield tmp


def commit(
    staged: Path, name: str, *, force: bool = False, source: str | None = None
) -> InstalledModel:
    """Verify a staged set and move it into place atomically.

    ``source``: where an installed set came from, named when one of its files is bad.
    """
    check_name(name)
    manifest = load_manifest(staged)
    fix = f"{source} is damaged; get a fresh copy" if source else "build the model set again"
    problems = verify_all(staged, manifest, fix=fix)
    if problems:
        raise problems[0]
    target = models_dir() / name
    exists = UsageError(
        f"model set {name!r} already exists at {target}; pass --force to replace it"
    )
    if target.exists() and not force:
        raise exists
    if not atomic.publish_folder(staged, target, replace=force):
        raise exists  # another build or install of the same name finished first
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
        return commit(payload, final_name, force=force, source=source)
