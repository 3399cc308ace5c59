"""The package face: every exported name resolves, and the README's Python snippet runs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import geoguess

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_exported_name_resolves() -> None:
    for name in geoguess.__all__:
        assert getattr(geoguess, name) is not None, name
    assert set(dir(geoguess)) >= set(geoguess.__all__)
    assert issubclass(geoguess.ModelIntegrityError, geoguess.SetupError)
    assert issubclass(geoguess.ImageError, geoguess.GeoguessError)


def _python_api_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_snippet_runs(tiny_home: Path, photos_dir: Path, tmp_path, monkeypatch):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for name, src in (("a.jpg", "gps_DSCN0010.jpg"), ("b.jpg", "es_Canon_40D.jpg")):
        shutil.copy(photos_dir / src, photos / name)
    shutil.copy(photos / "a.jpg", tmp_path / "photo.jpg")
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(photos / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    printed: list[tuple] = []
    scope = {
        "pil_image": Image.open(photos_dir / "gps_DSCN0010.jpg"),
        "print": lambda *a: printed.append(a),
    }
    exec(compile(_python_api_snippet(), "README.md", "exec"), scope)
    result, summary = scope["result"], scope["summary"]
    assert result.error is None and len(result.candidates) == 5
    assert result.to_dict()["predictions"][0]["lat"] == round(result.best.prediction.lat, 6)
    assert [r.error for r in scope["results"]] == [None, None]
    assert summary.located == 2 and summary.failed == 0
    assert scope["emb"].shape == (1, 512) and scope["loc"].shape == (1, 512)
    assert len(scope["preds"][0]) == 5
    # The method and the free function are one implementation.
    from geoguess.locate import locate

    again = locate(scope["geo"], "photo.jpg")
    assert again.to_dict() == result.to_dict()
