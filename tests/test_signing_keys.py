"""The identity token's keys (DESIGN §11): which PEM files sign with which algorithm, which are refused
with what was expected (in `check-config`'s words, with the key path), and RFC 7638 `kid`s."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from joserfc.jwk import KeySet

from gateway.signing_keys import KeyProblem, load_public_jwk, load_signing_key, thumbprint

from .support.processes import REPO
from .support.verifier import KINDS, write_key

# RFC 7638 §3.1: the example RSA key and its thumbprint
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjB"
    "ZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqz"
    "s8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-"
    "G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)


def test_the_thumbprint_is_rfc_7638s() -> None:
    assert (
        thumbprint({"e": "AQAB", "kty": "RSA", "n": RFC7638_N})
        == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    )


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_supported_key_signs_with_its_algorithm_and_kid(kind: str, tmp_path: Path) -> None:
    private, public, _ = write_key(tmp_path, "key", kind)

    key = load_signing_key(str(private))

    assert key.algorithm == KINDS[kind]
    assert load_public_jwk(str(public)) == key.jwk
    published: list[Any] = [key.jwk]
    assert KeySet.import_key_set({"keys": published}).keys[0].thumbprint() == key.kid  # joserfc agrees
    assert "d" not in key.jwk
    assert repr(key) == f"<SigningKey {KINDS[kind]} {key.kid}>"  # never the key itself


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        ("ec-p384", "expected an EC key on P-256 (secp256r1)"),
        ("rsa-1024", "expected an RSA key of at least 2048 bits"),
        ("ed448", "expected an EC P-256, RSA (2048 bits or more) or Ed25519 key"),
        ("dsa", "expected an EC P-256, RSA (2048 bits or more) or Ed25519 key"),
    ],
)
def test_other_keys_are_refused_with_what_was_expected(kind: str, said: str, tmp_path: Path) -> None:
    private, public, _ = write_key(tmp_path, "key", kind)
    for load, path in ((load_signing_key, private), (load_public_jwk, public)):
        with pytest.raises(KeyProblem, match=said.replace("(", r"\(").replace(")", r"\)")):
            load(str(path))


def test_unusable_files_are_refused_with_why(tmp_path: Path) -> None:
    private, public, key = write_key(tmp_path, "key")
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    cases = [
        (load_signing_key, tmp_path / "missing.pem", "cannot read"),
        (load_signing_key, encrypted, "is encrypted"),
        (load_signing_key, public, "holds a public key"),
        (load_signing_key, garbage, "is not one"),
        (load_public_jwk, private, "holds a private key"),
        (load_public_jwk, garbage, "is not one"),
    ]
    for load, path, said in cases:
        with pytest.raises(KeyProblem, match=said):
            load(str(path))


def test_check_config_names_the_key_path_of_each_bad_key(tmp_path: Path) -> None:
    weak, _, _ = write_key(tmp_path, "weak", "rsa-1024")
    private, _, _ = write_key(tmp_path, "old", "ec")
    config = {
        "github": {"apps": [{"client_id": "Iv1.0123456789abcdef", "client_secret": "s"}]},
        "identity_token": {
            "signing_key_file": str(weak),
            "previous_public_keys": [str(private)],
            "issuer": "https://gw.example",
        },
        "routes": [{"path": "/", "upstream": "http://127.0.0.1:9"}],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))

    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "-c", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    assert (
        f"{path}: identity_token.signing_key_file: expected an RSA key of at least 2048 bits" in done.stderr
    )
    assert f"{path}: identity_token.previous_public_keys[0]: expected a public key" in done.stderr
    assert "PRIVATE KEY" not in done.stderr + done.stdout
