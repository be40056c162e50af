"""``csrsigning`` (with its approver): node serving certificates for the node agents' endpoints.

A CertificateSigningRequest with signer ``kubernetes.io/kubelet-serving`` is checked
(:func:`tugboat.cluster.node.tls.check_serving_request`: CN ``system:node:<name>``, O
``system:nodes``, server usages, DNS/IP SANs only); an acceptable one is approved (condition
``Approved``, reason ``AutoApproved``) and signed with the cluster CA
(``--cluster-signing-cert-file``/``--cluster-signing-key-file``, as kube-controller-manager's flags)
in the same status write; an unacceptable one gets ``Denied`` with the reason; finished requests are
deleted an hour after their creation (kube's csrcleaner). Requests for other signers are left
alone. Without the signing files the controller does nothing.

Auto-approval is safe here only because the API server does no authorization (every
authenticated client is trusted with everything); kube leaves serving certificates to an external
approver.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from typing import Any

from tugboat.cluster.client.rest import ApiError, ConflictError, NotFoundError
from tugboat.cluster.client.util import now as now_rfc3339
from tugboat.cluster.client.util import parse_time
from tugboat.cluster.controllers.base import Controller
from tugboat.cluster.node.tls import CSRS, SIGNER, check_serving_request, sign_serving_request

log = logging.getLogger(__name__)


def _has(csr: dict[str, Any], ctype: str) -> bool:
    return any(c.get("type") == ctype and c.get("status", "True") == "True"
               for c in (csr.get("status") or {}).get("conditions") or [])


class CSRSigningController(Controller):
    name = "csrsigning"
    component = "certificatesigningrequest-signing-controller"
    workers = 1

    def setup(self) -> None:
        o = self.ctx.options
        self.ca_pem: bytes | None = None
        self.ca_key_pem: bytes | None = None
        if o.cluster_signing_cert_file and o.cluster_signing_key_file:
            with open(o.cluster_signing_cert_file, "rb") as f:
                self.ca_pem = f.read()
            with open(o.cluster_signing_key_file, "rb") as f:
                self.ca_key_pem = f.read()
        self.csrs: Any = None
        if self.ca_pem is not None:
            self.csrs = self.ctx.informer(CSRS)
            self.csrs.add_handler(*self.handlers(self.enqueue))

    async def sync(self, key: str) -> None:
        csr = self.csrs.get(key) if self.csrs is not None else None
        if csr is None or self.ca_pem is None or self.ca_key_pem is None:
            return
        spec, st = csr.get("spec") or {}, csr.get("status") or {}
        if spec.get("signerName") != SIGNER:
            return
        if st.get("certificate") or _has(csr, "Denied") or _has(csr, "Failed"):
            # kube's csrcleaner: finished requests go away an hour after they were created
            left = parse_time(csr["metadata"].get("creationTimestamp")) + self.ctx.options.csr_keep_seconds - time.time()
            if left > 0:
                self.enqueue_after(key, left + 1)
                return
            with contextlib.suppress(NotFoundError):
                await self.client.delete(CSRS, csr["metadata"]["name"])
            return
        now = now_rfc3339()
        try:
            request = base64.b64decode(spec.get("request") or "")
        except ValueError:
            request = b""
        why = check_serving_request(request, list(spec.get("usages") or []))
        status = dict(st)
        conds = list(st.get("conditions") or [])
        if why is not None:
            conds.append({"type": "Denied", "status": "True", "reason": "NotNodeServingRequest", "message": why,
                          "lastUpdateTime": now, "lastTransitionTime": now})
        else:
            if not _has(csr, "Approved"):
                conds.append({"type": "Approved", "status": "True", "reason": "AutoApproved",
                              "message": "Auto approving node serving certificate",
                              "lastUpdateTime": now, "lastTransitionTime": now})
            seconds = int(spec.get("expirationSeconds") or 365 * 86400)
            ca_pem, ca_key_pem = self.ca_pem, self.ca_key_pem
            chain = await asyncio.get_running_loop().run_in_executor(
                None, lambda: sign_serving_request(request, ca_pem, ca_key_pem, seconds=max(600, seconds)))
            status["certificate"] = base64.b64encode(chain).decode()
        status["conditions"] = conds
        try:
            await self.client.update_status(CSRS, {**csr, "status": status})
        except NotFoundError:
            return
        except ConflictError:
            self.queue.add(key)
            return
        except ApiError as e:
            log.warning("csrsigning %s: %s", key, e)
            raise
        cn = "denied" if why else "signed"
        log.info("certificate signing request %s %s", key, cn)
