"""JWS signature checks with ``cryptography``, apart from ``oidc`` so that the library
(about 9 MiB once loaded) is imported only when an OIDC-authenticated Receiver first
verifies a token, not by every fluxd process."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from fluxd.controllers.notification.oidc import b64url, b64url_int

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | Ed25519PublicKey
_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}
_ES_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}


def public_key(jwk: Mapping[str, Any]) -> PublicKey:
    """A JWK's public key (RSA, EC P-256/384/521, OKP Ed25519); ``ValueError`` otherwise."""
    kty = jwk.get("kty")
    if kty == "RSA":
        return rsa.RSAPublicNumbers(b64url_int(jwk.get("e")),
                                    b64url_int(jwk.get("n"))).public_key()
    if kty == "EC":
        curve = _CURVES.get(str(jwk.get("crv")))
        if curve is None:
            raise ValueError(f"unsupported curve {jwk.get('crv')!r}")
        return ec.EllipticCurvePublicNumbers(b64url_int(jwk.get("x")), b64url_int(
            jwk.get("y")), curve()).public_key()
    if kty == "OKP" and jwk.get("crv") == "Ed25519":
        return Ed25519PublicKey.from_public_bytes(b64url(str(jwk.get("x"))))
    raise ValueError(f"unsupported key type {kty!r}")


def signature_valid(key: PublicKey, alg: str, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``key``'s JWS signature with ``alg`` over ``data``."""
    try:
        if alg.startswith(("RS", "PS")) and isinstance(key, rsa.RSAPublicKey):
            digest = _DIGESTS[alg[2:]]()
            pad: padding.AsymmetricPadding = padding.PKCS1v15() if alg[0] == "R" else \
                padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.AUTO)
            key.verify(signature, data, pad, digest)
            return True
        if alg in _ES_CURVES and isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name != _ES_CURVES[alg]:
                return False
            size = (key.curve.key_size + 7) // 8
            if len(signature) != 2 * size:
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(_DIGESTS[alg[2:]]()))
            return True
        if alg == "EdDSA" and isinstance(key, Ed25519PublicKey):
            key.verify(signature, data)
            return True
    except InvalidSignature:
        return False
    return False
