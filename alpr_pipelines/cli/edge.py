"""`alpr edge`: imports only the edge runtime (no dagster, torch or ultralytics)."""

from __future__ import annotations

import argparse
import json
import sys

from alpr_pipelines.cli.common import CliError
from alpr_pipelines.settings import Settings


def cmd_edge(args: argparse.Namespace, settings: Settings) -> int:
    """The edge service; imports only the edge runtime (no dagster, torch or ultralytics)."""
    import logging
    import os

    from alpr_pipelines.edge.loader import ModelLoadError
    from alpr_pipelines.edge.service import ConfigError, EdgeConfig, EdgeService

    level = os.environ.get("ALPR_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = EdgeConfig.load(args.config)
        if args.port is not None:
            config.http_port = args.port
        service = EdgeService(config)
    except (ConfigError, ModelLoadError) as exc:
        raise CliError(str(exc)) from exc
    serving = [f"{s.name} v{s.version}" if s.version else f"{s.name} ({s.metadata.get('source')})"
               for s in service.detector.slots()]
    print("edge: serving " + ", ".join(serving), file=sys.stderr)
    try:
        frames = service.run(max_frames=args.max_frames)
    except KeyboardInterrupt:
        service.stop()
        frames = dict(service.frames_by_camera)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    summary = {"frames": frames, "versions": {k: sorted(v) for k, v in service.versions_seen.items()}}
    print(json.dumps(summary), file=sys.stderr)
    return 0


