"""Fetching the backbone from a hub: against a real HTTP server on 127.0.0.1 (hubserver.py).

huggingface_hub itself does the transfers; nothing here mocks HTTP or the hub client.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hubserver import DEFAULT_REPO, HubServer, fake_hub, use_hub

from geoguess.builder.hub import NEEDED_FILES, fetch_backbone, plan_backbone
from geoguess.errors import ExportError
from geoguess.reporting import LoggingReporter, Reporter

MiB = 1 << 20


@pytest.fixture(scope="session")
def repo_dir(tiny_backbone_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CLIP plus what real repos also carry and a build must not download."""
    folder = tmp_path_factory.mktemp("repo")
    shutil.copytree(tiny_backbone_dir, folder, dirs_exist_ok=True)
    for name in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack"):
        (folder / name).write_bytes(os.urandom(4096))
    (folder / "README.md").write_text("# tiny clip\n")
    (folder / "tokenizer.json").write_text("{}")
    return folder


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF_HOME, set after huggingface_hub was imported (geoguess reads it per call)."""
    home = tmp_path / "hf-home"
    use_hub(monkeypatch, "http://127.0.0.1:9", home)
    return home


@pytest.fixture
def serve(hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., HubServer]]:
    """serve(folder, **knobs): a fake hub for ``folder``, with HF_ENDPOINT pointing at it."""
    with contextlib.ExitStack() as stack:

        def start(folder: Path, **knobs: object) -> HubServer:
            hub = stack.enter_context(fake_hub(folder, **knobs))
            monkeypatch.setenv("HF_ENDPOINT", hub.url)
            return hub

        yield start


@pytest.fixture
def hub(serve: Callable[..., HubServer], repo_dir: Path) -> HubServer:
    return serve(repo_dir)


def snapshot(hf_home: Path, commit: str) -> Path:
    return hf_home / "hub" / "models--openai--clip-vit-large-patch14" / "snapshots" / commit


def one_line_error(call: Callable[[], object]) -> str:
    with pytest.raises(ExportError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and "local_files_only" not in message, message
    return message


def test_plan_resolves_the_commit_and_reads_sizes_and_hashes(hub: HubServer) -> None:
    plan = plan_backbone(DEFAULT_REPO)
    assert (plan.requested, plan.commit) == ("main", hub.commit)
    assert tuple(f.name for f in plan.files) == NEEDED_FILES
    for f in plan.files:
        served = hub.files[f.name]
        assert f.size == len(served.data)
        assert f.sha256 == (served.sha256 if served.lfs else None)
    assert not plan.cached and plan.download_bytes == sum(f.size or 0 for f in plan.files)
    assert not hub.gets("model.safetensors"), "planning must not download weights"

    fetch_backbone(DEFAULT_REPO)
    again = plan_backbone(DEFAULT_REPO)
    assert again.cached and again.download_bytes == 0


def test_fetch_downloads_only_the_needed_files_into_the_hf_cache(
    hub: HubServer, hf_home: Path, repo_dir: Path
) -> None:
    folder, prov = fetch_backbone(DEFAULT_REPO)
    assert folder == snapshot(hf_home, hub.commit)
    for name in NEEDED_FILES:
        assert (folder / name).read_bytes() == (repo_dir / name).read_bytes()
    assert prov["source"] == "hub" and prov["id"] == DEFAULT_REPO
    assert (prov["requested"], prov["revision"], prov["endpoint"]) == ("main", hub.commit, hub.url)
    assert prov["files"] == {
        n: {"size": len(hub.files[n].data), "sha256": hub.files[n].sha256} for n in NEEDED_FILES
    }
    assert {r.file for r in hub.requests if r.file} == set(NEEDED_FILES)
    # Offline runs resolve "main" through the ref written after the download.
    assert (folder.parents[1] / "refs" / "main").read_text() == hub.commit


def test_a_second_fetch_downloads_nothing(hub: HubServer) -> None:
    first = fetch_backbone(DEFAULT_REPO)
    seen = len(hub.requests)
    assert fetch_backbone(DEFAULT_REPO) == first
    # Only the revision is resolved again; files pinned to a cached commit need no request.
    assert [r.path for r in hub.requests[seen:]] == [f"/api/models/{DEFAULT_REPO}/revision/main"]


def test_a_dropped_connection_is_resumed_with_a_range_request(
    serve: Callable[..., HubServer], repo_dir: Path, tmp_path: Path
) -> None:
    # huggingface_hub writes in 10 MiB chunks, so only a cut past the first chunk can
    # resume: the weights here are 24 MiB, cut at 15 MiB.
    big = tmp_path / "big-repo"
    shutil.copytree(repo_dir, big)
    (big / "model.safetensors").write_bytes(os.urandom(24 * MiB))
    hub = serve(big, cut={"model.safetensors": [15 * MiB, 1]})

    folder, prov = fetch_backbone(DEFAULT_REPO)

    first, resumed = hub.gets("model.safetensors")
    assert first.range is None
    assert resumed.range is not None and resumed.range.startswith("bytes=")
    assert int(resumed.range[6:].rstrip("-")) >= 10 * MiB
    assert (folder / "model.safetensors").read_bytes() == (big / "model.safetensors").read_bytes()
    assert prov["files"]["model.safetensors"]["sha256"] == hub.files["model.safetensors"].sha256


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_bytes_corrupted_once_are_fetched_again(
    serve: Callable[..., HubServer], repo_dir: Path, name: str
) -> None:
    hub = serve(repo_dir, corrupt={name: 1})
    folder, _ = fetch_backbone(DEFAULT_REPO)
    assert (folder / name).read_bytes() == (repo_dir / name).read_bytes()
    assert len(hub.gets(name)) == 2


def test_bytes_corrupted_every_time_are_refused_and_not_kept(
    serve: Callable[..., HubServer], repo_dir: Path, hf_home: Path
) -> None:
    hub = serve(repo_dir, corrupt={"model.safetensors": 99})
    message = one_line_error(lambda: fetch_backbone(DEFAULT_REPO))
    assert "model.safetensors" in message and "corrupt on the server or in transit" in message
    assert len(hub.gets("model.safetensors")) == 2  # one retry, no more
    blobs = hf_home / "hub" / "models--openai--clip-vit-large-patch14" / "blobs"
    assert not (blobs / hub.files["model.safetensors"].sha256).exists()
    assert not (snapshot(hf_home, hub.commit) / "model.safetensors").exists()


def test_a_cached_copy_damaged_on_disk_is_fetched_again(hub: HubServer, repo_dir: Path) -> None:
    folder, _ = fetch_backbone(DEFAULT_REPO)
    weights = (folder / "model.safetensors").resolve()  # the blob behind the snapshot link
    weights.write_bytes(b"\0" * weights.stat().st_size)
    fetch_backbone(DEFAULT_REPO)
    assert (folder / "model.safetensors").read_bytes() == (
        repo_dir / "model.safetensors"
    ).read_bytes()
    assert len(hub.gets("model.safetensors")) == 2


@pytest.mark.parametrize("how", ["argument", "HF_HUB_OFFLINE"])
def test_offline_with_an_empty_cache_says_what_to_do(
    hub: HubServer, hf_home: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = one_line_error(lambda: fetch_backbone(DEFAULT_REPO, offline=how == "argument"))
    assert message.startswith(
        f"{DEFAULT_REPO} is not in the Hugging Face cache (HF_HOME={hf_home})"
    )
    assert "--backbone DIR" in message
    assert not [r for r in hub.requests if r.file or r.path.startswith("/api/models")]


def test_offline_with_a_warm_cache_needs_no_server(hub: HubServer) -> None:
    folder, prov = fetch_backbone(DEFAULT_REPO)
    hub.stop()
    plan = plan_backbone(DEFAULT_REPO, offline=True)
    assert plan.cached and plan.commit == hub.commit
    assert plan.files[-1].sha256 == hub.files["model.safetensors"].sha256
    offline_folder, offline_prov = fetch_backbone(DEFAULT_REPO, offline=True)
    assert offline_folder == folder and offline_prov["files"] == prov["files"]


def test_an_unreachable_hub_falls_back_to_a_complete_cache(hub: HubServer) -> None:
    folder, _ = fetch_backbone(DEFAULT_REPO)
    hub.stop()
    reporter = LoggingReporter()
    assert fetch_backbone(DEFAULT_REPO, reporter=reporter)[0] == folder
    assert any(m.startswith(f"cannot reach {hub.url}") for m in reporter.messages)


def test_a_missing_repo_is_one_line(hub: HubServer) -> None:
    message = one_line_error(lambda: fetch_backbone("nobody/nothing"))
    assert (
        message.startswith(f"nobody/nothing: no such model on {hub.url}") and "HF_TOKEN" in message
    )


def test_a_missing_revision_is_one_line(hub: HubServer) -> None:
    message = one_line_error(lambda: fetch_backbone(DEFAULT_REPO, "v9"))
    assert message == f"{DEFAULT_REPO}: no revision 'v9' on {hub.url}"


def test_a_gated_repo_asks_for_hf_token(
    serve: Callable[..., HubServer], repo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve(repo_dir, gated=True, token="hf_secret")
    message = one_line_error(lambda: fetch_backbone(DEFAULT_REPO))
    assert "gated" in message and "HF_TOKEN" in message
    monkeypatch.setenv("HF_TOKEN", "hf_secret")  # read at call time by huggingface_hub
    folder, _ = fetch_backbone(DEFAULT_REPO)
    assert (folder / "model.safetensors").is_file()


def test_an_unreachable_hub_is_one_line(hf_home: Path, repo_dir: Path, monkeypatch) -> None:
    with fake_hub(repo_dir) as hub:
        url = hub.url
    monkeypatch.setenv("HF_ENDPOINT", url)
    message = one_line_error(lambda: fetch_backbone(DEFAULT_REPO))
    assert message.startswith(f"cannot reach {url}")
    assert "--offline" in message and "--backbone DIR" in message


def test_a_repo_without_safetensors_is_refused(
    serve: Callable[..., HubServer], repo_dir: Path, tmp_path: Path
) -> None:
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    shutil.copy(repo_dir / "config.json", legacy)
    shutil.copy(repo_dir / "pytorch_model.bin", legacy)
    hub = serve(legacy)
    message = one_line_error(lambda: fetch_backbone(DEFAULT_REPO))
    assert "pytorch_model.bin" in message and "safetensors weights only" in message
    assert not hub.gets("pytorch_model.bin")


class _Recorder(Reporter):
    def __init__(self) -> None:
        self.tasks: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Callable]:
        done = self.tasks.setdefault(description, [total or 0, 0])
        yield lambda n=1: done.__setitem__(1, done[1] + n)


def test_download_progress_goes_to_the_reporter(hub: HubServer) -> None:
    reporter = _Recorder()
    fetch_backbone(DEFAULT_REPO, reporter=reporter)
    total, done = reporter.tasks["Downloading model.safetensors (MB)"]
    assert total == pytest.approx(len(hub.files["model.safetensors"].data) / 1e6) == done


def test_library_users_see_no_progress_bars(hub: HubServer, capfd: pytest.CaptureFixture) -> None:
    fetch_backbone(DEFAULT_REPO)
    captured = capfd.readouterr()
    assert "model.safetensors" not in captured.err + captured.out  # no tqdm bar
