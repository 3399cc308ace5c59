"""The manifest's gallery and tree entries: one typed reader and writer of their schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geoguess.errors import ModelIntegrityError, UsageError
from geoguess.manifest import (
    GalleryEntry,
    TreeEntry,
    load_manifest,
    manifest_text,
    replace_files,
    set_gallery,
)


def test_built_entries_read_and_write_back_unchanged(tiny_model_home: Path) -> None:
    # The file a build wrote is what the typed entries write again, key for key, so
    # model sets built before the entries were typed load and rewrite the same.
    folder = tiny_model_home / "models" / "tiny"
    raw = json.loads((folder / "manifest.json").read_text())
    manifest = load_manifest(folder)
    assert manifest.default_gallery == raw["default_gallery"]
    assert set(manifest.galleries) == set(raw["galleries"])
    for name, entry in manifest.galleries.items():
        assert entry.to_dict() == raw["galleries"][name]
        assert entry.default_tree in entry.trees
        assert entry.trees[entry.default_tree].dir.startswith(entry.folder + "/")
    assert manifest_text(manifest.raw) == (folder / "manifest.json").read_text()


def _gallery(**kw: object) -> GalleryEntry:
    fields = {"coords": "galleries/g/coords.npy", "embeddings": "galleries/g/embeddings.npy"}
    return GalleryEntry(**{**fields, "size": 3, "source": "test", **kw})  # type: ignore[arg-type]


def test_optional_fields_are_written_only_when_set() -> None:
    assert set(_gallery().to_dict()) == {"coords", "embeddings", "size", "source"}
    tree = TreeEntry("galleries/g/tree-2", (2,), "embedding", "mean", (2,), ("a", "b"))
    full = _gallery(areas="a.npz", names="n.npy", custom=True).with_tree("2", tree)
    assert full.to_dict()["trees"] == {
        "2": {
            "dir": "galleries/g/tree-2",
            "levels": [2],
            "features": "embedding",
            "node": "mean",
            "nodes_per_level": [2],
            "files": ["a", "b"],
        }
    }
    assert GalleryEntry.from_dict(full.to_dict()) == full


def test_a_new_tree_is_default_only_when_asked_or_when_there_was_none() -> None:
    tree = TreeEntry("d", (2,), "embedding", "mean", (2,), ())
    first = _gallery().with_tree("2", tree, make_default=False)
    assert first.default_tree == "2"  # the gallery had none
    second = first.with_tree("3", tree, make_default=False)
    assert second.default_tree == "2" and set(second.trees) == {"2", "3"}
    assert second.with_tree("3", tree).default_tree == "3"


def test_fields_of_a_later_version_survive_a_rewrite() -> None:
    raw = {**_gallery().to_dict(), "future": {"x": 1}}
    assert GalleryEntry.from_dict(raw).to_dict() == raw


def _write(folder: Path, galleries: dict, default: str | None = None) -> None:
    folder.mkdir(exist_ok=True)
    raw: dict = {"format_version": 1, "name": "m", "files": {}, "galleries": galleries}
    if default is not None:
        raw["default_gallery"] = default
    (folder / "manifest.json").write_text(manifest_text(raw))  # a valid checksum


def test_a_malformed_gallery_entry_blames_the_manifest(tmp_path: Path) -> None:
    entry = _gallery().to_dict()
    del entry["embeddings"]
    _write(tmp_path / "m", {"g": entry})
    with pytest.raises(ModelIntegrityError, match="malformed") as info:
        load_manifest(tmp_path / "m")
    assert info.value.path == tmp_path / "m" / "manifest.json"


def test_gallery_lookup_takes_the_default_then_the_first(tmp_path: Path) -> None:
    entries = {"a": _gallery().to_dict(), "b": _gallery(size=5).to_dict()}
    _write(tmp_path / "m", entries, default="b")
    manifest = load_manifest(tmp_path / "m")
    assert manifest.gallery(None, model_name="m")[0] == "b"
    assert manifest.gallery("a", model_name="m")[1].size == 3
    with pytest.raises(UsageError, match=r"no gallery 'c' \(it has: a, b\)"):
        manifest.gallery("c", model_name="m")
    _write(tmp_path / "n", entries)
    assert load_manifest(tmp_path / "n").gallery(None, model_name="n")[0] == "a"
    _write(tmp_path / "e", {})
    with pytest.raises(UsageError, match="it has: none"):
        load_manifest(tmp_path / "e").gallery(None, model_name="e")


def test_replace_files_drops_a_folder_but_not_its_namesakes() -> None:
    raw: dict = {"files": {"galleries/g/a": 1, "galleries/gg/a": 2, "x": 3}}
    replace_files(raw, {"galleries/g/b": 4}, under="galleries/g", drop=["x"])
    assert raw["files"] == {"galleries/gg/a": 2, "galleries/g/b": 4}
    set_gallery(raw, "g", _gallery())
    assert raw["galleries"]["g"]["size"] == 3
