"""Fetching the CLIP backbone from the Hugging Face hub into the usual Hugging Face cache.

huggingface_hub does the transfer (cache layout and locks, HF_TOKEN, Xet, retries that
resume a dropped connection with Range requests); this module pins the revision to a commit
first, fetches only the files a build reads, checks every file against the hub's hashes and
turns hub errors into one-line :class:`ExportError` messages in command-line terms.

huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE once, when it is imported;
we read them on every call and pass them explicitly, so a long-lived process (or a test
with monkeypatch) gets what the environment says now.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import __version__
from ..environment import parse_flag
from ..errors import ExportError
from ..reporting import Reporter

NEEDED_FILES = ("config.json", "preprocessor_config.json", "model.safetensors")
_OPTIONAL = frozenset({"preprocessor_config.json"})  # without it CLIP's defaults apply
_DEFAULT_ENDPOINT = "https://huggingface.co"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_MB = 1e6
_FALLBACK = (
    "run `geoguess models build` with network, or pass --backbone DIR with a downloaded copy"
)


@dataclass(frozen=True)
class HubFile:
    name: str
    size: int | None
    sha256: str | None  # the hub's LFS sha256; None for small non-LFS files
    git_sha1: str | None = None  # git blob id: the only hash the hub has for non-LFS files
    cached: bool = False


@dataclass(frozen=True)
class HubPlan:
    repo_id: str
    requested: str
    commit: str
    files: tuple[HubFile, ...]
    cached: bool

    @property
    def download_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files if not f.cached)


class _HubUnreachable(ExportError):
    """The hub did not answer (network down, timeout, 5xx): the cache may still do."""


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder, from the environment as it is now."""
    env = os.environ
    path = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if not path:
        home = env.get("HF_HOME") or os.path.join(
            env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface"
        )
        path = os.path.join(home, "hub")
    return Path(os.path.expandvars(path)).expanduser()


def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or _DEFAULT_ENDPOINT).rstrip("/")


def _env_offline() -> bool:
    # huggingface_hub's own precedence: TRANSFORMERS_OFFLINE counts only when
    # HF_HUB_OFFLINE is unset or empty. Our yes-words are a superset of its own.
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return parse_flag(value, False)


def _cache_label() -> str:
    if os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return f"HF_HUB_CACHE={hub_cache_dir()}"
    return f"HF_HOME={hub_cache_dir().parent}"


def _storage(repo_id: str) -> Path:
    return hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"


def _named(repo_id: str, revision: str) -> str:
    return repo_id if revision == "main" else f"{repo_id}@{revision}"


def _not_cached(repo_id: str, requested: str) -> ExportError:
    where = _cache_label()
    return ExportError(
        f"{_named(repo_id, requested)} is not in the Hugging Face cache ({where}); {_FALLBACK}"
    )


def plan_backbone(repo_id: str, revision: str | None = None, *, offline: bool = False) -> HubPlan:
    """What fetching would take: commit, files, sizes, hashes. Downloads no weights.

    ``offline`` (or HF_HUB_OFFLINE=1) answers from the local cache alone.
    """
    requested = revision or "main"
    if offline or _env_offline():
        return _plan_from_cache(repo_id, requested)
    return _plan_from_hub(repo_id, requested, _endpoint())


def _plan_from_hub(repo_id: str, requested: str, endpoint: str) -> HubPlan:
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=endpoint).model_info(repo_id, revision=requested, files_metadata=True)
    except Exception as exc:  # hub errors come in many types; _hub_error sorts them
        raise _hub_error(exc, repo_id, requested, endpoint) from exc
    if not (info.sha and _COMMIT.fullmatch(info.sha)):
        raise ExportError(
            f"{endpoint} gave no commit for {_named(repo_id, requested)}; check HF_ENDPOINT"
        )
    siblings = {s.rfilename: s for s in info.siblings or []}
    if "model.safetensors" not in siblings:
        others = sorted(
            n for n in siblings if n.endswith((".bin", ".pt", ".pth", ".h5", ".msgpack"))
        )
        found = f" (it has {', '.join(others)})" if others else ""
        raise ExportError(
            f"{_named(repo_id, requested)} has no model.safetensors{found}; "
            "geoguess reads safetensors weights only"
        )
    snapshot = _storage(repo_id) / "snapshots" / info.sha
    files = []
    for name in NEEDED_FILES:
        s = siblings.get(name)
        if s is None:
            if name in _OPTIONAL:
                continue
            raise ExportError(
                f"{_named(repo_id, requested)} has no {name}; not a transformers checkpoint"
            )
        files.append(
            HubFile(
                name=name,
                size=s.lfs.size if s.lfs else s.size,
                sha256=s.lfs.sha256 if s.lfs else None,
                git_sha1=None if s.lfs else s.blob_id,
                cached=(snapshot / name).is_file(),
            )
        )
    return HubPlan(repo_id, requested, info.sha, tuple(files), all(f.cached for f in files))


def _plan_from_cache(repo_id: str, requested: str) -> HubPlan:
    storage = _storage(repo_id)
    commit: str | None = requested
    if not _COMMIT.fullmatch(requested):
        ref = storage / "refs" / requested
        commit = ref.read_text().strip() if ref.is_file() else None
    missing = _not_cached(repo_id, requested)
    if not commit:
        raise missing
    files = []
    for name in NEEDED_FILES:
        path = storage / "snapshots" / commit / name
        if not path.is_file():
            if name in _OPTIONAL:
                continue
            raise missing
        # Cache blobs are named after the hub's ETag: the sha256 for LFS files, the git
        # blob id for the others. That is what a cached copy is checked against offline.
        blob = Path(os.path.realpath(path)).name
        files.append(
            HubFile(
                name=name,
                size=path.stat().st_size,
                sha256=blob if re.fullmatch(r"[0-9a-f]{64}", blob) else None,
                git_sha1=blob if _COMMIT.fullmatch(blob) else None,
                cached=True,
            )
        )
    return HubPlan(repo_id, requested, commit, tuple(files), True)


def fetch_backbone(
    repo_id: str,
    revision: str | None = None,
    *,
    commit: str | None = None,
    offline: bool = False,
    reporter: Reporter | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Download (or find in the cache) the files a build needs, check them, and say where.

    ``commit``, when given, is what ``revision`` resolved to when the user agreed to the
    download: fetched even if the branch has moved since, and recorded as the branch's ref
    so that a later offline build finds it.
    Returns the snapshot folder for the resolved commit and the provenance to record.
    When the hub cannot be reached, a complete cached copy of the revision is used.
    """
    reporter = reporter or Reporter()
    endpoint = _endpoint()
    offline = offline or _env_offline()
    requested = revision or "main"
    try:
        plan = plan_backbone(repo_id, commit or requested, offline=offline)
        plan = replace(plan, requested=requested)
    except _HubUnreachable as exc:
        try:
            plan = _plan_from_cache(repo_id, requested)
        except ExportError:
            raise exc from exc.__cause__
        reporter.message(
            f"{exc.args[0].split(';')[0]}; using the cached copy at {plan.commit[:12]}"
        )
        offline = True
    if plan.download_bytes:
        reporter.message(
            f"Downloading {_named(repo_id, plan.requested)} ({plan.download_bytes / _MB:,.0f} MB, "
            f"commit {plan.commit[:12]}) from {endpoint} into {hub_cache_dir()}"
        )
    record: dict[str, dict[str, Any]] = {}
    for f in plan.files:
        path = _download(plan, f, endpoint, offline, reporter)
        digest = _verified(path, f, reporter)
        if digest is None and not offline:
            # A blob is named after the sha256 it should have, so a bad copy must go
            # before anything else trusts it; then one fresh download.
            _evict(path)
            path = _download(plan, f, endpoint, offline, reporter, force=True)
            digest = _verified(path, f, reporter)
        if digest is None:
            _evict(path)
            raise ExportError(
                f"{repo_id}: the cached {f.name} (commit {plan.commit[:12]}) is corrupt and was "
                "removed; run `geoguess models build` with network to fetch it again"
                if offline
                else f"{repo_id}: {f.name} (commit {plan.commit[:12]}) is corrupt on the server or "
                "in transit: two downloads did not match the hub's hash; try again later"
            )
        record[f.name] = {"size": path.stat().st_size, "sha256": digest}
    if not offline:
        _remember_ref(repo_id, plan)
    provenance = {
        "source": "hub",
        "id": repo_id,
        "requested": plan.requested,
        "revision": plan.commit,
        "endpoint": endpoint,
        "files": record,
    }
    return _storage(repo_id) / "snapshots" / plan.commit, provenance


def _download(
    plan: HubPlan, f: HubFile, endpoint: str, offline: bool, reporter: Reporter, force: bool = False
) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(
            hf_hub_download(
                plan.repo_id,
                f.name,
                revision=plan.commit,  # pinned: every file comes from the same commit
                cache_dir=hub_cache_dir(),
                endpoint=endpoint,
                local_files_only=offline,
                force_download=force,
                library_name="geoguess",
                library_version=__version__,
                tqdm_class=_progress_class(reporter, f"Downloading {f.name} (MB)"),  # type: ignore[arg-type]
            )
        )
    except Exception as exc:  # hub errors come in many types; _hub_error sorts them
        raise _hub_error(exc, plan.repo_id, plan.requested, endpoint, f.name) from exc


def _verified(path: Path, f: HubFile, reporter: Reporter) -> str | None:
    """The file's sha256 when it matches what the hub advertised, else None."""
    size = path.stat().st_size
    if f.size is not None and size != f.size:
        return None
    sha256 = hashlib.sha256()
    git = hashlib.sha1(b"blob %d\0" % size) if f.git_sha1 else None
    # Hashing 1.7 GB takes seconds: worth a bar; a config file is not.
    task = reporter.task(f"Checking {f.name} (MB)", size / _MB) if size > 64 * _MB else None
    with task or contextlib.nullcontext(lambda n: None) as advance, open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            sha256.update(block)
            if git:
                git.update(block)
            advance(len(block) / _MB)
    if f.sha256 and sha256.hexdigest() != f.sha256:
        return None
    if git and f.git_sha1 and git.hexdigest() != f.git_sha1:
        return None
    return sha256.hexdigest()


def _evict(path: Path) -> None:
    blob = Path(os.path.realpath(path))
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def _remember_ref(repo_id: str, plan: HubPlan) -> None:
    """Record requested -> commit, so offline runs resolve "main" to what was fetched.

    huggingface_hub writes refs only for the revision it was given, and we give it the
    commit. Written after the download, so a failed one leaves the previous ref in place.
    """
    if plan.requested == plan.commit:
        return
    ref = _storage(repo_id) / "refs" / plan.requested
    try:
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(plan.commit)
    except OSError:
        pass  # a read-only cache still works; offline runs then need the commit


def _progress_class(reporter: Reporter, description: str) -> type:
    """A stand-in for tqdm that huggingface_hub drives and that forwards to ``reporter``.

    huggingface_hub builds it with tqdm keywords (total, initial, desc, ...), uses it as a
    context manager and calls update() with byte counts, on both its HTTP and Xet paths.
    """

    class _Bar:
        def __init__(
            self, *args: Any, total: float | None = None, initial: float = 0, **kw: Any
        ) -> None:
            self.total, self.n = total, 0.0
            self._task: Any = reporter.task(description, total / _MB if total else None)
            self._advance = self._task.__enter__()
            if initial:
                self.update(initial)

        def update(self, n: float | None = 1) -> None:
            self.n += n or 0
            self._advance((n or 0) / _MB)

        def update_transfer(self, n: float | None = 1) -> None:
            pass  # its presence makes the Xet path draw one bar, not two

        def set_postfix_str(self, *args: Any, **kw: Any) -> None:
            pass

        set_transfer_postfix_str = set_postfix_str

        def close(self, *exc: Any) -> None:
            task, self._task = self._task, None
            if task is not None:
                task.__exit__(*(exc or (None, None, None)))

        def __enter__(self) -> _Bar:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.close(*exc)

    return _Bar


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _is_transport(exc: BaseException) -> bool:
    # httpx2/httpx (huggingface_hub 2.x/1.x) and requests (0.x) errors, matched by name so
    # this module imports none of them.
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"TransportError", "ConnectionError", "Timeout", "TimeoutError"})


def _hub_error(
    exc: BaseException, repo_id: str, requested: str, endpoint: str, filename: str | None = None
) -> ExportError:
    """One line, in command-line terms, for whatever huggingface_hub or the network raised."""
    from huggingface_hub import errors

    named = _named(repo_id, requested)
    unreachable = (
        f"cannot reach {endpoint} ({{}}); check the network and HF_ENDPOINT, or use --offline "
        "with a cached copy, or pass --backbone DIR with a downloaded copy"
    )
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return _not_cached(repo_id, requested)
    if isinstance(exc, errors.GatedRepoError):
        return ExportError(
            f"{repo_id} is gated on {endpoint}: accept its terms on the model page, then set "
            "HF_TOKEN to a token of that account"
        )
    if isinstance(exc, errors.RepositoryNotFoundError):
        return ExportError(
            f"{repo_id}: no such model on {endpoint} (if it is private, set HF_TOKEN to a token "
            "with access)"
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return ExportError(f"{repo_id}: no revision {requested!r} on {endpoint}")
    if isinstance(exc, errors.RemoteEntryNotFoundError):
        return ExportError(f"{named}: {filename or 'a file'} is missing on {endpoint}")
    if isinstance(exc, errors.HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in (401, 403):
            return ExportError(
                f"{endpoint} refused access to {repo_id} (HTTP {status}); set HF_TOKEN to a token "
                "that can read it"
            )
        if status >= 500 or status in (408, 429):
            return _HubUnreachable(unreachable.format(f"HTTP {status}"))
        return ExportError(f"{named}: {endpoint} answered HTTP {status}")
    if isinstance(exc, errors.FileMetadataError):
        return ExportError(
            f"{endpoint} does not answer like a Hugging Face hub for {filename}; check HF_ENDPOINT"
        )
    if isinstance(exc, errors.LocalEntryNotFoundError):
        # Raised "from" the network error that made huggingface_hub look in the cache.
        cause = exc.__cause__ or exc.__context__
        if cause is not None:
            return _hub_error(cause, repo_id, requested, endpoint, filename)
        return _not_cached(repo_id, requested)
    if isinstance(exc, errors.HFValidationError):
        return ExportError(f"{repo_id!r} is not a valid Hugging Face model id")
    if _is_transport(exc):
        return _HubUnreachable(unreachable.format(_first_line(exc)))
    if isinstance(exc, OSError) and "Consistency check failed" in str(exc):
        return ExportError(
            f"{named}: the download of {filename} was cut short; run the command again"
        )
    return ExportError(f"{named}: cannot fetch {filename or 'the file list'}: {_first_line(exc)}")
