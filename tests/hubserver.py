"""A real HTTP server on 127.0.0.1 posing as the Hugging Face hub, for tests.

It serves the files of a local folder as one model repo at a fixed commit, through the
endpoints huggingface_hub 2.x calls for ``model_info`` and ``hf_hub_download``:

- ``GET /api/models/{repo}[/revision/{rev}]``: repo info, with file sizes, git blob ids and
  LFS sha256s when ``?blobs=True``.
- ``HEAD|GET /{repo}/resolve/{rev}/{file}``: small files are answered directly (``ETag`` is
  the git blob id); LFS files get a 302 to the "CDN" with ``X-Linked-Etag`` (sha256) and
  ``X-Linked-Size``, like the real hub. Every answer carries ``X-Repo-Commit``; errors carry
  the hub's ``X-Error-Code`` (RepoNotFound, GatedRepo, RevisionNotFound, EntryNotFound).
- ``HEAD|GET /lfs/{sha256}`` on a second port (a different origin, so huggingface_hub treats
  it as a CDN and drops the token): the LFS bytes, with Range requests answered by 206.

No ``X-Xet-Hash`` header is ever sent, so huggingface_hub takes its plain HTTP path even
with hf_xet installed. HTTP/1.0 (one request per connection) keeps a stopped server truly
unreachable: no pooled keep-alive connection outlives it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

import pytest

DEFAULT_REPO = "openai/clip-vit-large-patch14"
# What the real repos keep in git LFS (their .gitattributes); the rest is plain git.
LFS_SUFFIXES = (".safetensors", ".bin", ".h5", ".msgpack", ".onnx", ".pt", ".pth", ".ckpt")

_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_CDN = re.compile(r"^/lfs/(?P<sha>[0-9a-f]{64})$")


class Request(NamedTuple):
    server: str  # "hub" or "cdn"
    method: str
    path: str  # without the query string
    range: str | None
    file: str | None  # the repo file the request is about, if any


@dataclass
class RepoFile:
    name: str
    data: bytes
    lfs: bool
    sha256: str
    oid: str  # git blob id: of the content, or of the LFS pointer file

    @classmethod
    def of(cls, name: str, data: bytes) -> RepoFile:
        sha256 = hashlib.sha256(data).hexdigest()
        lfs = name.endswith(LFS_SUFFIXES)
        pointer = (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n"
        )
        blob = pointer.encode() if lfs else data
        oid = hashlib.sha1(b"blob %d\0" % len(blob) + blob).hexdigest()
        return cls(name, data, lfs, sha256, oid)


@dataclass
class HubServer:
    """One repo at one commit. Knobs may be changed while the server runs."""

    folder: Path
    repo_id: str = DEFAULT_REPO
    #: file name -> [bytes to send before dropping the connection, how many times]
    cut: dict[str, list[int]] = field(default_factory=dict)
    #: file name -> how many GETs serve altered bytes (the advertised sha256 stays right)
    corrupt: dict[str, int] = field(default_factory=dict)
    #: answer 401 GatedRepo unless the request carries "Bearer {token}"
    gated: bool = False
    token: str | None = None
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        paths = sorted(p for p in self.folder.rglob("*") if p.is_file())
        self.files = {
            p.relative_to(self.folder).as_posix(): RepoFile.of(
                p.relative_to(self.folder).as_posix(), p.read_bytes()
            )
            for p in paths
        }
        self.by_sha = {f.sha256: f for f in self.files.values() if f.lfs}
        # A stable fake commit: the same folder always gives the same hash.
        self.commit = hashlib.sha1(
            b"".join(f.oid.encode() for f in self.files.values())
        ).hexdigest()
        self.branches = {"main": self.commit}
        self._servers: list[ThreadingHTTPServer] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def gets(self, name: str) -> list[Request]:
        """The GETs that carried (part of) a file's bytes."""
        return [
            r
            for r in self.requests
            if r.method == "GET"
            and r.file == name
            and (r.server == "cdn" or not self.files[name].lfs)
        ]

    def start(self) -> HubServer:
        for role in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            server.daemon_threads = True
            server.hub = self  # type: ignore[attr-defined]
            server.role = role  # type: ignore[attr-defined]
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()


@contextlib.contextmanager
def fake_hub(folder: Path, **knobs: object) -> Iterator[HubServer]:
    """``with fake_hub(folder) as hub:`` serves ``folder`` as ``hub.repo_id`` at ``hub.url``."""
    hub = HubServer(folder, **knobs).start()  # type: ignore[arg-type]
    try:
        yield hub
    finally:
        hub.stop()


def use_hub(monkeypatch: pytest.MonkeyPatch, url: str, hf_home: Path) -> None:
    """Point huggingface_hub (read at call time by geoguess) at ``url`` and an empty cache."""
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    for name in (
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeHub/1.0"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._route(body=False)

    def do_GET(self) -> None:
        self._route(body=True)

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    def _route(self, body: bool) -> None:
        role = self.server.role  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        api, resolve, cdn = _API.match(path), _RESOLVE.match(path), _CDN.match(path)
        lfs = self.hub.by_sha.get(cdn["sha"]) if cdn else None
        name = unquote(resolve["file"]) if resolve else (lfs.name if lfs else None)
        self.hub.requests.append(Request(role, self.command, path, self.headers["Range"], name))
        if role == "cdn":
            return self._send_bytes(lfs, body) if lfs else self._error(404, "EntryNotFound")
        match = api or resolve
        if not match:
            return self._error(404, None, "Not Found")
        if match["repo"] != self.hub.repo_id:
            return self._error(404, "RepoNotFound", "Repository not found")
        if self.hub.gated and self.headers["Authorization"] != f"Bearer {self.hub.token}":
            msg = f"Access to model {self.hub.repo_id} is restricted. Please log in."
            return self._error(401, "GatedRepo", msg)
        rev = unquote(match["rev"] or "main")
        if rev != self.hub.commit and rev not in self.hub.branches:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        if api:
            return self._model_info()
        repo_file = self.hub.files.get(name or "")
        if repo_file is None:
            return self._error(404, "EntryNotFound", f"{name} does not exist")
        if not repo_file.lfs:
            return self._send_bytes(repo_file, body)
        self.send_response(302)
        self.send_header("Location", f"{self.hub.cdn_url}/lfs/{repo_file.sha256}?sig=fake")
        self.send_header("ETag", f'"{repo_file.oid}"')
        self.send_header("X-Linked-Etag", f'"{repo_file.sha256}"')
        self.send_header("X-Linked-Size", str(len(repo_file.data)))
        self.send_header("X-Repo-Commit", self.hub.commit)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _model_info(self) -> None:
        blobs = "blobs=true" in urlsplit(self.path).query.lower()
        siblings = []
        for f in self.hub.files.values():
            entry: dict[str, object] = {"rfilename": f.name}
            if blobs:
                entry.update(size=len(f.data), blobId=f.oid)
                if f.lfs:
                    entry["lfs"] = {"sha256": f.sha256, "size": len(f.data), "pointerSize": 134}
            siblings.append(entry)
        info = {
            "_id": "0" * 24,
            "id": self.hub.repo_id,
            "modelId": self.hub.repo_id,
            "sha": self.hub.commit,
            "private": False,
            "gated": "auto" if self.hub.gated else False,
            "disabled": False,
            "tags": [],
            "siblings": siblings,
        }
        data = json.dumps(info).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_bytes(self, f: RepoFile, body: bool) -> None:
        data = f.data
        if body and self.hub.corrupt.get(f.name, 0) > 0:
            self.hub.corrupt[f.name] -= 1
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
        start, end, status = 0, len(data) - 1, 200
        if m := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers["Range"] or ""):
            start, end, status = int(m[1]), int(m[2] or end), 206
            if start >= len(data):
                return self._error(416, None, "Range Not Satisfiable")
        chunk = data[start : end + 1]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("ETag", f'"{f.sha256 if f.lfs else f.oid}"')
        if self.server.role == "hub":  # type: ignore[attr-defined]
            self.send_header("X-Repo-Commit", self.hub.commit)
        self.end_headers()
        if not body:
            return
        cut = self.hub.cut.get(f.name)
        if cut and cut[1] > 0:
            # Drop the connection mid-body: the client sees fewer bytes than Content-Length.
            cut[1] -= 1
            self.wfile.write(chunk[: cut[0]])
            self.close_connection = True
            return
        self.wfile.write(chunk)

    def _error(self, status: int, code: str | None, message: str = "") -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
        if self.server.role == "hub" and code == "EntryNotFound":  # type: ignore[attr-defined]
            self.send_header("X-Repo-Commit", self.hub.commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
