"""Ed25519 keys and portfolio signatures on the host (``keygen``, ``export --private-key``).

    shifter-tf keygen keys/portfolio           # keys/portfolio (private, 0600) + keys/portfolio.pub
    shifter-tf export RUN --private-key keys/portfolio
    edge-switcher run PORTFOLIO --public-key portfolio.pub --input x.npy      # on the device

Keys are PEM files OpenSSL reads too: the private key as PKCS#8 (encrypted if
``SHIFTER_TF_KEY_PASSPHRASE`` is set when it is made, and then needed to use it), the public key
as SubjectPublicKeyInfo. The signature format is defined (and verified) by
``edge_runtime.signature``. Imports no TensorFlow.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Tuple, Union

from edge_runtime.manifest import read_manifest_bytes, utc_now
from edge_runtime.signature import (SignatureError, crypto, key_id, signature_doc,
                                    signature_path, verify_manifest_bytes)

PASSPHRASE_ENV = "SHIFTER_TF_KEY_PASSPHRASE"
PathLike = Union[str, "os.PathLike[str]"]


def _passphrase() -> Union[bytes, None]:
    p = os.environ.get(PASSPHRASE_ENV)
    return p.encode("utf-8") if p else None


def _write_new(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Create ``path`` with ``mode`` from the start (a private key is never world-readable)."""
    if path.exists():
        if not force:
            raise FileExistsError(f"{path} exists; pass --force to replace it")
        path.unlink()
    from shifter_tf.util.io import storage_errors
    with storage_errors(path.parent, path.name):
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            path.unlink(missing_ok=True)    # no half-written key
            raise


def generate_keypair(path: PathLike, force: bool = False) -> Tuple[Path, Path, str]:
    """Write a new private key to ``path`` (mode 0600) and its public key to ``path.pub``.

    Returns both paths and the key id the device reports.
    """
    serialization, ed25519 = crypto("signing")
    priv_path = Path(path)
    pub_path = priv_path.with_name(priv_path.name + ".pub")
    if not force:
        for p in (priv_path, pub_path):
            if p.exists():
                raise FileExistsError(f"{p} exists; pass --force to replace it")
    priv_path.parent.mkdir(parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    pw = _passphrase()
    enc = (serialization.BestAvailableEncryption(pw) if pw else serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    pub = key.public_key()
    pub_pem = pub.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    _write_new(priv_path, pem, 0o600, force)
    _write_new(pub_path, pub_pem, 0o644, force)
    return priv_path, pub_path, key_id(raw)


def load_private_key(path: PathLike) -> Any:
    """The Ed25519 private key in a PEM file; ``SignatureError`` naming the file otherwise."""
    serialization, ed25519 = crypto("signing")
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise SignatureError(f"{path}: cannot read private key: {e.strerror or e}") from None
    try:
        key = serialization.load_pem_private_key(data, password=_passphrase())
    except TypeError:
        raise SignatureError(f"{path}: the private key is encrypted: set {PASSPHRASE_ENV}"
                             if _passphrase() is None else
                             f"{path}: the private key is not encrypted: unset "
                             f"{PASSPHRASE_ENV}") from None
    except ValueError as e:
        why = str(e).splitlines()[0].split(". ")[0][:120]
        raise SignatureError(f"{path}: not a usable PEM private key ({why})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an Ed25519 private key ({type(key).__name__}); "
                             "make one with `shifter-tf keygen`")
    return key


def sign_portfolio(folder: PathLike, private_key: Any) -> Path:
    """Sign ``folder/manifest.json`` (key object or PEM path); writes ``manifest.json.sig``.

    Written atomically, then checked against the public key as a device would.
    """
    from shifter_tf.util.io import atomic_write_json

    serialization, _ = crypto("signing")
    key = private_key if hasattr(private_key, "sign") else load_private_key(private_key)
    path, data = read_manifest_bytes(folder)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    doc = signature_doc(data, key.sign(data), raw, utc_now())
    out = signature_path(path)
    atomic_write_json(out, doc)
    verify_manifest_bytes(path, data, raw)
    return out
