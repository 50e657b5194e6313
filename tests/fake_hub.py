"""A stand-in for the Hugging Face Hub on 127.0.0.1: the endpoints huggingface_hub's HfApi calls for
create_repo, list_repo_files and create_commit (validate-yaml, preupload, commit).

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
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self) -> None:  # noqa: N802
                path = urlsplit(self.path).path
                hub.requests.append(("GET", path, self.headers.get("Authorization")))
                parts = path.strip("/").split("/")
                # /api/datasets/ns/name/tree/main
                if len(parts) >= 6 and parts[0] == "api" and parts[4] == "tree":
                    repo = hub.repos.get("/".join(parts[1:4]))
                    if repo is None:
                        return self._reply(404, {"error": "Repository not found"})
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
                    return self._reply(404, {"error": "Repository not found"})
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
