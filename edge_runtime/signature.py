"""Signed portfolios: an Ed25519 signature of ``manifest.json`` in ``manifest.json.sig``.

The signature covers the manifest's exact bytes; the manifest holds every variant's sha256 and
size, so a verified manifest vouches for every file. ``load_signed_manifest`` verifies the
signature over the bytes it then parses (no second read) and checks every listed file against
it; any problem refuses the whole portfolio with one line (``SignatureError``, a
``ManifestError``). The switcher verifies the very bytes it loads against the same sha256 again.

``manifest.json.sig`` (JSON)::

    {"algorithm": "Ed25519", "key_id": "<16 hex: sha256 of the raw public key>",
     "manifest_sha256": "<hex>", "signature": "<base64 of 64 bytes>", "signed": "<UTC time>"}

Public keys: a PEM file (``SubjectPublicKeyInfo``, what ``shifter-tf keygen`` writes as
``KEY.pub``), PEM bytes, the 32 raw bytes, or their base64. Verification uses the
``cryptography`` package, imported only when a key is given: a device that does not check
signatures does not need it. ``device_profile.json`` (timings measured on the device) is not
covered by the signature.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from edge_runtime.files import read_variant_file, sha256_bytes
from edge_runtime.manifest import (Manifest, ManifestError, PathLike, VariantFileError,
                                   manifest_path, parse_manifest, read_manifest_bytes)
from edge_runtime.schema import MANIFEST_NAME

SIGNATURE_NAME = MANIFEST_NAME + ".sig"
ALGORITHM = "Ed25519"


class SignatureError(ManifestError):
    """The portfolio is unsigned, signed by another key, altered after signing, or unverifiable."""


def crypto(purpose: str = "checking a portfolio's signature") -> Any:
    """`cryptography`'s serialization and ed25519 modules, imported only when a key is used;
    without the package, a SignatureError saying what `purpose` needs it."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise SignatureError(f"{purpose} needs the 'cryptography' package "
                             "(pip install cryptography)") from None
    return serialization, ed25519


def key_id(raw_public: bytes) -> str:
    """Short fingerprint of a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(raw_public).hexdigest()[:16]


def public_key_bytes(key: Any) -> bytes:
    """The raw 32 bytes of an Ed25519 public key given as a key object, file, PEM, raw or base64."""
    serialization, ed25519 = crypto()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    where = "the public key"
    data: Union[bytes, str] = key
    if isinstance(key, str) and "\n" not in key and not key.startswith("-----"):
        try:                                   # 32 bytes in base64, else a file name
            raw = base64.b64decode(key.strip(), validate=True)
            if len(raw) == 32:
                return raw
        except (ValueError, binascii.Error):
            pass
        key = Path(key)
    if isinstance(key, Path):
        where = str(key)
        try:
            data = Path(key).read_bytes()
        except OSError as e:
            raise SignatureError(f"{key}: cannot read public key: {e.strerror or e}") from None
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    if len(data) == 32 and not data.strip().startswith(b"-----"):
        return bytes(data)
    text = data.strip()
    try:
        if text.startswith(b"-----BEGIN"):
            obj = serialization.load_pem_public_key(text)
            if not isinstance(obj, ed25519.Ed25519PublicKey):
                raise SignatureError(f"{where}: not an Ed25519 public key "
                                     f"({type(obj).__name__})")
            return obj.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        raw = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error, TypeError) as e:
        if isinstance(e, SignatureError):
            raise
        raise SignatureError(f"{where}: not an Ed25519 public key (PEM, or 32 bytes in "
                             f"base64): {str(e).splitlines()[0][:120]}") from None
    if len(raw) != 32:
        raise SignatureError(f"{where}: not an Ed25519 public key ({len(raw)} bytes, "
                             "expected 32)")
    return raw


def signature_path(folder_or_manifest: PathLike) -> Path:
    return manifest_path(folder_or_manifest).parent / SIGNATURE_NAME


def signature_doc(manifest_bytes: bytes, signature: bytes, raw_public: bytes,
                  signed: str) -> Dict[str, Any]:
    """The content of ``manifest.json.sig`` (the host's signer writes it)."""
    return {"algorithm": ALGORITHM, "key_id": key_id(raw_public),
            "manifest_sha256": sha256_bytes(manifest_bytes),
            "signature": base64.b64encode(signature).decode("ascii"), "signed": signed}


def read_signature(folder_or_manifest: PathLike) -> Optional[Dict[str, Any]]:
    """The signature document, ``None`` if the portfolio is unsigned; not verified."""
    path = signature_path(folder_or_manifest)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise SignatureError(f"{path}: unreadable signature file: {e}") from None
    ok = (isinstance(doc, dict) and isinstance(doc.get("signature"), str)
          and isinstance(doc.get("key_id"), str))
    if not ok:
        raise SignatureError(f"{path}: not a signature file (expected an object with "
                             "'algorithm', 'key_id', 'signature')")
    return doc


def verify_manifest_bytes(path: PathLike, data: bytes, public_key: Any) -> str:
    """Check the signature of manifest bytes read from ``path``; returns the key id."""
    serialization, ed25519 = crypto()
    raw = public_key_bytes(public_key)
    want = key_id(raw)
    sig_path = signature_path(path)
    doc = read_signature(path)
    if doc is None:
        raise SignatureError(f"{Path(path).parent}: the portfolio is not signed (no "
                             f"{SIGNATURE_NAME}) and a public key is required")
    if doc.get("algorithm") != ALGORITHM:
        raise SignatureError(f"{sig_path}: unsupported algorithm {doc.get('algorithm')!r} "
                             f"(expected {ALGORITHM})")
    if doc["key_id"] != want:
        raise SignatureError(f"{sig_path}: signed with key {doc['key_id']}, not with the given "
                             f"public key {want}")
    try:
        sig = base64.b64decode(doc["signature"], validate=True)
        ed25519.Ed25519PublicKey.from_public_bytes(raw).verify(sig, data)
    except Exception:  # InvalidSignature, bad base64, wrong length
        if doc.get("manifest_sha256") not in (None, sha256_bytes(data)):
            raise SignatureError(f"{path}: changed after it was signed (the signature in "
                                 f"{SIGNATURE_NAME} does not match it)") from None
        raise SignatureError(f"{sig_path}: the signature does not verify with key "
                             f"{want}") from None
    return want


def load_signed_manifest(folder_or_file: PathLike, public_key: Any) -> Tuple[Manifest, str]:
    """Verify the signature, parse the signed bytes, and check every file against them.

    Returns the manifest and the signing key's id; ``SignatureError`` on any problem.
    """
    path, data = read_manifest_bytes(folder_or_file)
    kid = verify_manifest_bytes(path, data, public_key)
    manifest = parse_manifest(data, path)
    for v in manifest.variants:
        try:
            read_variant_file(path.parent, v)
        except VariantFileError as e:
            raise SignatureError(f"signed portfolio refused: {e}") from None
    return manifest, kid


def describe(folder_or_manifest: PathLike, public_key: Any = None) -> str:
    """One line for ``edge-switcher info``: unsigned, signed (not checked) or verified."""
    if public_key is not None:
        path, data = read_manifest_bytes(folder_or_manifest)
        return f"{ALGORITHM}, verified with key {verify_manifest_bytes(path, data, public_key)}"
    doc = read_signature(folder_or_manifest)
    if doc is None:
        return "unsigned"
    return (f"{doc.get('algorithm')}, key {doc['key_id']}, signed {doc.get('signed', '?')} "
            "(not checked: pass --public-key)")
