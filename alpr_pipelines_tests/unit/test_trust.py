"""The edge's trust checks (``edge.trust``) and the pipeline's release key (``lib.signing``), without a server."""

import base64
import hashlib
import json
import os

import pytest

from alpr_pipelines.edge.trust import (
    KEY_ID_TAG,
    MANIFEST_SHA_TAG,
    SIGNATURE_TAG,
    TrustedKeys,
    UntrustedVersion,
    check_file_name,
    check_version,
    verify_manifest,
)
from alpr_pipelines.lib.signing import (
    SigningKeyError,
    configured_signer,
    ensure_key_pair,
    generate_key_pair,
    load_signing_key,
)
from alpr_pipelines.settings import load_settings

NAME = "alpr-plate-detector"
SHA = "ab" * 32


def manifest_bytes(name: str = NAME, file_name: str = "model.onnx") -> bytes:
    return json.dumps({"model": name, "files": {"onnx": {"name": file_name, "sha256": SHA}}}).encode()


@pytest.fixture()
def key(tmp_path):
    private, public = generate_key_pair(tmp_path / "keys")
    return load_signing_key(private), public


@pytest.mark.parametrize("name", ["../../x.onnx", "/etc/x.onnx", "a/b.onnx", "a\x00.onnx", "x" * 200 + ".onnx",
                                  "model.pth", ".hidden.onnx", "..onnx", "", "model.onnx/", None, 7])
def test_unsafe_file_names_are_refused(name):
    with pytest.raises(UntrustedVersion):
        check_file_name(name)


@pytest.mark.parametrize("name", ["model.onnx", "best-int8.onnx", "model_sm90.engine", "weights.pt"])
def test_plain_file_names_pass(name):
    assert check_file_name(name) == name


@pytest.mark.parametrize("version", ["0", "01", "-1", "1.0", "../1", "1/2", "", "1" * 10, "1\x00"])
def test_versions_must_be_decimal_integers(version):
    with pytest.raises(UntrustedVersion):
        check_version(version)


def test_a_manifest_needs_the_registrys_hash():
    body = manifest_bytes()
    with pytest.raises(UntrustedVersion, match="no alpr_manifest_sha256"):
        verify_manifest(body, {}, NAME, TrustedKeys({}))
    with pytest.raises(UntrustedVersion, match="did not write"):
        verify_manifest(body, {MANIFEST_SHA_TAG: "0" * 64}, NAME, TrustedKeys({}))
    tags = {MANIFEST_SHA_TAG: hashlib.sha256(body).hexdigest()}
    assert verify_manifest(body, tags, NAME, TrustedKeys({}))["files"]["onnx"]["name"] == "model.onnx"


def test_a_registered_manifest_is_still_checked_for_its_model_and_names():
    for body, match in ((manifest_bytes(name="alpr-vehicle-detector"), "is for"),
                        (manifest_bytes(file_name="../../site-packages/x.pth"), "not a plain file name")):
        with pytest.raises(UntrustedVersion, match=match):
            verify_manifest(body, {MANIFEST_SHA_TAG: hashlib.sha256(body).hexdigest()}, NAME, TrustedKeys({}))


def test_with_trusted_keys_only_a_good_signature_passes(key, tmp_path):
    signer, public = key
    body = manifest_bytes()
    registered = {MANIFEST_SHA_TAG: hashlib.sha256(body).hexdigest()}
    trusted = TrustedKeys.parse([str(public)])
    assert verify_manifest(body, {**registered, **signer.sign_tags(body)}, NAME, trusted)
    with pytest.raises(UntrustedVersion, match="unsigned"):
        verify_manifest(body, registered, NAME, trusted)
    other = load_signing_key(generate_key_pair(tmp_path / "other")[0])
    with pytest.raises(UntrustedVersion, match="not among this box's trusted keys"):
        verify_manifest(body, {**registered, **other.sign_tags(body)}, NAME, trusted)
    forged = {**registered, **signer.sign_tags(body + b" ")}  # a signature of other bytes, under the right key id
    with pytest.raises(UntrustedVersion, match="does not verify"):
        verify_manifest(body, forged, NAME, trusted)
    garbage = {**registered, SIGNATURE_TAG: "not base64!", KEY_ID_TAG: signer.key_id}
    with pytest.raises(UntrustedVersion, match="does not verify"):
        verify_manifest(body, garbage, NAME, trusted)


def test_trusted_keys_parse_pem_files_and_base64_and_name_a_bad_entry(key):
    signer, public = key
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = signer.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    both = TrustedKeys.parse([str(public), base64.b64encode(raw).decode(), ""])
    assert list(both.keys) == [signer.key_id]
    with pytest.raises(ValueError, match="ALPR_EDGE_TRUSTED_KEYS entry 'nonsense'"):
        TrustedKeys.parse(["nonsense"])
    assert not TrustedKeys.parse([])


def test_the_signing_key_is_private_and_never_overwritten(tmp_path):
    private, public = generate_key_pair(tmp_path)
    assert private.stat().st_mode & 0o777 == 0o600 and public.is_file()
    with pytest.raises(SigningKeyError, match="exists"):
        generate_key_pair(tmp_path)
    assert ensure_key_pair(tmp_path) == (private, public)
    os.chmod(private, 0o644)
    with pytest.raises(SigningKeyError, match="readable by other users"):
        load_signing_key(private)
    (tmp_path / "bad.pem").write_text("not a key")
    os.chmod(tmp_path / "bad.pem", 0o600)
    with pytest.raises(SigningKeyError, match="not an unencrypted PEM"):
        load_signing_key(tmp_path / "bad.pem")


def test_configured_signer_uses_the_env_key_or_the_stacks(tmp_path):
    home = tmp_path / "home"
    assert configured_signer(load_settings({"ALPR_HOME": str(home)})) is None
    private, _ = ensure_key_pair(home / "keys")
    assert configured_signer(load_settings({"ALPR_HOME": str(home)})).path == private
    with pytest.raises(SigningKeyError, match="cannot be read"):
        configured_signer(load_settings({"ALPR_HOME": str(home), "ALPR_SIGNING_KEY_FILE": str(tmp_path / "no.pem")}))
