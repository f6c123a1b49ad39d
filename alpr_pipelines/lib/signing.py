"""The pipeline's release key: it signs each version's manifest so edge boxes can trust a model without trusting the
registry or the bucket (``edge.trust`` verifies).

Plain Ed25519 from ``cryptography`` rather than OpenSSF's model-signing: an edge box then needs one small, widely
packaged library to verify, and the signature is a registry tag beside the manifest hash it covers (docs/security.md).

The private key is a PEM (PKCS#8) file named by ``ALPR_SIGNING_KEY_FILE``, never kept in the repository; the embedded
stack makes one under ``$ALPR_HOME/keys`` on its first ``stack up``.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from alpr_pipelines.edge.trust import KEY_ID_TAG, SIGNATURE_TAG, key_id
from alpr_pipelines.settings import Settings

PRIVATE_NAME = "signing.pem"
PUBLIC_NAME = "signing.pub.pem"


class SigningKeyError(Exception):
    """The signing key named by the settings cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key and its id (the edge's name for the matching public key)."""

    private: Ed25519PrivateKey
    path: Path

    @property
    def key_id(self) -> str:
        return key_id(self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def public_pem(self) -> str:
        return self.private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()

    def sign_tags(self, manifest_bytes: bytes) -> dict[str, str]:
        """The version tags that carry the signature of ``manifest_bytes``."""
        return {SIGNATURE_TAG: base64.b64encode(self.private.sign(manifest_bytes)).decode(), KEY_ID_TAG: self.key_id}


def load_signing_key(path: Path) -> SigningKey:
    """Read the PEM private key at ``path``: an unencrypted Ed25519 key that only its owner can read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"signing key {path} cannot be read ({exc.strerror}); set ALPR_SIGNING_KEY_FILE to an "
                              "Ed25519 PEM key, or `alpr keys generate` makes one") from exc
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise SigningKeyError(f"signing key {path} is readable by other users; chmod 600 {path}")
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"signing key {path} is not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key {path} is a {type(key).__name__}, not Ed25519")
    return SigningKey(key, path)


def generate_key_pair(folder: Path) -> tuple[Path, Path]:
    """Write a new key pair into ``folder`` (private 0600, public PEM beside it); never overwrites a key."""
    folder.mkdir(parents=True, exist_ok=True)
    private, public = folder / PRIVATE_NAME, folder / PUBLIC_NAME
    if private.exists():
        raise SigningKeyError(f"{private} exists; a new key would strand every box that trusts it. Remove it first "
                              "if a rotation is what you want (and add the new public key to the boxes before).")
    key = Ed25519PrivateKey.generate()
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        f.flush()
        os.fsync(f.fileno())
    public.write_text(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode())
    return private, public


def ensure_key_pair(folder: Path) -> tuple[Path, Path]:
    """The key pair in ``folder``, made on first use (the embedded stack's ``stack up``)."""
    private, public = folder / PRIVATE_NAME, folder / PUBLIC_NAME
    if private.is_file():
        if not public.is_file():
            public.write_text(load_signing_key(private).public_pem())
        return private, public
    return generate_key_pair(folder)


def configured_signer(settings: Settings) -> SigningKey | None:
    """The key new versions are signed with: ``ALPR_SIGNING_KEY_FILE`` (which must load), else the embedded stack's
    ``$ALPR_HOME/keys/signing.pem`` when there is one; None: versions are registered unsigned."""
    if settings.signing_key_file is not None:
        return load_signing_key(settings.signing_key_file)
    default = settings.keys_dir / PRIVATE_NAME
    return load_signing_key(default) if default.is_file() else None
