"""A local stand-in for HashiCorp Vault's KV v2 read API, for secret-manager tests.

``GET /v1/<mount>/data/<path>`` answers ``{"data": {"data": {...}, "metadata": {...}}}`` for a
known secret when ``X-Vault-Token`` matches (403 otherwise, 404 for an unknown path), as Vault
does. Requests are recorded so a test can check the token, namespace and how often it was asked.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


class VaultStandIn:
    """KV v2 in a thread: ``secrets`` maps ``<mount>/<path>`` -> the secret's key/value data."""

    def __init__(self, token: str, secrets: dict[str, dict[str, Any]]) -> None:
        self.token = token
        self.secrets = secrets
        self.requests: list[dict[str, Any]] = []
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        self.requests.append({"path": request.path, "token": request.headers.get("X-Vault-Token"),
                              "namespace": request.headers.get("X-Vault-Namespace")})
        response = self._answer(request)
        return response(environ, start_response)

    def _answer(self, request: Request) -> Response:
        if request.headers.get("X-Vault-Token") != self.token:
            return Response('{"errors":["permission denied"]}', 403, mimetype="application/json")
        parts = request.path.split("/")  # '', 'v1', mount, 'data', path...
        if len(parts) < 5 or parts[1] != "v1" or parts[3] != "data":
            return Response('{"errors":[]}', 404, mimetype="application/json")
        data = self.secrets.get(f"{parts[2]}/{'/'.join(parts[4:])}")
        if data is None:
            return Response('{"errors":[]}', 404, mimetype="application/json")
        body = {"request_id": "stand-in", "lease_id": "", "renewable": False, "lease_duration": 0,
                "data": {"data": data, "metadata": {"version": 1, "destroyed": False}},
                "wrap_info": None, "warnings": None, "auth": None, "mount_type": "kv"}
        return Response(json.dumps(body), 200, mimetype="application/json")

    def start(self) -> VaultStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> VaultStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
