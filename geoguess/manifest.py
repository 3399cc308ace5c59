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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

from .atomic import write_file
from .errors import ModelIntegrityError, SetupError, UsageError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
#: The folder of a model set that holds its galleries, one subfolder each.
GALLERY_DIR = "galleries"
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


def _extra(raw: Mapping[str, Any], known: Iterable[str]) -> dict[str, Any]:
    # Fields a later geoguess added: kept as they are, so rewriting an entry loses nothing.
    names = set(known)
    return {k: v for k, v in raw.items() if k not in names}


@dataclass(frozen=True)
class TreeEntry:
    """A search tree of a gallery (see :mod:`geoguess.tree`), as the manifest lists it."""

    dir: str
    levels: tuple[int, ...]
    features: str
    node: str
    nodes_per_level: tuple[int, ...]
    files: tuple[str, ...]
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    _FIELDS = ("dir", "levels", "features", "node", "nodes_per_level", "files")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Self:
        return cls(
            dir=str(raw["dir"]),
            levels=tuple(int(n) for n in raw["levels"]),
            features=str(raw["features"]),
            node=str(raw["node"]),
            nodes_per_level=tuple(int(n) for n in raw["nodes_per_level"]),
            files=tuple(str(f) for f in raw["files"]),
            extra=_extra(raw, cls._FIELDS),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "dir": self.dir,
            "levels": list(self.levels),
            "features": self.features,
            "node": self.node,
            "nodes_per_level": list(self.nodes_per_level),
            "files": list(self.files),
        }


@dataclass(frozen=True)
class GalleryEntry:
    """One GPS gallery of a model set (see :mod:`geoguess.galleries`): where its files
    are, what it holds and its search trees by key (e.g. ``"316,13"``)."""

    coords: str
    embeddings: str
    size: int
    source: str
    #: Each point's country and region (:mod:`geoguess.areas`); None in older sets.
    areas: str | None = None
    #: A custom gallery's label per point (its CSV's NAME column), if it had one.
    names: str | None = None
    custom: bool = False
    trees: Mapping[str, TreeEntry] = field(default_factory=dict)
    default_tree: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    _FIELDS = (
        "coords",
        "embeddings",
        "size",
        "source",
        "areas",
        "names",
        "custom",
        "trees",
        "default_tree",
    )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Self:
        trees = raw.get("trees", {})
        return cls(
            coords=str(raw["coords"]),
            embeddings=str(raw["embeddings"]),
            size=int(raw["size"]),
            source=str(raw["source"]),
            areas=None if raw.get("areas") is None else str(raw["areas"]),
            names=None if raw.get("names") is None else str(raw["names"]),
            custom=bool(raw.get("custom", False)),
            trees={str(k): TreeEntry.from_dict(t) for k, t in trees.items()},
            default_tree=None if raw.get("default_tree") is None else str(raw["default_tree"]),
            extra=_extra(raw, cls._FIELDS),
        )

    def to_dict(self) -> dict[str, Any]:
        """The entry as ``manifest.json`` holds it; optional fields only when set, so
        the file reads as it always has."""
        out: dict[str, Any] = {
            **self.extra,
            "coords": self.coords,
            "embeddings": self.embeddings,
            "size": self.size,
            "source": self.source,
        }
        if self.areas is not None:
            out["areas"] = self.areas
        if self.names is not None:
            out["names"] = self.names
        if self.custom:
            out["custom"] = True
        if self.trees:
            out["trees"] = {k: t.to_dict() for k, t in self.trees.items()}
        if self.default_tree is not None:
            out["default_tree"] = self.default_tree
        return out

    @property
    def folder(self) -> str:
        """The gallery's folder in the model set (``galleries/<name>``)."""
        return Path(self.embeddings).parent.as_posix()

    def with_tree(self, key: str, tree: TreeEntry, *, make_default: bool = True) -> Self:
        """This entry with ``tree`` added (or replacing the tree of the same key); it
        becomes the default when asked, or when the gallery had none."""
        default = key if make_default or self.default_tree is None else self.default_tree
        return replace(self, trees={**self.trees, key: tree}, default_tree=default)


@dataclass
class Manifest:
    """In-memory view of ``manifest.json``; ``raw`` keeps fields added by later versions.

    Gallery and tree entries are read here only (:class:`GalleryEntry`); writers
    change ``raw`` through :func:`set_gallery`, :func:`drop_gallery` and
    :func:`replace_files`, then :func:`write_manifest`.
    """

    name: str
    files: dict[str, FileEntry]
    raw: dict[str, Any] = field(repr=False)
    galleries: dict[str, GalleryEntry] = field(default_factory=dict)
    default_gallery: str | None = None

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
    def random_weights(self) -> bool:
        """True when the image backbone was randomly initialised (tests, benchmarks)."""
        return bool(self.raw.get("provenance", {}).get("backbone", {}).get("random_init"))

    def gallery(self, name: str | None, *, model_name: str) -> tuple[str, GalleryEntry]:
        """The gallery ``name`` (None: the default one, else the first) and its entry;
        UsageError naming the galleries there are when the set has no such gallery."""
        name = name or self.default_gallery or next(iter(self.galleries), None)
        if name is None or name not in self.galleries:
            raise UsageError(
                f"model set {model_name!r} has no gallery {name!r} "
                f"(it has: {', '.join(self.galleries) or 'none'})"
            )
        return name, self.galleries[name]

    def to_json(self) -> str:
        return manifest_text(self.raw)


# --- changing a raw manifest (before write_manifest seals it again) --------------------


def set_gallery(raw: dict[str, Any], name: str, entry: GalleryEntry) -> None:
    """Add gallery ``name`` to a raw manifest, or replace it."""
    raw.setdefault("galleries", {})[name] = entry.to_dict()


def drop_gallery(raw: dict[str, Any], name: str) -> None:
    raw.get("galleries", {}).pop(name, None)


def replace_files(
    raw: dict[str, Any],
    table: Mapping[str, Mapping[str, Any]],
    *,
    drop: Iterable[str] = (),
    under: str | None = None,
) -> None:
    """Forget the files ``drop`` and every file under the folder ``under``, then list
    those of ``table`` (from :func:`describe_files`)."""
    files = raw["files"]
    gone = set(drop)
    if under is not None:
        gone.update(r for r in files if r.startswith(under.rstrip("/") + "/"))
    for rel in gone:
        files.pop(rel, None)
    files.update(table)


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
        galleries = {str(g): GalleryEntry.from_dict(e) for g, e in raw.get("galleries", {}).items()}
        default = raw.get("default_gallery")
        default_gallery = None if default is None else str(default)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelIntegrityError(path, f"manifest is malformed ({exc})") from exc
    for rel in files:
        # A manifest must never point outside its own folder.
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ModelIntegrityError(path, f"manifest names a file outside the model: {rel}")
    return Manifest(
        name=name, files=files, raw=raw, galleries=galleries, default_gallery=default_gallery
    )


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
