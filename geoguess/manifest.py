"""The manifest of a model set: what every file is, its checksum and where it came from.

A model set is a folder; ``manifest.json`` in it lists each file with its size and
sha256. Nothing in a model set is trusted before it has been checked against the
manifest, and nothing is unpickled: arrays are ``.npy`` read with
``allow_pickle=False`` and graphs are ONNX. The manifest carries a checksum of its own
content (``manifest_sha256``), since its numbers (logit scale, preprocessing, file
checksums) change answers as much as any file does.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import write_file
from .errors import ModelIntegrityError, SetupError, UsageError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
#: The field holding the sha256 of the rest of the manifest (see :func:`content_sha256`).
CHECKSUM_FIELD = "manifest_sha256"

#: Precisions of the image encoder a model set may carry, fastest-first per device.
PRECISIONS = ("fp32", "fp16", "int8")


def check_precision(precision: str | None) -> None:
    """UsageError unless ``precision`` is None (the default) or one of PRECISIONS."""
    if precision is not None and precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass
class Manifest:
    """In-memory view of ``manifest.json``; ``raw`` keeps fields added by later versions."""

    name: str
    files: dict[str, FileEntry]
    raw: dict[str, Any] = field(repr=False)

    # Accessors for the fields the runtime needs, so a malformed manifest fails in one place.
    @property
    def embedding_dim(self) -> int:
        return int(self.raw["embedding_dim"])

    @property
    def logit_scale(self) -> float:
        return float(self.raw["logit_scale"])

    @property
    def preprocess(self) -> dict[str, Any]:
        return dict(self.raw["preprocess"])

    @property
    def image_encoders(self) -> dict[str, str]:
        return dict(self.raw["image_encoder"]["files"])

    @property
    def location_encoder(self) -> str:
        return str(self.raw["location_encoder"]["file"])

    @property
    def galleries(self) -> dict[str, dict[str, Any]]:
        return dict(self.raw.get("galleries", {}))

    @property
    def random_weights(self) -> bool:
        """True when the image backbone was randomly initialised (tests, benchmarks)."""
        return bool(self.raw.get("provenance", {}).get("backbone", {}).get("random_init"))

    def to_json(self) -> str:
        return manifest_text(self.raw)


def content_sha256(raw: dict[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON (sorted keys, no spaces), checksum left out.

    Canonical, so that reformatting the file changes nothing while any changed value,
    key or number does (Python writes floats so that they read back exactly).
    """
    rest = {k: v for k, v in raw.items() if k != CHECKSUM_FIELD}
    blob = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def manifest_text(raw: dict[str, Any]) -> str:
    """The text of ``manifest.json`` for ``raw``, with its checksum filled in."""
    sealed = {**raw, CHECKSUM_FIELD: content_sha256(raw)}
    return json.dumps(sealed, indent=2, sort_keys=True) + "\n"


def write_manifest(model_dir: Path, raw: dict[str, Any]) -> None:
    """Write (or replace, in one step) the manifest of the set in ``model_dir``."""
    write_file(model_dir / MANIFEST_NAME, manifest_text(raw))


def _rebuild_hint(model_dir: Path) -> str:
    return (
        f"rebuild model set {model_dir.name!r} with `geoguess models build --force` and the "
        "options it was built with, or reinstall it with `geoguess models install --force`"
    )


def load_manifest(model_dir: Path) -> Manifest:
    path = model_dir / MANIFEST_NAME
    if not path.is_file():
        raise ModelIntegrityError(path, "manifest.json is missing", "reinstall the model set")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelIntegrityError(path, f"cannot read manifest: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format_version") != FORMAT_VERSION:
        found = raw.get("format_version") if isinstance(raw, dict) else None
        raise SetupError(
            f"{path}: manifest format {found!r} is not {FORMAT_VERSION}; "
            "rebuild the model set with this version of geoguess"
        )
    # Before anything in it is believed: a damaged manifest must be blamed itself, not
    # the file whose recorded checksum or size it now gets wrong.
    recorded = raw.get(CHECKSUM_FIELD)
    if recorded is None:
        raise ModelIntegrityError(
            path,
            "manifest.json has no checksum (it was written by an earlier geoguess), so the "
            "settings in it cannot be checked",
            _rebuild_hint(model_dir),
        )
    if recorded != content_sha256(raw):
        raise ModelIntegrityError(
            path,
            "manifest.json does not match its own checksum (the file was altered)",
            _rebuild_hint(model_dir),
        )
    try:
        files = {
            str(rel): FileEntry(size=int(e["size"]), sha256=str(e["sha256"]))
            for rel, e in raw["files"].items()
        }
        name = str(raw["name"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelIntegrityError(path, f"manifest is malformed ({exc})") from exc
    for rel in files:
        # A manifest must never point outside its own folder.
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ModelIntegrityError(path, f"manifest names a file outside the model: {rel}")
    return Manifest(name=name, files=files, raw=raw)


def describe_files(model_dir: Path, relpaths: list[str]) -> dict[str, dict[str, Any]]:
    """Size and sha256 of each file, as recorded in a manifest."""
    out: dict[str, dict[str, Any]] = {}
    for rel in sorted(relpaths):
        p = model_dir / rel
        out[rel] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    return out


def check_file(
    model_dir: Path, manifest: Manifest, rel: str, *, full: bool = True, fix: str | None = None
) -> Path:
    """Check one file against the manifest and return its path.

    ``full=False`` checks presence and size only; the full hash is what ``verify`` and
    the first load of a file do (see :mod:`geoguess.store`, which remembers verified
    files so that a 1 GB encoder is not re-hashed on every start). ``fix``: the hint
    for the user (default: verify or reinstall the installed set, by its folder name).
    """
    fix = fix or f"run `geoguess models verify {model_dir.name}` or reinstall the model set"
    entry = manifest.files.get(rel)
    path = model_dir / rel
    if entry is None:
        raise ModelIntegrityError(path, "file is not listed in manifest.json", fix)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ModelIntegrityError(path, "file is missing", fix) from None
    if size != entry.size:
        what = "truncated" if size < entry.size else "larger than recorded"
        raise ModelIntegrityError(path, f"file is {what} ({size} of {entry.size} bytes)", fix)
    if full and sha256_file(path) != entry.sha256:
        raise ModelIntegrityError(path, "sha256 does not match manifest.json (file altered)", fix)
    return path


def verify_all(
    model_dir: Path, manifest: Manifest, *, fix: str | None = None
) -> list[ModelIntegrityError]:
    """Every problem with the model set's files (empty when it is intact)."""
    problems = []
    for rel in manifest.files:
        try:
            check_file(model_dir, manifest, rel, full=True, fix=fix)
        except ModelIntegrityError as exc:
            problems.append(exc)
    return problems


def file_signature(path: Path) -> str:
    """Cheap identity of a file's current bytes (size, mtime, inode) for the verify cache."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
