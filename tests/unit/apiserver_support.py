"""Shared by the API server tests: an authenticated HTTP session to a real API server."""

from __future__ import annotations

import requests

from tugboat.cluster.apiserver.testing import ApiServerProcess


class Http:
    """Requests to a running API server as the admin (client certificate, cluster CA)."""

    def __init__(self, api: ApiServerProcess) -> None:
        self.api = api
        self.s = requests.Session()
        self.s.verify = api.ca
        self.s.cert = (str(api.dir / "pki" / "admin.crt"), str(api.dir / "pki" / "admin.key"))

    def __call__(self, method: str, path: str, **kw: object) -> requests.Response:
        return self.s.request(method, self.api.url + path, timeout=30, verify=self.api.ca, **kw)  # type: ignore[arg-type]
