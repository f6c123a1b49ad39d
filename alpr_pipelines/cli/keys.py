"""``alpr keys``: the pipeline's Ed25519 release key (``lib.signing``) and the public key edge boxes trust."""

from __future__ import annotations

import argparse

from alpr_pipelines.cli.common import CliError
from alpr_pipelines.settings import Settings


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    from alpr_pipelines.lib.signing import (
        PRIVATE_NAME,
        PUBLIC_NAME,
        SigningKeyError,
        generate_key_pair,
        load_signing_key,
    )

    folder = args.dir or (settings.signing_key_file.parent if settings.signing_key_file else settings.keys_dir)
    private = settings.signing_key_file if settings.signing_key_file and not args.dir else folder / PRIVATE_NAME
    try:
        if args.action == "generate":
            private, public = generate_key_pair(folder)
            print(f"private key (keep it on the pipeline host, ALPR_SIGNING_KEY_FILE): {private}")
            print(f"public key (give it to edge boxes, ALPR_EDGE_TRUSTED_KEYS): {public}")
            return 0
        key = load_signing_key(private)
    except SigningKeyError as exc:
        raise CliError(str(exc)) from exc
    print(f"# key id {key.key_id}; on edge boxes: ALPR_EDGE_TRUSTED_KEYS=<this file> ({folder / PUBLIC_NAME})")
    print(key.public_pem(), end="")
    return 0
