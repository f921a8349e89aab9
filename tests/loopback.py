"""Loopback servers for the download tests: a Hugging Face Hub that answers what huggingface_hub asks, a CDN
it redirects to (another port, so another host to huggingface_hub), and plain HTTP files.

What huggingface_hub sends for one file (read from huggingface_hub 2.4.0's file_download.py):
  HEAD {HF_ENDPOINT}/{repo}/resolve/{revision}/{path}, following redirects only on the same host, then reading
    X-Repo-Commit (required), X-Linked-Etag or ETag (the blob name; an LFS file's sha256), X-Linked-Size or
    Content-Length, and Location (where to GET); errors are told apart by X-Error-Code;
  GET that location, with `Range: bytes=N-` to resume after a cut connection.
With `Served.cas` set (a `local://FOLDER` Xet store, hf_xet's own local CAS), an LFS file's HEAD also carries
X-Xet-Hash and X-Xet-Refresh-Route, as the Hub sends for a Xet-stored file; huggingface_hub then asks that route
for the CAS address and token (X-Xet-Cas-Url ...), downloads the bytes with hf_xet from the store, and files
them in its cache's shared blob store (blobs/<2 hex>/<Xet hash>) behind the repo's blobs/<sha256> link.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import re
import socket
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field


CHUNK = 1 << 16


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Hit:
    role: str  # 'hub' or 'cdn'
    method: str
    path: str
    range: str | None
    auth: str | None


@dataclass
class Served:
    """What the servers serve and what they were asked."""

    hub_files: dict = field(default_factory=dict)  # (repo, path) -> bytes
    plain: dict = field(default_factory=dict)  # name -> bytes, at /files/<name> (and /moved/<name> redirects there)
    moved: dict = field(default_factory=dict)  # old repo -> new repo: the Hub answers 307
    lies: dict = field(default_factory=dict)  # sha256 -> other bytes the CDN sends instead
    cut: dict = field(default_factory=dict)  # sha256 or name -> bytes sent before the connection drops (once)
    chunk_delay: float = 0.0  # seconds between CHUNK-sized writes, to make a download last
    hits: list = field(default_factory=list)
    cdn: str = ""
    cas: str = ""  # 'local://FOLDER': serve LFS files through Xet, uploaded there by hf_xet
    xet_hashes: dict = field(default_factory=dict)  # sha256 -> Xet hash of the bytes uploaded to `cas`
    hashed: dict = field(default_factory=dict)  # id(bytes) -> (the bytes, git blob sha1, sha256): hashed once

    def digests(self, data: bytes) -> tuple[str, str]:
        """(git blob sha1, sha256) of a served file, computed once: a file of hundreds of MB is not hashed again
        on every request (on a busy machine that outlasts huggingface_hub's 10 s request timeout)."""
        if id(data) not in self.hashed:
            git = hashlib.sha1(b"blob %d\0" % len(data))
            git.update(data)
            self.hashed[id(data)] = (data, git.hexdigest(), sha256(data))
        return self.hashed[id(data)][1:]

    def clear(self) -> None:
        """Serve nothing from the Hub any more (and let go of the files)."""
        self.hub_files.clear()
        self.hashed.clear()

    def blob(self, sha: str) -> bytes | None:
        return next((d for d in self.hub_files.values() if self.digests(d)[1] == sha), None)

    def repos(self) -> set:
        return {repo for repo, _ in self.hub_files}

    def xet_hash(self, data: bytes) -> str:
        """Upload `data` to the Xet store (once) with hf_xet, as the Hub stores a file: its Xet hash."""
        import hf_xet

        sha = self.digests(data)[1]
        if sha not in self.xet_hashes:
            with hf_xet.XetSession().new_upload_commit(endpoint=self.cas) as commit:
                upload = commit.start_upload_bytes(data)
            self.xet_hashes[sha] = upload.result().xet_info.hash
        return self.xet_hashes[sha]


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def _answer(self, body: bool):
        served: Served = self.server.served
        served.hits.append(Hit(self.server.role, self.command, self.path, self.headers.get("Range"),
                               self.headers.get("Authorization")))
        (self._hub if self.server.role == "hub" else self._cdn)(served, body)

    def _head(self, status: int, headers: dict, length: int = 0):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _hub(self, served: Served, body: bool):
        if "/xet-read-token/" in self.path:  # where huggingface_hub asks for the Xet store's address and token
            return self._head(200, {"X-Xet-Cas-Url": served.cas, "X-Xet-Access-Token": "xet-token",
                                    "X-Xet-Token-Expiration": str(int(time.time()) + 3600)})
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", urllib.parse.unquote(self.path))
        repo, rev, path = m.groups()
        if repo in served.moved:
            return self._head(307, {"Location": f"/{served.moved[repo]}/resolve/{rev}/{path}"})
        if repo not in served.repos():
            return self._head(404, {"X-Error-Code": "RepoNotFound"})
        commit = hashlib.sha1(repo.encode()).hexdigest()
        data = served.hub_files.get((repo, path))
        if data is None:
            return self._head(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
        git, sha = served.digests(data)
        if path.endswith(".json"):  # small files live in git: the Hub serves them itself, etag = git sha1
            self._head(200, {"ETag": f'"{git}"', "X-Repo-Commit": commit}, len(data))
            if body:
                self.wfile.write(data)
            return None
        headers = {"Location": f"{served.cdn}/blobs/{sha}", "X-Repo-Commit": commit,
                   "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)), "ETag": f'"{git}"'}
        if served.cas:
            headers["X-Xet-Hash"] = served.xet_hash(data)
            headers["X-Xet-Refresh-Route"] = f"http://{self.headers['Host']}/api/models/{repo}/xet-read-token/{rev}"
        return self._head(302, headers)

    def _cdn(self, served: Served, body: bool):
        kind, _, name = self.path.lstrip("/").partition("/")
        if kind == "moved":
            return self._head(302, {"Location": f"/files/{name}"})
        data = (served.lies.get(name) or served.blob(name)) if kind == "blobs" else served.plain.get(name)
        if data is None:
            return self._head(404, {})
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"} if start else {}
        self._head(206 if start else 200, headers, len(data) - start)
        if body:
            self._send_body(served, name, data[start:])
        return None

    def _send_body(self, served: Served, name: str, data: bytes):
        cut = served.cut.pop(name, None)
        end = len(data) if cut is None else min(cut, len(data))
        for i in range(0, end, CHUNK):
            self.wfile.write(data[i:min(i + CHUNK, end)])
            time.sleep(served.chunk_delay)
        if cut is not None:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)


class Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that hangs up mid-body (as a download that refuses what it is sent does) is no error here."""
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


def start(role: str, served: Served) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = Server(("127.0.0.1", 0), Handler)
    server.role, server.served, server.daemon_threads = role, served, True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once, like a dead host."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(mp):
    """The loopback Hub (HF_ENDPOINT, set with the MonkeyPatch `mp`) and its CDN/plain host; no token, not
    offline.  Yields the Served."""
    served = Served()
    hub, hub_url = start("hub", served)
    cdn, served.cdn = start("cdn", served)
    mp.setenv("HF_ENDPOINT", hub_url)
    for var in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        mp.delenv(var, raising=False)
    mp.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    try:
        yield served
    finally:
        hub.shutdown()
        cdn.shutdown()


def isolate_user_hub_cache(mp, folder) -> None:
    """The user's own huggingface_hub cache (which clipguide reads) an empty folder under `folder`, never the real
    ~/.cache/huggingface of the machine running the tests."""
    from huggingface_hub import constants

    mp.setenv("HF_HUB_CACHE", str(folder / "user-hf-hub"))
    mp.setattr(constants, "HF_HUB_CACHE", str(folder / "user-hf-hub"))
