"""Service account tokens, as kube-apiserver issues and checks them.

- :class:`TokenIssuer`: the service-account signing key (EC P-256, ``DATA_DIR/pki/sa.key``, 0600,
  made by :meth:`ClusterPKI.ensure`) signs bound tokens: ES256 JWTs with kube's claims (``iss``,
  ``sub`` = ``system:serviceaccount:NS:NAME``, ``aud``, ``exp``/``iat``/``nbf``, ``jti`` and the
  private ``kubernetes.io`` claim naming the namespace, the ServiceAccount and the bound pod
  (and its node) or secret). :meth:`TokenIssuer.verify` checks signature, issuer, time and audience.
- :func:`token_request`: ``POST …/serviceaccounts/NAME/token`` (an ``authentication.k8s.io/v1``
  TokenRequest; what ``kubectl create token`` and the node agent send).
- :func:`authenticate`: a bearer JWT → the user ``system:serviceaccount:NS:NAME`` in the groups
  ``system:serviceaccounts``, ``system:serviceaccounts:NS`` (and ``system:authenticated``), once the
  ServiceAccount (and the bound pod or secret) still exists with the uid the token names.
- :func:`admit_pod`: kube's ServiceAccount admission plugin (``spec.serviceAccountName`` defaulted
  to ``default``, which must exist; the ``kube-api-access-XXXXX`` projected volume mounted read-only
  at /var/run/secrets/kubernetes.io/serviceaccount in every container and init container, unless
  ``automountServiceAccountToken: false`` on the pod or its ServiceAccount).
- :func:`openid_configuration`, :func:`jwks`: the OIDC discovery documents (``/.well-known/
  openid-configuration``, ``/openid/v1/jwks``) for relying parties that check our tokens.

There is no RBAC: every authenticated identity, a service account's included, may do anything.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from tugboat.cluster.apiserver import meta
from tugboat.cluster.apiserver.meta import ApiError

if TYPE_CHECKING:
    from tugboat.cluster.apiserver.handlers import ObjectService

log = logging.getLogger(__name__)

ISSUER = "https://kubernetes.default.svc.cluster.local"  # kubeadm's and kind's --service-account-issuer
TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
VOLUME_PREFIX = "kube-api-access-"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
WARN_ONLY_EXPIRATION = 3607  # the admission's token: kube extends it to a year, warning after 3607 s
EXTENDED_EXPIRATION = 365 * 24 * 3600
MIN_EXPIRATION = 600
MAX_EXPIRATION = 1 << 32
DEFAULT_EXPIRATION = 3600
VERIFIED_CACHE = 4096  # signatures remembered (cleared when full)
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # kube's SimpleNameGenerator alphabet


class InvalidToken(Exception):
    """The token is not one we accept (the reason goes to the log, the client gets a plain 401)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def looks_like_jwt(token: str) -> bool:
    parts = token.split(".")
    return len(parts) == 3 and all(parts) and token.startswith("eyJ")


def service_account_username(ns: str, name: str) -> str:
    return f"system:serviceaccount:{ns}:{name}"


def service_account_groups(ns: str) -> list[str]:
    return ["system:serviceaccounts", f"system:serviceaccounts:{ns}"]


class TokenIssuer:
    """Signs and verifies service account tokens with one EC P-256 key."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, issuer: str = ISSUER,
                 audiences: list[str] | None = None) -> None:
        self.key = key
        self.public = key.public_key()
        self.issuer = issuer
        self.audiences = list(audiences or [issuer])  # kube's --api-audiences (default: the issuer)
        der = self.public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = _b64(hashlib.sha256(der).digest())  # kube's keyIDFromPublicKey
        # tokens whose signature held → their claims (time and audience are judged on every use):
        # an in-cluster client sends the same token with every request
        self._verified: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_pem(cls, pem: bytes, issuer: str = ISSUER, audiences: list[str] | None = None) -> TokenIssuer:
        key = serialization.load_pem_private_key(pem, None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("the service account signing key must be an EC P-256 key")
        return cls(key, issuer, audiences)

    @classmethod
    def from_file(cls, path: str, issuer: str = ISSUER, audiences: list[str] | None = None) -> TokenIssuer:
        with open(path, "rb") as f:
            return cls.from_pem(f.read(), issuer, audiences)

    # --- signing ---------------------------------------------------------------------------------
    def sign(self, claims: dict[str, Any]) -> str:
        header = {"alg": "ES256", "kid": self.kid}
        signing_input = (_b64(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()))
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def claims(self, *, namespace: str, sa_name: str, sa_uid: str, audiences: list[str], expiration: int,
               now: float | None = None, pod: tuple[str, str] | None = None, secret: tuple[str, str] | None = None,
               node: tuple[str, str] | None = None, warn_after: int | None = None) -> dict[str, Any]:
        """kube's token.Claims: the public claims and the private ``kubernetes.io`` one."""
        t = int(now if now is not None else time.time())
        priv: dict[str, Any] = {"namespace": namespace, "serviceaccount": {"name": sa_name, "uid": sa_uid}}
        if pod is not None:
            priv["pod"] = {"name": pod[0], "uid": pod[1]}
        if secret is not None:
            priv["secret"] = {"name": secret[0], "uid": secret[1]}
        if node is not None:
            priv["node"] = {"name": node[0], "uid": node[1]}
        if warn_after is not None:
            priv["warnafter"] = t + warn_after
        return {"iss": self.issuer, "sub": service_account_username(namespace, sa_name), "aud": audiences,
                "exp": t + expiration, "iat": t, "nbf": t, "jti": str(uuid.uuid4()), "kubernetes.io": priv}

    # --- verification ----------------------------------------------------------------------------
    def verify(self, token: str, *, audiences: list[str] | None = None, now: float | None = None,
               leeway: int = 60) -> dict[str, Any]:
        """The token's claims once its signature, issuer, time window and audience hold; else
        :class:`InvalidToken`. ``audiences``: acceptable audiences (default: the API server's)."""
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify_signature(token)
            if len(self._verified) >= VERIFIED_CACHE:
                self._verified.clear()
            self._verified[token] = claims
        return self._check_claims(claims, audiences, now, leeway)

    def _verify_signature(self, token: str) -> dict[str, Any]:
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidToken("not a JWT")
        try:
            header = json.loads(_unb64(parts[0]))
            claims = json.loads(_unb64(parts[1]))
            sig = _unb64(parts[2])
        except (ValueError, TypeError) as exc:
            raise InvalidToken(f"malformed JWT: {exc}") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise InvalidToken("malformed JWT")
        if header.get("alg") != "ES256":
            raise InvalidToken(f"unexpected signing algorithm {header.get('alg')!r}")
        if len(sig) != 64:
            raise InvalidToken("malformed signature")
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        try:
            self.public.verify(der, (parts[0] + "." + parts[1]).encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise InvalidToken("invalid signature") from None
        if claims.get("iss") != self.issuer:
            raise InvalidToken(f"issuer {claims.get('iss')!r} is not ours")
        return claims

    def _check_claims(self, claims: dict[str, Any], audiences: list[str] | None, now: float | None,
                      leeway: int) -> dict[str, Any]:
        t = now if now is not None else time.time()
        try:
            exp, nbf = float(claims["exp"]), float(claims.get("nbf", claims.get("iat", 0)))
        except (KeyError, TypeError, ValueError):
            raise InvalidToken("missing or malformed exp/nbf") from None
        if t > exp + leeway:
            raise InvalidToken("token has expired")
        if t < nbf - leeway:
            raise InvalidToken("token is not valid yet")
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else list(aud or [])
        want = audiences if audiences is not None else self.audiences
        if not set(auds) & set(want):
            raise InvalidToken(f"token audiences {auds} are invalid for the target audiences {want}")
        priv = claims.get("kubernetes.io")
        if not isinstance(priv, dict) or not isinstance(priv.get("serviceaccount"), dict):
            raise InvalidToken("not a service account token (no kubernetes.io claim)")
        return claims

    # --- discovery -------------------------------------------------------------------------------
    def jwk(self) -> dict[str, Any]:
        nums = self.public.public_numbers()
        return {"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
                "x": _b64(nums.x.to_bytes(32, "big")), "y": _b64(nums.y.to_bytes(32, "big"))}


def openid_configuration(issuer: TokenIssuer, external_url: str) -> dict[str, Any]:
    return {"issuer": issuer.issuer, "jwks_uri": external_url.rstrip("/") + "/openid/v1/jwks",
            "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"]}


def jwks(issuer: TokenIssuer) -> dict[str, Any]:
    return {"keys": [issuer.jwk()]}


# --- the TokenRequest subresource --------------------------------------------------------------------
@dataclass
class Identity:
    name: str
    groups: list[str]
    extra: dict[str, list[str]]
    uid: str = ""
    audiences: list[str] | None = None  # the token's audiences that were asked for


async def _get(objects: ObjectService, plural: str, ns: str | None, name: str) -> dict[str, Any] | None:
    rt = objects.registry.get("", "v1", plural)
    assert rt is not None
    kv = await objects.store.get(rt.key(ns, name))
    if kv is None:
        return None
    from tugboat.cluster.apiserver.handlers import load

    return load(kv)


async def token_request(objects: ObjectService, issuer: TokenIssuer, ns: str, name: str,
                        req: Any, *, dry_run: bool = False) -> dict[str, Any]:
    """The TokenRequest a ``POST …/serviceaccounts/NAME/token`` answers (kube's TokenREST.Create)."""
    if not isinstance(req, dict):
        raise ApiError(400, "the body of the request must be a TokenRequest object", "BadRequest")
    kind, av = req.get("kind"), req.get("apiVersion")
    if (kind and kind != "TokenRequest") or (av and av != "authentication.k8s.io/v1"):
        raise ApiError(400, f"the object provided is unrecognized (kind: {kind}, apiVersion: {av}): expected "
                       "authentication.k8s.io/v1 TokenRequest", "BadRequest")
    spec = req.get("spec") if isinstance(req.get("spec"), dict) else {}
    auds = spec.get("audiences") or list(issuer.audiences)
    exp = spec.get("expirationSeconds")
    exp = DEFAULT_EXPIRATION if exp is None else exp
    causes: list[tuple[str, str, str]] = []
    if not isinstance(auds, list) or not all(isinstance(a, str) and a for a in auds):
        causes.append(("FieldValueInvalid", "spec.audiences", f"Invalid value: {auds!r}: must be a list of strings"))
    if isinstance(exp, bool) or not isinstance(exp, int):
        causes.append(("FieldValueInvalid", "spec.expirationSeconds", f"Invalid value: {exp!r}: must be an integer"))
    elif exp < MIN_EXPIRATION:
        causes.append(("FieldValueInvalid", "spec.expirationSeconds",
                       f"Invalid value: {exp}: may not specify a duration less than 10 minutes"))
    elif exp > MAX_EXPIRATION:
        causes.append(("FieldValueInvalid", "spec.expirationSeconds",
                       f"Invalid value: {exp}: may not specify a duration larger than 2^32 seconds"))
    ref = spec.get("boundObjectRef") or None
    if ref is not None and not isinstance(ref, dict):
        causes.append(("FieldValueInvalid", "spec.boundObjectRef", "Invalid value: must be an object"))
        ref = None
    if ref is not None and ref.get("kind") not in ("Pod", "Secret", "Node"):
        causes.append(("FieldValueNotSupported", "spec.boundObjectRef.kind",
                       f'Unsupported value: "{ref.get("kind")}": supported values: "Pod", "Secret", "Node"'))
    if ref is not None and not ref.get("name"):
        causes.append(("FieldValueRequired", "spec.boundObjectRef.name", "Required value"))
    if causes:
        raise meta.invalid("TokenRequest", "authentication.k8s.io", name, causes)
    sa = await _get(objects, "serviceaccounts", ns, name)
    if sa is None:
        raise meta.not_found("serviceaccounts", "", name)
    pod = secret = node = None
    warn_after: int | None = None
    if ref is not None:
        kind, rname = ref["kind"], ref["name"]
        plural = {"Pod": "pods", "Secret": "secrets", "Node": "nodes"}[kind]
        obj = await _get(objects, plural, None if kind == "Node" else ns, rname)
        if obj is None:
            raise meta.not_found(plural, "", rname)
        uid = obj["metadata"].get("uid", "")
        if ref.get("uid") and ref["uid"] != uid:
            raise meta.conflict(plural, "", rname, f"the UID in the bound object reference ({ref['uid']}) does not "
                                "match the UID in record. The object might have been deleted and then recreated")
        if kind == "Pod":
            if ((obj.get("spec") or {}).get("serviceAccountName") or "default") != name:
                raise ApiError(400, f'cannot bind token for serviceaccount "{name}" to pod running with different '
                               "serviceaccount name.", "BadRequest")
            pod = (rname, uid)
            node_name = (obj.get("spec") or {}).get("nodeName")
            if node_name:
                n = await _get(objects, "nodes", None, node_name)
                if n is not None:
                    node = (node_name, n["metadata"].get("uid", ""))
            if exp == WARN_ONLY_EXPIRATION and set(auds) <= set(issuer.audiences):
                # kube's --service-account-extend-token-expiration (on by default): the admission's
                # token lives a year and asks to be refreshed after 3607 s
                warn_after = exp
        elif kind == "Secret":
            secret = (rname, uid)
        else:
            node = (rname, uid)
    exp_signed = exp if warn_after is None else EXTENDED_EXPIRATION
    now = time.time()
    claims = issuer.claims(namespace=ns, sa_name=name, sa_uid=sa["metadata"].get("uid", ""), audiences=auds,
                           expiration=exp_signed, now=now, pod=pod, secret=secret, node=node, warn_after=warn_after)
    token = "" if dry_run else issuer.sign(claims)
    out_spec: dict[str, Any] = {"audiences": auds, "expirationSeconds": exp, "boundObjectRef": ref}
    return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": meta.now_rfc3339()},
            "spec": out_spec,
            "status": {"token": token, "expirationTimestamp": _rfc3339(int(claims["iat"]) + exp)}}


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# --- authentication ---------------------------------------------------------------------------------
async def authenticate(objects: ObjectService, issuer: TokenIssuer, token: str,
                       now: float | None = None, audiences: list[str] | None = None) -> Identity:
    """A bound service account token → who it speaks for (kube's validator.Validate): the
    ServiceAccount, and the pod or secret it is bound to, must still exist with the uids it names
    (a pod whose deletion grace period has run out no longer counts). ``audiences``: acceptable
    audiences (default: the API server's)."""
    claims = issuer.verify(token, now=now, audiences=audiences)
    priv = claims["kubernetes.io"]
    ns = priv.get("namespace") or ""
    sa_ref = priv["serviceaccount"]
    sub = claims.get("sub", "")
    if not ns or sub != service_account_username(ns, sa_ref.get("name", "")):
        raise InvalidToken("sub does not match the kubernetes.io claim")
    sa = await _get(objects, "serviceaccounts", ns, sa_ref.get("name", ""))
    if sa is None:
        raise InvalidToken(f"service account {ns}/{sa_ref.get('name')} has been deleted")
    if sa["metadata"].get("uid") != sa_ref.get("uid"):
        raise InvalidToken(f"service account UID ({sa['metadata'].get('uid')}) does not match claim "
                           f"({sa_ref.get('uid')})")
    if sa["metadata"].get("deletionTimestamp"):
        raise InvalidToken(f"service account {ns}/{sa_ref.get('name')} is being deleted")
    extra: dict[str, list[str]] = {}
    t = now if now is not None else time.time()
    if isinstance(priv.get("pod"), dict):
        pref = priv["pod"]
        pod = await _get(objects, "pods", ns, pref.get("name", ""))
        if pod is None:
            raise InvalidToken(f"pod {ns}/{pref.get('name')} has been deleted")
        if pod["metadata"].get("uid") != pref.get("uid"):
            raise InvalidToken(f"pod UID ({pod['metadata'].get('uid')}) does not match claim ({pref.get('uid')})")
        dt = meta.parse_time(pod["metadata"].get("deletionTimestamp"))
        if dt is not None and dt < t:
            raise InvalidToken(f"bound pod {ns}/{pref.get('name')} has been deleted")
        extra["authentication.kubernetes.io/pod-name"] = [pref.get("name", "")]
        extra["authentication.kubernetes.io/pod-uid"] = [pref.get("uid", "")]
    if isinstance(priv.get("secret"), dict):
        sref = priv["secret"]
        sec = await _get(objects, "secrets", ns, sref.get("name", ""))
        if sec is None or sec["metadata"].get("uid") != sref.get("uid"):
            raise InvalidToken(f"secret {ns}/{sref.get('name')} has been deleted")
    if isinstance(priv.get("node"), dict):
        extra["authentication.kubernetes.io/node-name"] = [priv["node"].get("name", "")]
    if claims.get("jti"):
        extra["authentication.kubernetes.io/credential-id"] = [f"JTI={claims['jti']}"]
    want = audiences if audiences is not None else issuer.audiences
    aud = claims.get("aud")
    got = [a for a in ([aud] if isinstance(aud, str) else list(aud or [])) if a in want]
    return Identity(sub, service_account_groups(ns), extra, uid=sa_ref.get("uid", ""), audiences=got)


async def token_review(objects: ObjectService, issuer: TokenIssuer, static: dict[str, tuple[str, list[str]]],
                       req: Any) -> dict[str, Any]:
    """``POST /apis/authentication.k8s.io/v1/tokenreviews``: who a token speaks for (what webhook
    authenticators and Vault's kubernetes auth ask). Static tokens (tokens.csv) are reviewed too,
    for the API's own audiences only."""
    if not isinstance(req, dict) or not isinstance(req.get("spec"), dict) or not req["spec"].get("token"):
        raise meta.invalid("TokenReview", "authentication.k8s.io", "",
                           [("FieldValueRequired", "spec.token", "Required value")])
    spec = req["spec"]
    token = str(spec["token"])
    auds = spec.get("audiences") or None
    status: dict[str, Any] = {"user": {}}
    hit = static.get(token)
    if hit is not None and (auds is None or set(auds) & set(issuer.audiences)):
        status = {"authenticated": True, "user": {"username": hit[0], "groups": [*hit[1], "system:authenticated"]},
                  "audiences": list(auds or issuer.audiences)}
    elif looks_like_jwt(token):
        try:
            ident = await authenticate(objects, issuer, token, audiences=auds)
        except InvalidToken as exc:
            status["error"] = f"[invalid bearer token, {exc}]"
        else:
            status = {"authenticated": True, "audiences": ident.audiences,
                      "user": {"username": ident.name, "uid": ident.uid,
                               "groups": [*ident.groups, "system:authenticated"], "extra": ident.extra}}
    else:
        status["error"] = "[invalid bearer token]"
    out_spec = {"token": token, **({"audiences": auds} if auds else {})}
    return {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None}, "spec": out_spec, "status": status}


# --- admission --------------------------------------------------------------------------------------
def _volume_name() -> str:
    return VOLUME_PREFIX + "".join(random.choices(_NAME_CHARS, k=5))


def api_access_volume(name: str) -> dict[str, Any]:
    """The projected volume kube's ServiceAccount admission adds (TokenVolumeSource)."""
    return {"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": WARN_ONLY_EXPIRATION, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}


def mount_api_access(pod: dict[str, Any]) -> str | None:
    """Add the token volume and its mount to every container and init container that has nothing
    at the token path; returns the volume's name (None when no container needs it)."""
    spec = pod.setdefault("spec", {})
    vols = spec.get("volumes")
    if not isinstance(vols, list):
        vols = []
    existing = next((v["name"] for v in vols if isinstance(v, dict) and
                     str(v.get("name", "")).startswith(VOLUME_PREFIX)), None)
    vname = existing or _volume_name()
    needed = False
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            if not isinstance(c, dict):
                continue
            mounts = c.get("volumeMounts")
            if not isinstance(mounts, list):
                mounts = []
            if any(isinstance(m, dict) and m.get("mountPath") == TOKEN_MOUNT_PATH for m in mounts):
                continue
            c["volumeMounts"] = [*mounts, {"name": vname, "readOnly": True, "mountPath": TOKEN_MOUNT_PATH}]
            needed = True
    if needed and existing is None:
        spec["volumes"] = [*vols, api_access_volume(vname)]
    return vname if needed or existing else None


async def admit_pod(objects: ObjectService, pod: dict[str, Any]) -> None:
    """kube's ServiceAccount admission plugin, on pod creation."""
    md = pod.get("metadata") or {}
    if (md.get("annotations") or {}).get("kubernetes.io/config.mirror") is not None:
        return  # mirror pods may not reference service accounts
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return
    ns = md.get("namespace") or ""
    name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    if not isinstance(name, str):
        return  # validation reports it
    spec["serviceAccountName"] = name
    spec.setdefault("serviceAccount", name)
    sa = await _get(objects, "serviceaccounts", ns, name)
    if sa is None:
        await objects.check_namespace(ns)  # a missing namespace says so first (NamespaceLifecycle)
        if name == "default":
            # the service account controller makes it moments after the namespace; do it now
            rt = objects.registry.get("", "v1", "serviceaccounts")
            assert rt is not None
            with contextlib.suppress(ApiError):
                await objects.create(rt, ns, {"metadata": {"name": "default"}})
            sa = await _get(objects, "serviceaccounts", ns, name)
        if sa is None:
            pname = md.get("name") or md.get("generateName") or ""
            raise ApiError(403, f'pods "{pname}" is forbidden: error looking up service account {ns}/{name}: '
                           f'serviceaccount "{name}" not found', "Forbidden", {"name": pname, "kind": "pods"})
    auto = spec.get("automountServiceAccountToken")
    if auto is None:
        auto = sa.get("automountServiceAccountToken")
    if auto is False:
        return
    mount_api_access(pod)
