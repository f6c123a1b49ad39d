"""What makes a registered version loadable: a manifest the pipeline wrote, files that match it, names that are data.

Two anchors, checked in this order by :func:`verify_manifest`:

1. The registry. The pipeline records the manifest's sha256 on the model version (``alpr_manifest_sha256``); a
   manifest whose bytes hash differently, or a version without that tag, is refused. This alone stops anyone who can
   write only the artifact store (the bucket, or the plain-HTTP path to it).
2. A signature. The pipeline signs the manifest's bytes with its Ed25519 key and records the signature and the key's
   id on the version (``alpr_manifest_signature``, ``alpr_signing_key_id``). A box configured with trusted public
   keys (``ALPR_EDGE_TRUSTED_KEYS``) refuses a version that is unsigned or signed by any other key, so even someone
   who can write the registry cannot ship a model.

Every name that comes from the registry or a manifest is checked before it touches the file system: file names are
plain basenames with a loadable suffix, versions are decimal integers, model names are the ones asked for.
Everything fails closed: an error here means the version is not loaded and the serving one stays.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_SHA_TAG = "alpr_manifest_sha256"
SIGNATURE_TAG = "alpr_manifest_signature"
KEY_ID_TAG = "alpr_signing_key_id"
TRUST_TAGS = (MANIFEST_SHA_TAG, SIGNATURE_TAG, KEY_ID_TAG)

FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
FILE_SUFFIXES = (".onnx", ".engine", ".pt", ".json", ".yaml")  # what a version's manifest may list
VERSION = re.compile(r"[1-9][0-9]{0,8}")
MAX_MANIFEST_BYTES = 1 << 20


class UntrustedVersion(Exception):
    """A version fails the trust checks; the message names which and what to do."""


def check_file_name(name: object) -> str:
    """``name`` if it is a plain file name with an allowed suffix, else :class:`UntrustedVersion`."""
    if (not isinstance(name, str) or not FILE_NAME.fullmatch(name) or ".." in name
            or not name.endswith(FILE_SUFFIXES)):
        raise UntrustedVersion(f"manifest file name {str(name)[:80]!r} is not a plain file name ending in one of "
                               f"{', '.join(FILE_SUFFIXES)}; the version is refused")
    return name


def check_version(version: object) -> str:
    """``version`` as a string if it is a positive decimal integer (what MLflow assigns), else refused."""
    text = str(version)
    if not VERSION.fullmatch(text):
        raise UntrustedVersion(f"version {text[:40]!r} is not a positive decimal integer; refused")
    return text


def key_id(public_raw: bytes) -> str:
    """A short stable name for a public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def _load_public_key(text: str):
    """An Ed25519 public key from PEM text, or from 32 raw bytes in base64."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key
    raw = base64.b64decode(text, validate=True)
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys a box accepts signatures from, by key id (several during a key rotation)."""

    keys: dict[str, Any]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedKeys:
        """Each entry is a path to a PEM public key file, or a base64 raw key. A bad entry raises ``ValueError``."""
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        keys: dict[str, Any] = {}
        for entry in entries:
            entry = entry.strip()
            if not entry:
                continue
            try:
                text = Path(entry).read_text() if Path(entry).is_file() else entry
                key = _load_public_key(text)
            except (ValueError, binascii.Error, OSError, UnsupportedAlgorithm) as exc:
                raise ValueError(f"ALPR_EDGE_TRUSTED_KEYS entry {entry[:60]!r} is neither a PEM public key file nor "
                                 f"a base64 Ed25519 public key ({exc}); `alpr keys show` prints one") from exc
            keys[key_id(key.public_bytes(Encoding.Raw, PublicFormat.Raw))] = key
        return cls(keys)

    @staticmethod
    def env_entries() -> list[str]:
        """``ALPR_EDGE_TRUSTED_KEYS``: comma-separated entries (see :meth:`parse`); unset means no signature check."""
        return [e.strip() for e in os.environ.get("ALPR_EDGE_TRUSTED_KEYS", "").split(",") if e.strip()]

    @classmethod
    def from_env(cls) -> TrustedKeys:
        return cls.parse(cls.env_entries())

    def __bool__(self) -> bool:
        return bool(self.keys)


def registered_sha256(tags: dict[str, str], name: str) -> str:
    """The manifest sha256 the pipeline recorded on the version (its tags), else :class:`UntrustedVersion`: a version
    without it was not registered by the pipeline. Callers check it before downloading anything."""
    expected = tags.get(MANIFEST_SHA_TAG)
    if not expected:
        raise UntrustedVersion(f"{name}: the version has no {MANIFEST_SHA_TAG} tag, so it was not registered by the "
                               "pipeline; register models with `alpr register-existing`")
    return expected


def verify_manifest(body: bytes, tags: dict[str, str], name: str, trusted: TrustedKeys) -> dict[str, Any]:
    """The manifest in ``body`` if it is the one the pipeline registered for model ``name`` (see the module
    docstring), its file names plain; else :class:`UntrustedVersion`."""
    if len(body) > MAX_MANIFEST_BYTES:
        raise UntrustedVersion(f"{name}: manifest of {len(body)} bytes is larger than {MAX_MANIFEST_BYTES}; refused")
    expected = registered_sha256(tags, name)
    actual = hashlib.sha256(body).hexdigest()
    if actual != expected:
        raise UntrustedVersion(f"{name}: manifest sha256 {actual[:12]} is not the {expected[:12]} the registry "
                               "recorded; the artifact store holds a manifest the pipeline did not write")
    if trusted:
        signature, kid = tags.get(SIGNATURE_TAG), tags.get(KEY_ID_TAG)
        if not signature or not kid:
            raise UntrustedVersion(f"{name}: the version is unsigned and this box requires a signature "
                                   "(ALPR_EDGE_TRUSTED_KEYS is set)")
        key = trusted.keys.get(kid)
        if key is None:
            raise UntrustedVersion(f"{name}: signed by key {kid[:16]!r}, which is not among this box's trusted keys "
                                   f"({', '.join(sorted(trusted.keys))})")
        from cryptography.exceptions import InvalidSignature

        try:
            key.verify(base64.b64decode(signature, validate=True), body)
        except (InvalidSignature, binascii.Error, ValueError) as exc:
            raise UntrustedVersion(f"{name}: the manifest's signature does not verify with key {kid}") from exc
    try:
        manifest = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise UntrustedVersion(f"{name}: manifest is not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise UntrustedVersion(f"{name}: the manifest lists no files; refused")
    if manifest.get("model") != name:
        raise UntrustedVersion(f"{name}: the manifest is for {str(manifest.get('model'))[:60]!r}; refused")
    for role, entry in manifest["files"].items():
        if (not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str)
                or not re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])):
            raise UntrustedVersion(f"{name}: manifest entry {str(role)[:40]!r} has no valid sha256; refused")
        check_file_name(entry.get("name"))
    return manifest
