"""A fake Hugging Face Hub on 127.0.0.1 that speaks what ``huggingface_hub`` 2.x sends for an upload.

Endpoints (dataset repos only): create repo, whoami, validate-yaml, preupload, the git-LFS batch
API with a basic-transfer PUT, commit (NDJSON: base64 ``file``, ``lfsFile``, ``deletedFile``,
``deletedFolder``), create branch, tree listing and repo info. Files are kept per repo and branch
so a test can read back exactly what a push left on the "Hub" and lay it out as a directory.

Like the real Hub, preupload answers ``lfs`` for Parquet (its default ``.gitattributes``) and
reports the oid of a file already at that path, and the LFS batch API asks for no upload of an
object it already stores: that is what lets a rerun skip finished work. The client must run with
Xet disabled (``huggingface_hub.constants.HF_HUB_DISABLE_XET``), since Xet talks to a separate
content-addressed store this fake does not implement.

Fault injection: ``drop("commit", nth=2)`` closes the connection without a response on the 2nd
commit request from then on, as a network failure mid-upload would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

LFS_SUFFIXES = (".parquet", ".arrow", ".png", ".jpg")
LFS_MIN_BYTES = 10 * 1024 * 1024


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class StoredFile:
    content: bytes
    lfs: bool

    def tree_entry(self, path: str) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "type": "file",
            "path": path,
            "size": len(self.content),
            "oid": git_blob_sha1(self.content),
        }
        if self.lfs:
            sha256 = hashlib.sha256(self.content).hexdigest()
            entry["lfs"] = {"oid": sha256, "size": len(self.content), "pointerSize": 134}
        return entry


@dataclass
class FakeRepo:
    private: bool
    branches: dict[str, dict[str, StoredFile]] = field(default_factory=lambda: {"main": {}})
    commits: list[dict[str, Any]] = field(default_factory=list)


class FakeHub:
    """Start with ``with FakeHub(token) as hub:``; ``hub.url`` is the endpoint for HF_ENDPOINT."""

    def __init__(self, token: str, user: str = "tester"):
        self.token, self.user = token, user
        self.repos: dict[str, FakeRepo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: Counter[str] = Counter()
        self._faults: dict[str, int] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- test-facing API ---------------------------------------------------------------------

    def drop(self, kind: str, nth: int = 1) -> None:
        """Close the connection without answering the ``nth`` next request of ``kind``
        (commit, preupload, lfs-batch, lfs-put, tree, create)."""
        self._faults[kind] = self.requests[kind] + nth

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return {p: f.content for p, f in self.repos[repo_id].branches[revision].items()}

    def write_tree(self, repo_id: str, out: Path, revision: str = "main") -> Path:
        """Lay the files of a branch out as a directory (a local clone, LFS resolved)."""
        for path, content in self.files(repo_id, revision).items():
            target = out / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        return out

    # -- server lifecycle --------------------------------------------------------------------

    def __enter__(self) -> FakeHub:
        app = web.Application(client_max_size=1 << 30, middlewares=[self._middleware])
        r = app.router
        r.add_get("/api/whoami-v2", self._whoami)
        r.add_post("/api/repos/create", self._create_repo)
        r.add_post("/api/validate-yaml", self._validate_yaml)
        r.add_post("/api/datasets/{ns}/{name}/preupload/{rev}", self._preupload)
        r.add_post("/api/datasets/{ns}/{name}/commit/{rev}", self._commit)
        r.add_post("/api/datasets/{ns}/{name}/branch/{branch}", self._create_branch)
        r.add_get("/api/datasets/{ns}/{name}/tree/{rev}", self._tree)
        r.add_get("/api/datasets/{ns}/{name}/tree/{rev}/{path:.*}", self._tree)
        r.add_get("/api/datasets/{ns}/{name}/revision/{rev}", self._repo_info)
        r.add_post("/datasets/{ns}/{name}.git/info/lfs/objects/batch", self._lfs_batch)
        r.add_put("/lfs-upload/{oid}", self._lfs_put)
        self._runner = web.AppRunner(app, access_log=None)
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            assert self._runner is not None
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *_: Any) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- handlers ----------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        kind = _kind(request)
        with self._lock:
            self.requests[kind] += 1
            fault = self._faults.get(kind) == self.requests[kind]
        if fault:
            await request.read()
            assert request.transport is not None
            request.transport.abort()  # no status line: the client sees a dropped connection
            return web.Response()
        # LFS uploads go to pre-signed URLs, like S3 on the real Hub: no Authorization header.
        authorized = request.headers.get("Authorization") == f"Bearer {self.token}"
        if not authorized and not request.path.startswith("/lfs-upload/"):
            return _error(401, "Invalid credentials in Authorization header")
        return await handler(request)

    def _repo(self, request: web.Request) -> tuple[str, FakeRepo] | web.Response:
        repo_id = f"{request.match_info['ns']}/{request.match_info['name']}"
        repo = self.repos.get(repo_id)
        if repo is None:
            return _error(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo_id, repo

    def _branch(self, request: web.Request, repo: FakeRepo) -> dict[str, StoredFile] | web.Response:
        rev = request.match_info.get("rev", "main")
        if rev not in repo.branches:
            return _error(404, f"Revision {rev} not found", "RevisionNotFound")
        return repo.branches[rev]

    async def _whoami(self, request: web.Request) -> web.Response:
        return web.json_response({"type": "user", "name": self.user, "orgs": []})

    async def _create_repo(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("type") != "dataset":
            return _error(400, "this fake hosts dataset repos only")
        repo_id = f"{body.get('organization') or self.user}/{body['name']}"
        if repo_id in self.repos:  # the real Hub names the existing repo in its 409
            return web.json_response(
                {
                    "error": "You already created this dataset repo",
                    "url": f"{self.url}/datasets/{repo_id}",
                },
                status=409,
            )
        self.repos[repo_id] = FakeRepo(private=body.get("visibility") == "private")
        return web.json_response({"url": f"{self.url}/datasets/{repo_id}", "name": repo_id})

    async def _validate_yaml(self, request: web.Request) -> web.Response:
        content = (await request.json())["content"]
        try:
            front = content.split("---\n")[1] if content.startswith("---\n") else ""
            yaml.safe_load(front)
        except yaml.YAMLError as err:
            return web.json_response({"errors": [{"message": str(err)}]}, status=400)
        return web.json_response({"errors": [], "warnings": []})

    async def _preupload(self, request: web.Request) -> web.Response:
        found = self._repo(request)
        if isinstance(found, web.Response):
            return found
        branch = self._branch(request, found[1])
        if isinstance(branch, web.Response):
            return branch
        answer = []
        for f in (await request.json())["files"]:
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] >= LFS_MIN_BYTES
            entry: dict[str, Any] = {
                "path": f["path"],
                "uploadMode": "lfs" if lfs else "regular",
                "shouldIgnore": False,
            }
            if (stored := branch.get(f["path"])) is not None:
                content = stored.content
                entry["oid"] = (
                    hashlib.sha256(content).hexdigest() if lfs else git_blob_sha1(content)
                )
            answer.append(entry)
        return web.json_response({"files": answer, "commitOid": "0" * 40})

    async def _lfs_batch(self, request: web.Request) -> web.Response:
        body = await request.json()
        objects = []
        for obj in body["objects"]:
            if obj["oid"] in self.lfs_objects:
                objects.append({"oid": obj["oid"], "size": obj["size"]})  # already stored
            else:
                href = f"{self.url}/lfs-upload/{obj['oid']}"
                objects.append(
                    {"oid": obj["oid"], "size": obj["size"], "actions": {"upload": {"href": href}}}
                )
        return web.json_response({"transfer": "basic", "objects": objects})

    async def _lfs_put(self, request: web.Request) -> web.Response:
        data = await request.read()
        oid = request.match_info["oid"]
        if hashlib.sha256(data).hexdigest() != oid:
            return _error(400, "content does not match its oid")
        self.lfs_objects[oid] = data
        return web.Response(status=200)

    async def _commit(self, request: web.Request) -> web.Response:
        found = self._repo(request)
        if isinstance(found, web.Response):
            return found
        repo_id, repo = found
        branch = self._branch(request, repo)
        if isinstance(branch, web.Response):
            return branch
        lines = [json.loads(line) for line in (await request.read()).splitlines() if line]
        staged = dict(branch)
        header: dict[str, Any] = {}
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                staged[value["path"]] = StoredFile(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                if value["oid"] not in self.lfs_objects:
                    return _error(
                        422, f"LFS object {value['oid']} of {value['path']} was never uploaded"
                    )
                staged[value["path"]] = StoredFile(self.lfs_objects[value["oid"]], lfs=True)
            elif key == "deletedFile":
                staged.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                staged = {p: f for p, f in staged.items() if not p.startswith(prefix)}
        branch.clear()
        branch.update(staged)  # all or nothing, like a git commit
        oid = hashlib.sha1(json.dumps([len(repo.commits), header]).encode()).hexdigest()
        repo.commits.append({"oid": oid, "header": header, "ops": [i["key"] for i in lines[1:]]})
        url = f"{self.url}/datasets/{repo_id}/commit/{oid}"
        return web.json_response({"commitUrl": url, "commitOid": oid, "pullRequestUrl": None})

    async def _create_branch(self, request: web.Request) -> web.Response:
        found = self._repo(request)
        if isinstance(found, web.Response):
            return found
        repo = found[1]
        name = request.match_info["branch"]
        if name in repo.branches:
            return _error(409, f"Reference refs/heads/{name} already exists")
        repo.branches[name] = dict(repo.branches["main"])
        return web.json_response({})

    async def _tree(self, request: web.Request) -> web.Response:
        found = self._repo(request)
        if isinstance(found, web.Response):
            return found
        branch = self._branch(request, found[1])
        if isinstance(branch, web.Response):
            return branch
        prefix = request.match_info.get("path", "").strip("/")
        recursive = request.query.get("recursive", "false").lower() == "true"
        entries: dict[str, dict[str, Any]] = {}
        for path, stored in sorted(branch.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1 :] if prefix else path
            parts = rest.split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                folder = "/".join(([prefix] if prefix else []) + parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(
                        folder, {"type": "directory", "path": folder, "oid": "0" * 40, "size": 0}
                    )
            if recursive or len(parts) == 1:
                entries[path] = stored.tree_entry(path)
        return web.json_response(list(entries.values()))

    async def _repo_info(self, request: web.Request) -> web.Response:
        found = self._repo(request)
        if isinstance(found, web.Response):
            return found
        repo_id, repo = found
        branch = self._branch(request, repo)
        if isinstance(branch, web.Response):
            return branch
        sha = repo.commits[-1]["oid"] if repo.commits else "0" * 40
        siblings = [{"rfilename": p} for p in sorted(branch)]
        return web.json_response(
            {"id": repo_id, "sha": sha, "private": repo.private, "siblings": siblings}
        )


def _kind(request: web.Request) -> str:
    path = request.path
    for marker, kind in (
        ("/preupload/", "preupload"),
        ("/commit/", "commit"),
        ("/lfs/objects/batch", "lfs-batch"),
        ("/lfs-upload/", "lfs-put"),
        ("/tree/", "tree"),
        ("/repos/create", "create"),
        ("/branch/", "branch"),
    ):
        if marker in path:
            return kind
    return "other"


def _error(status: int, message: str, code: str | None = None) -> web.Response:
    headers = {"X-Error-Code": code} if code else None
    return web.json_response({"error": message}, status=status, headers=headers)
