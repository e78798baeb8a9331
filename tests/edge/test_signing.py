"""Signed portfolios (Ed25519): keygen and signing on the host, refusal on the device.

Runs in the TensorFlow-free environment: ``shifter_tf.export.signing`` and the ``keygen``/``sign``
commands import no TensorFlow.
"""
import base64
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, TIME_SCALE
from edge_runtime.cli import main as edge_main
from edge_runtime.manifest import sha256_bytes, write_manifest
from edge_runtime.signature import SignatureError, public_key_bytes

pytest.importorskip("cryptography")
from shifter_tf.export.signing import generate_keypair, load_private_key, sign_portfolio  # noqa: E402


@pytest.fixture
def keys(tmp_path):
    priv, pub, kid = generate_keypair(tmp_path / "keys" / "portfolio")
    return priv, pub, kid


@pytest.fixture
def signed(tmp_portfolio, keys):
    sign_portfolio(tmp_portfolio, keys[0])
    return tmp_portfolio


def _one_line_error(capsys, rc):
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-switcher: error: "), err
    return err[0]


def test_keygen_writes_a_private_key_only_the_owner_reads(keys, tmp_path):
    priv, pub, kid = keys
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert priv.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub.name == "portfolio.pub" and pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY")
    assert len(kid) == 16
    with pytest.raises(FileExistsError, match="exists; pass --force"):
        generate_keypair(priv)
    _, _, kid2 = generate_keypair(priv, force=True)
    assert kid2 != kid


def test_host_cli_keygen_sign_and_export_option(tmp_portfolio, tmp_path, capsys):
    from shifter_tf.cli import build_parser

    p = build_parser()
    key = tmp_path / "k"
    args = p.parse_args(["keygen", str(key)])
    assert args.fn(args) == 0 and "key id" in capsys.readouterr().out
    args = p.parse_args(["sign", str(tmp_portfolio), "--private-key", str(key)])
    assert args.fn(args) == 0
    assert (tmp_portfolio / "manifest.json.sig").exists()
    assert p.parse_args(["export", "RUN", "--private-key", str(key)]).private_key == str(key)
    assert edge_main(["info", str(tmp_portfolio), "--public-key", f"{key}.pub"]) == 0
    assert "signature  Ed25519, verified with key" in capsys.readouterr().out


def test_a_signed_portfolio_serves_under_its_key(signed, keys, make_switcher, ref_inputs,
                                                 tmp_path, capsys):
    _, pub, kid = keys
    sw = make_switcher(signed, public_key=pub)
    assert sw.stats()["signature"] == f"verified (key {kid})"
    assert sw.predict(ref_inputs[0]).shape == (10,)
    sig = json.loads((signed / "manifest.json.sig").read_text())
    assert sig["algorithm"] == "Ed25519" and sig["key_id"] == kid
    # the key as raw bytes and as base64 text works as well as the PEM file
    raw = public_key_bytes(pub)
    assert len(raw) == 32
    make_switcher(signed, public_key=raw)
    make_switcher(signed, public_key=base64.b64encode(raw).decode())
    slashes = b"\xff" * 32                      # base64 "////...": text, not a file name
    assert public_key_bytes(base64.b64encode(slashes).decode()) == slashes
    x = tmp_path / "x.npy"
    np.save(x, ref_inputs[0])
    assert edge_main(["run", str(signed), "--input", str(x), "--public-key", str(pub)]) == 0
    assert edge_main(["info", str(signed)]) == 0
    assert f"signature  Ed25519, key {kid}, signed " in capsys.readouterr().out


def test_a_replaced_file_with_an_updated_hash_but_no_new_signature_is_refused(
        signed, keys, make_switcher, tmp_path, ref_inputs, capsys):
    victim = signed / "variants" / "L00-dense-fp32.tflite"
    victim.write_bytes((signed / "variants" / "L04-pruned-fp32.tflite").read_bytes())
    doc = json.loads((signed / "manifest.json").read_text())
    doc["variants"][0].update(sha256=sha256_bytes(victim.read_bytes()),
                              bytes=victim.stat().st_size)
    write_manifest(signed, doc)
    want = (f"{signed}/manifest.json: changed after it was signed (the signature in "
            "manifest.json.sig does not match it)")
    with pytest.raises(SignatureError) as e:
        make_switcher(signed, public_key=keys[1])
    assert str(e.value) == want
    x = tmp_path / "x.npy"
    np.save(x, ref_inputs[0])
    rc = edge_main(["run", str(signed), "--input", str(x), "--public-key", str(keys[1])])
    assert _one_line_error(capsys, rc) == f"edge-switcher: error: {want}"


def test_a_file_that_differs_from_the_signed_manifest_is_refused(signed, keys, make_switcher,
                                                                tmp_path, capsys):
    p = signed / "variants" / "L04-pruned-int8.tflite"
    data = bytearray(p.read_bytes())
    data[100] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match=r"^signed portfolio refused: variant "
                                             r"'L04-pruned-int8': .* does not match its sha256"):
        make_switcher(signed, public_key=keys[1])
    make_switcher(signed)          # without a key: as before, only that variant is disabled
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((28, 28, 1), np.float32))
    rc = edge_main(["run", str(signed), "--input", str(x), "--public-key", str(keys[1])])
    assert "signed portfolio refused: variant 'L04-pruned-int8'" in _one_line_error(capsys, rc)


def test_a_wrong_key_is_refused(signed, tmp_path, make_switcher, capsys):
    _, other, other_id = generate_keypair(tmp_path / "other")
    with pytest.raises(SignatureError, match=rf"manifest\.json\.sig: signed with key [0-9a-f]{{16}}"
                                             rf", not with the given public key {other_id}$"):
        make_switcher(signed, public_key=other)
    rc = edge_main(["info", str(signed), "--public-key", str(other)])
    assert "not with the given public key" in _one_line_error(capsys, rc)


def test_a_forged_signature_does_not_verify(signed, keys, make_switcher):
    sig = json.loads((signed / "manifest.json.sig").read_text())
    forged = bytearray(base64.b64decode(sig["signature"]))
    forged[0] ^= 1
    sig["signature"] = base64.b64encode(bytes(forged)).decode()
    (signed / "manifest.json.sig").write_text(json.dumps(sig))
    with pytest.raises(SignatureError, match=r"the signature does not verify with key"):
        make_switcher(signed, public_key=keys[1])


def test_an_unsigned_portfolio_under_a_required_key_is_refused(tmp_portfolio, keys,
                                                               make_switcher, tmp_path,
                                                               ref_inputs, capsys):
    want = (f"{tmp_portfolio}: the portfolio is not signed (no manifest.json.sig) and a public "
            "key is required")
    with pytest.raises(SignatureError) as e:
        make_switcher(tmp_portfolio, public_key=keys[1])
    assert str(e.value) == want
    x = tmp_path / "x.npy"
    np.save(x, ref_inputs[0])
    rc = edge_main(["run", str(tmp_portfolio), "--input", str(x), "--public-key", str(keys[1])])
    assert _one_line_error(capsys, rc) == f"edge-switcher: error: {want}"
    assert edge_main(["info", str(tmp_portfolio)]) == 0
    assert "signature  unsigned" in capsys.readouterr().out


def test_a_bad_public_key_is_one_line(tmp_portfolio, tmp_path, capsys):
    bad = tmp_path / "bad.pub"
    bad.write_text("hello")
    rc = edge_main(["info", str(tmp_portfolio), "--public-key", str(bad)])
    assert f"{bad}: not an Ed25519 public key" in _one_line_error(capsys, rc)


def test_an_encrypted_private_key_needs_its_passphrase(tmp_path, monkeypatch, tmp_portfolio):
    monkeypatch.setenv("SHIFTER_TF_KEY_PASSPHRASE", "s3cret")
    priv, pub, _ = generate_keypair(tmp_path / "enc")
    assert b"ENCRYPTED" in priv.read_bytes()
    sign_portfolio(tmp_portfolio, priv)
    monkeypatch.delenv("SHIFTER_TF_KEY_PASSPHRASE")
    with pytest.raises(SignatureError, match="is encrypted: set SHIFTER_TF_KEY_PASSPHRASE"):
        load_private_key(priv)


NO_CRYPTO = """
import sys
sys.modules["cryptography"] = None          # as if the package were not installed
import numpy as np
from edge_runtime.cli import main
from edge_runtime.switcher import EdgeSwitcher
sw = EdgeSwitcher.from_portfolio(sys.argv[1], num_threads=1, use_profile=False)
assert sw.predict(np.zeros((28, 28, 1), np.float32)).shape == (10,)
assert main(["info", sys.argv[1]]) == 0
sys.exit(main(["info", sys.argv[1], "--public-key", sys.argv[2]]))
"""


def test_the_device_runs_without_cryptography_when_no_key_is_configured(signed, keys):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", NO_CRYPTO, str(signed), str(keys[1])],
                         capture_output=True, text=True, timeout=120 * TIME_SCALE, env=env)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "signature  Ed25519, key" in res.stdout
    assert res.stderr.strip().splitlines()[-1:] == [
        "edge-switcher: error: checking a portfolio's signature needs the 'cryptography' "
        "package (pip install cryptography)"]
