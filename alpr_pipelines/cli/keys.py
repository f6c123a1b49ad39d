"""``alpr keys``: the pipeline's Ed25519 release key (``lib.signing``) and the public key edge boxes trust."""

from __future__ import annotations

import argparse

from alpr_pipelines.cli.common import CliError
from alpr_pipelines.settings import Settings


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    """``generate``: a new pair in ``--dir`` (default ``$ALPR_HOME/keys``); ``show``: the public half of the key the
    pipeline signs with (``--dir``'s, else ``ALPR_SIGNING_KEY_FILE``, else ``$ALPR_HOME/keys``')."""
    from alpr_pipelines.lib.signing import PRIVATE_NAME, SigningKeyError, generate_key_pair, load_signing_key

    try:
        if args.action == "generate":
            private, public = generate_key_pair(args.dir or settings.keys_dir)
            print(f"private key (keep it on the pipeline host; ALPR_SIGNING_KEY_FILE={private})")
            print(f"public key (give it to edge boxes; ALPR_EDGE_TRUSTED_KEYS={public})")
            return 0
        private = (args.dir / PRIVATE_NAME if args.dir else settings.signing_key_file
                   or settings.keys_dir / PRIVATE_NAME)
        key = load_signing_key(private)
    except SigningKeyError as exc:
        raise CliError(str(exc)) from exc
    print(f"# key id {key.key_id} (of {private}); save as a .pem file for ALPR_EDGE_TRUSTED_KEYS on edge boxes")
    print(key.public_pem(), end="")
    return 0
