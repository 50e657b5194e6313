"""A stand-in for the Hugging Face Hub on 127.0.0.1: the endpoints huggingface_hub's HfApi calls for
create_repo, list_repo_files and create_commit (validate-yaml, preupload, commit), and those
hf_hub_download and snapshot_download read (repo info by revision, the tree, resolve by HEAD and GET).

Every file is answered as a "regular" (inline, base64) upload, so the commit carries the bytes
themselves and no LFS or Xet storage is needed. What was received is kept for the test to check.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import yaml

REPO_NOT_FOUND = {"error": "Repository not found"}
INITIAL_SHA = "0" * 40  # a repository's revision before its first commit


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}  # "datasets/ns/name" -> {"private", "files": {path: bytes}}
        self.commits: list[dict] = []  # {"repo", "summary", "added", "deleted"}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, authorization)
        self.validated: list[str] = []  # README contents sent to validate-yaml
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the test output clean
                pass

            def _reply(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                if (
                    body == REPO_NOT_FOUND
                ):  # as the Hub says it, so huggingface_hub raises RepositoryNotFoundError
                    self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send_file(self, with_body: bool) -> None:
                # /datasets/ns/name/resolve/<revision>/<path in repo>
                parts = urlsplit(self.path).path.strip("/").split("/")
                repo = hub.repos.get("/".join(parts[:3]))
                data = repo["files"].get("/".join(parts[5:])) if repo is not None else None
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound" if repo is not None else "RepoNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", repo.get("sha", INITIAL_SHA))
                self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if with_body:
                    self.wfile.write(data)

            def do_HEAD(self) -> None:  # noqa: N802
                hub.requests.append(("HEAD", urlsplit(self.path).path, self.headers.get("Authorization")))
                self._send_file(with_body=False)

            def do_GET(self) -> None:  # noqa: N802
                path = urlsplit(self.path).path
                hub.requests.append(("GET", path, self.headers.get("Authorization")))
                parts = path.strip("/").split("/")
                if len(parts) >= 6 and parts[0] == "datasets" and parts[3] == "resolve":
                    return self._send_file(with_body=True)
                # /api/datasets/ns/name/revision/<revision>: what snapshot_download asks first
                if len(parts) >= 6 and parts[0] == "api" and parts[4] == "revision":
                    key = "/".join(parts[1:4])
                    repo = hub.repos.get(key)
                    if repo is None:
                        return self._reply(404, REPO_NOT_FOUND)
                    siblings = [{"rfilename": name} for name in sorted(repo["files"])]
                    sha = repo.get("sha", INITIAL_SHA)
                    return self._reply(200, {"id": "/".join(parts[2:4]), "sha": sha, "siblings": siblings})
                # /api/datasets/ns/name/tree/main
                if len(parts) >= 6 and parts[0] == "api" and parts[4] == "tree":
                    repo = hub.repos.get("/".join(parts[1:4]))
                    if repo is None:
                        return self._reply(404, REPO_NOT_FOUND)
                    files = [
                        {"type": "file", "path": p, "oid": hashlib.sha1(d).hexdigest(), "size": len(d)}
                        for p, d in sorted(repo["files"].items())
                    ]
                    return self._reply(200, files)
                self._reply(404, {"error": f"fake hub: no GET {path}"})

            def do_POST(self) -> None:  # noqa: N802
                path = urlsplit(self.path).path
                hub.requests.append(("POST", path, self.headers.get("Authorization")))
                body = self._body()
                if path == "/api/repos/create":
                    payload = json.loads(body)
                    key = f"{payload.get('type', 'model')}s/{payload['organization']}/{payload['name']}"
                    host = f"http://{self.headers['Host']}"
                    if key in hub.repos:  # the Hub's 409 carries the url too; create_repo(exist_ok) reads it
                        return self._reply(
                            409, {"error": "You already created this repo", "url": f"{host}/{key}"}
                        )
                    hub.repos[key] = {
                        "private": payload.get("visibility") == "private" or bool(payload.get("private")),
                        "files": {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"},
                    }
                    return self._reply(200, {"url": f"{host}/{key}"})
                if path == "/api/validate-yaml":
                    content = json.loads(body)["content"]
                    hub.validated.append(content)
                    try:
                        yaml.safe_load(content.split("---")[1])
                    except (yaml.YAMLError, IndexError) as exc:
                        return self._reply(400, {"error": f"invalid metadata: {exc}"})
                    return self._reply(200, {})
                parts = path.strip("/").split("/")
                key = "/".join(parts[1:4]) if len(parts) >= 6 else ""
                if key not in hub.repos:
                    return self._reply(404, REPO_NOT_FOUND)
                if parts[4] == "preupload":
                    files = json.loads(body)["files"]
                    answer = [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                    ]
                    return self._reply(200, {"files": answer})
                if parts[4] == "commit":
                    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                    header = next(item["value"] for item in lines if item["key"] == "header")
                    added, deleted = {}, []
                    for item in lines:
                        if item["key"] == "file":
                            added[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                        elif item["key"] == "deletedFile":
                            deleted.append(item["value"]["path"])
                        elif item["key"] != "header":
                            return self._reply(400, {"error": f"fake hub: unsupported {item['key']}"})
                    files = hub.repos[key]["files"]
                    for name in deleted:
                        files.pop(name, None)
                    files.update(added)
                    oid = hashlib.sha1(json.dumps(sorted(files)).encode() + body).hexdigest()
                    hub.repos[key]["sha"] = oid
                    hub.commits.append(
                        {"repo": key, "summary": header["summary"], "added": added, "deleted": deleted}
                    )
                    host = f"http://{self.headers['Host']}"
                    return self._reply(200, {"commitUrl": f"{host}/{key}/commit/{oid}", "commitOid": oid})
                self._reply(404, {"error": f"fake hub: no POST {path}"})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
