"""`alpr stack`: the stack on this machine."""

from __future__ import annotations

import argparse

from alpr_pipelines.settings import Settings


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from alpr_pipelines import stack

    if args.action == "up":
        statuses = stack.up(settings, timeout=args.timeout, profile=args.profile, env_file=args.env_file)
    elif args.action == "down":
        stopped = stack.down(settings)
        print("stopped: " + (", ".join(stopped) or "nothing was running"))
        return 0
    else:
        statuses = stack.status(settings)
    for s in statuses:
        state = "healthy" if s.healthy else ("running" if s.running else "stopped")
        print(f"{s.name:18} {state:8} pid={s.pid or '-':<8} {s.url or ''}")
    cache = next((s for s in statuses if s.name == "registry-cache" and s.healthy), None)
    if args.action == "up" and cache is not None:
        print(f"edge boxes: MLFLOW_TRACKING_URI={cache.url} (the registry cache in front of MLflow), "
              "MLFLOW_TRACKING_USERNAME=alpr-edge")
    if args.action == "status" and not all(s.healthy for s in statuses):
        return 1
    return 0





# --------------------------------------------------------------------------------------------- parser
