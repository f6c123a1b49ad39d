"""Figure 4, promotion to edge: from the moment the Production alias moves to the first frame the edge serves with
the new version, over repeated swaps, with the frame record of every swap.

Set-up (not timed): an MLflow server (the embedded profile's, on a free loopback port) with the registry cache in
front of it (nginx, as fleets poll it; `--direct` polls MLflow itself) and, once the edge has started, at the lowest
CPU priority with this script (in a fleet the registry side runs on other machines), the vehicle detector
registered as ``swaps + 1`` versions (copies of one ONNX export that differ in one metadata entry, so each has its
own hash, download and load) and the plate detector as one version, both promoted to Production. Then the real edge
service (``alpr edge``, a separate process) serves a camera clip paced at ``--camera-fps`` while this script
promotes the next version (``promote_to_production``: stage and alias, as the promotion sensor does) at a random
moment of each poll period, and reads the service's detections file for the first frame of the new version.

The alias move is timed by the request that moves it (:func:`alias_timed_client`). Reported: the
alias-move-to-first-frame latency (median, p95, max) against its target, the poll interval plus 3 s;
dropped frames (every frame of the source must appear once, in order); the longest frame during a swap (from the
edge's poll that saw the new version, as its log records, to 2 s after the first new frame) against twice the steady
p95 frame time (frames away from any promotion), and apart from it the longest frame counted from the alias move.

    .venv/bin/python bench/swap_bench.py --json out.json     # 20 swaps, 5 s poll interval
    .venv/bin/python bench/swap_bench.py --quick             # smoke: 2 swaps, 1 s interval, untrained models
    .venv/bin/python bench/swap_bench.py --realtime-priority 0   # frames at the normal priority (default SCHED_FIFO 10)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import cpu_stalls, free_port, machine, work_folder, write_json  # first: offline YOLO, the repo on sys.path

SWAP_WINDOW_AFTER_S = 2.0
# The edge's frames at SCHED_FIFO (edge.swap.priority), as a box that must not stall a camera runs them (docs/deploy.md).
REALTIME_PRIORITY = 10
REFUSED = "real-time priority {} not allowed here"  # edge.swap.priority's warning when this box refuses it




def tagged_copy(src: Path, dest: Path, tag: str) -> Path:
    """``src`` with one more metadata entry: same network, different bytes (a distinct version to download)."""
    import onnx

    model = onnx.load(str(src))
    model.metadata_props.add(key="alpr_bench_copy", value=tag)
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest))
    return dest


def versions_seen(log: Path) -> dict[str, float]:
    """When the edge's vehicle poller first saw each version (its INFO line "v<N> is the registry's version now")."""
    from datetime import datetime

    seen: dict[str, float] = {}
    pattern = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \S+: alpr-vehicle-detector: v(\S+) is the registry")
    for line in log.read_text(errors="replace").splitlines() if log.is_file() else []:
        m = pattern.match(line)
        if m:
            seen.setdefault(m.group(2), datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return seen


def _tree(pid: int) -> list:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def lowest_priority(pids: list[int]) -> str:
    """Every thread of these processes (this one included) to the lowest CPU priority: SCHED_IDLE where Linux has
    it (CPU only when nothing else wants it), else nice 19; returns what they got.

    A thread's policy and nice rank it only against the threads of its own scheduling group. Where the kernel groups
    by session (autogroup, ``/proc/sys/kernel/sched_autogroup_enabled``), a server started in a session of its own
    (``stack.up`` and the registry cache start theirs so) is a group that competes with the edge's group as an equal
    whatever its threads' policy: measured on 2 cores, two SCHED_IDLE spinners in another session took 67% of the CPU
    time of two normal threads, and 3% with their group's nice at 19. So those groups go to nice 19 as well; the
    group of this process is the edge's (the edge is its child), so it keeps its nice."""
    import psutil

    idle = hasattr(os, "SCHED_IDLE")
    own_session, regrouped = os.getsid(0), False
    for pid in pids:
        try:
            tids = [t.id for t in psutil.Process(pid).threads()]
        except psutil.Error:
            continue
        for tid in tids:  # a policy is per thread; threads started later inherit their creator's
            try:
                os.setpriority(os.PRIO_PROCESS, tid, 19)
                if idle:
                    os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            except OSError:
                pass
        try:
            if os.getsid(pid) != own_session:
                Path(f"/proc/{pid}/autogroup").write_text("19")
                regrouped = True
        except OSError:  # no autogroups in this kernel, or the process is gone
            pass
    policy = "SCHED_IDLE" if idle else "nice 19"
    return policy + ("; their scheduling groups (autogroups of their sessions) at nice 19" if regrouped else "")


@contextlib.contextmanager
def box_priority(nice: int = -10) -> Any:
    """This process's scheduling group (the autogroup of its session, which the edge it starts joins) at ``nice``
    for the block, then back: the priority a camera box gives its detector over the box's other services (compose
    ``cpu_shares``, systemd ``Nice=``; docs/deploy.md). This machine runs services of its own beside the benchmark
    (PostgreSQL, MariaDB, RabbitMQ, Redis, NATS), each a group as heavy as the edge's: a RabbitMQ check that starts
    an Erlang VM every 60 s took 75 ms of a core from one frame. This process's own threads stay at the lowest
    priority inside the group (:func:`lowest_priority`). Yields what the group got."""
    group = Path("/proc/self/autogroup")
    try:
        before = int(group.read_text().split("nice")[1])
        group.write_text(str(nice))
    except (OSError, ValueError, IndexError) as exc:  # no autogroups here, or raising a priority needs root
        yield f"the default priority (the edge's group could not go to nice {nice}: {exc})"
        return
    try:
        yield f"its scheduling group (autogroup) at nice {nice}"
    finally:
        with contextlib.suppress(OSError):
            group.write_text(str(before))


def alias_timed_client(uri: str, alias: str) -> Any:
    """An MlflowClient that notes when each request moving ``alias`` was sent. The alias moves while that request is
    served: not before it is sent, and a promotion's other requests (stage transition, alias reads, the read-back
    that verifies agreement) come before or after it. Counting from the promotion call's start would count them
    too, and they run at the lowest priority here (seconds, on a busy box)."""
    from mlflow import MlflowClient

    class Client(MlflowClient):
        alias_sent: dict[str, float] = {}

        def set_registered_model_alias(self, name: str, alias_: str, version: str) -> None:
            sent = time.time()
            super().set_registered_model_alias(name, alias_, version)
            if alias_ == alias:
                self.alias_sent[str(version)] = sent

    return Client(uri)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


class Detections:
    """Follows the edge service's detections file (JSON lines) as it grows."""

    def __init__(self, path: Path):
        self.path, self.offset, self.frames = path, 0, []

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with self.path.open() as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        self.offset += len(complete)
        new = [json.loads(line) for line in complete.splitlines() if line.strip()]
        self.frames.extend(new)
        return new

    def wait_for(self, version: str, deadline: float, proc: subprocess.Popen) -> dict[str, Any] | None:
        while time.time() < deadline:
            for frame in self.read():
                if frame["vehicle_version"] == version:
                    return frame
            if proc.poll() is not None:
                raise RuntimeError(f"the edge service exited with {proc.returncode} before v{version} served a frame "
                                   "(exit 0: it came to the end of the clip; see edge.log in the work folder)")
            time.sleep(0.02)
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--swaps", type=int)
    parser.add_argument("--poll-interval", type=float)
    parser.add_argument("--camera-fps", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--realtime-priority", type=int, default=REALTIME_PRIORITY,
                        help="the edge's realtime_priority (0: frames at the normal priority, the baseline)")
    parser.add_argument("--direct", action="store_true",
                        help="the edge polls MLflow itself instead of the registry cache in front of it")
    args = parser.parse_args()
    swaps = args.swaps or (2 if args.quick else 20)
    interval = args.poll_interval or (1.0 if args.quick else 5.0)
    rng = random.Random(args.seed)

    from alpr_pipelines import stack
    from alpr_pipelines.lib.exports import export_onnx
    from alpr_pipelines.lib.models import PLATE, VEHICLE
    from alpr_pipelines.lib.promotion import promote_to_production
    from alpr_pipelines.lib.registry import STAGE_ALIASES, register_version
    from alpr_pipelines.lib.synth import write_sample_clip
    from alpr_pipelines.settings import load_settings
    from alpr_pipelines.stack import registry_cache

    work = work_folder("alpr-bench-swap-")  # removed at exit
    env = {**os.environ, "ALPR_HOME": str(work / "home"), "ALPR_MLFLOW_PORT": str(free_port())}
    env.pop("MLFLOW_TRACKING_URI", None)
    settings = load_settings(env)
    imgsz = 320 if args.quick else 640
    if args.quick:
        from edge_bench import untrained_weights

        weights = {"vehicle": untrained_weights(4, work), "plate": untrained_weights(1, work)}
        quantize = False
    else:
        from trained_models import prepare

        trained = prepare()
        weights = {k: Path(trained[f"{k}_pt"]) for k in ("vehicle", "plate")}
        quantize = True
    onnx = {k: Path(export_onnx(w, work / "export" / k, imgsz).path or "") for k, w in weights.items()}
    int8: dict[str, Path] = {}
    if quantize:
        from trained_models import quantized

        int8 = quantized(onnx)

    # Enough clip for every swap at the camera's pace: a promotion's wait, the swap and the window after it, with room
    # for slow swaps (they are what is measured), plus start-up.
    seconds = 30 + swaps * (interval * 2 + 10)
    clip = write_sample_clip(work / "clip.avi", frames=int(seconds * args.camera_fps), width=640, height=384)
    proc: subprocess.Popen | None = None
    cache = None
    cleanup = contextlib.ExitStack()
    try:
        stack.up(settings, only=["mlflow"])  # inside: a server that starts and then fails its checks is stopped too
        edge_priority = cleanup.enter_context(box_priority())
        # The edge polls through the registry cache in front of MLflow, as a fleet's boxes do (production profile,
        # compose stack); without nginx, or with --direct, it polls MLflow itself.
        registry_uri, via = settings.mlflow_tracking_uri, "MLflow directly"
        if not args.direct:
            try:
                registry_cache.nginx_binary()
            except stack.StackError:
                via = "MLflow directly (nginx is not installed, so no registry cache)"
            else:
                cache = cleanup.enter_context(registry_cache.running(registry_uri, work / "registry-cache"))
                registry_uri, via = cache.url, f"the registry cache (nginx, {cache.ttl} entries) in front of MLflow"
        client = alias_timed_client(settings.mlflow_tracking_uri, STAGE_ALIASES["Production"])
        exp = client.create_experiment("swap-bench")
        run_id = client.create_run(exp).info.run_id
        versions: list[str] = []
        for i in range(swaps + 1):
            files = {"onnx": tagged_copy(onnx["vehicle"], work / "copies" / str(i) / "model.onnx", str(i))}
            if int8:
                files["onnx_int8"] = tagged_copy(int8["vehicle"], work / "copies" / str(i) / "model.int8.onnx", str(i))
            versions.append(register_version(client, VEHICLE, run_id, files, imgsz, {"bench": i}).version)
        plate_files = {"onnx": onnx["plate"], **({"onnx_int8": int8["plate"]} if int8 else {})}
        plate_version = register_version(client, PLATE, run_id, plate_files, imgsz, {"bench": 0}).version
        promote_to_production(client, PLATE.registered_name, plate_version)
        promote_to_production(client, VEHICLE.registered_name, versions[0])

        # What the machine takes from a busy core by itself (its host, for a VM): frames hit by such a stall grow by
        # it whatever the edge does, so the longest frames are read against it. Nothing else runs meanwhile.
        stalls = cpu_stalls(3.0 if args.quick else 15.0)
        detections_path = work / "detections.jsonl"
        config = {
            "registry": {"tracking_uri": registry_uri, "poll_interval": interval},
            "models": {"vehicle": {"name": VEHICLE.registered_name, "imgsz": imgsz},
                       "plate": {"name": PLATE.registered_name, "imgsz": imgsz}},
            "cameras": [{"name": "bench", "source": str(clip), "fps_limit": args.camera_fps}],
            "output": {"detections": str(detections_path)},
            "http": {"host": "127.0.0.1", "port": free_port()},
            "cache_dir": str(work / "edge-cache"),
            "realtime_priority": args.realtime_priority,
        }
        cfg = work / "cameras.yaml"
        cfg.write_text(json.dumps(config))
        log = (work / "edge.log").open("w")
        proc = subprocess.Popen([str(Path(sys.executable).parent / "alpr"), "edge", "--config", str(cfg)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
        # The registry side (MLflow, the cache, and this script, which promotes as the pipeline's sensor does) runs
        # on other machines in a fleet; here it shares the edge box's 2 cores, so it goes to the lowest priority
        # rather than stand in for load the edge box would not have.
        registry_side = [os.getpid(), *(p.pid for s in stack.status(settings) if s.pid for p in _tree(s.pid))]
        if cache is not None:
            registry_side += [p.pid for p in _tree(cache.pid)]
        reniced = lowest_priority(registry_side)
        det = Detections(detections_path)
        if det.wait_for(versions[0], time.time() + 120, proc) is None:
            raise RuntimeError(f"the edge service served no frame of v{versions[0]} in 120 s; see {work / 'edge.log'}")
        time.sleep(2)  # steady state before the first swap
        events = []
        for version in versions[1:]:
            time.sleep(rng.uniform(0, interval))  # promotions land anywhere in the poll period
            called = time.time()
            promote_to_production(client, VEHICLE.registered_name, version)
            returned = time.time()
            moved = client.alias_sent.get(version, called)
            first = det.wait_for(version, called + interval * 3 + 30, proc)
            if first is None:
                raise RuntimeError(f"v{version} was not served within {interval * 3 + 30:.0f} s of its promotion")
            events.append({"version": version, "called": called, "moved": moved, "returned": returned,
                           "first_frame": first["time"], "latency_s": first["time"] - moved})
            time.sleep(SWAP_WINDOW_AFTER_S)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        det.read()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        cleanup.close()
        stack.down(settings)

    frames = det.frames
    indices = [f["frame"] for f in frames]
    dropped = (max(indices) + 1 - len(set(indices))) if indices else 0
    out_of_order = sum(1 for a, b in zip(indices, indices[1:], strict=False) if b != a + 1)

    seen = versions_seen(work / "edge.log")
    refused = REFUSED.format(args.realtime_priority) in (work / "edge.log").read_text()
    edge_priority += (", frames at the normal priority" if not args.realtime_priority else
                      f", frames at SCHED_FIFO {args.realtime_priority}" if not refused else
                      f", frames at the normal priority (SCHED_FIFO {args.realtime_priority} refused; see edge.log)")
    for e in events:
        e["seen"] = seen.get(e["version"], e["moved"])  # the edge's poll that found it (its log says when)

    def in_window(f: dict[str, Any], start: str) -> bool:
        return any(e[start] <= f["time"] <= e["first_frame"] + SWAP_WINDOW_AFTER_S for e in events)

    # Steady: frames far from any promotion. During a swap: from the edge's poll that saw the new version (it then
    # downloads, verifies, optimizes, loads and warms up) to 2 s after its first frame. Before that poll the edge
    # does nothing for the swap; the frames between the alias move and it are reported apart: they share the 2 cores
    # with the registry's own promotion work, which in a fleet runs on other machines.
    steady = [f["latency_ms"] for f in frames if not in_window(f, "called")]
    during = [f["latency_ms"] for f in frames if in_window(f, "seen")]
    from_move = [f["latency_ms"] for f in frames if in_window(f, "called")]
    promotion_s = statistics.median(e["returned"] - e["called"] for e in events) if events else float("nan")
    move_to_seen_s = percentile([e["seen"] - e["moved"] for e in events], 95)
    latencies = [e["latency_s"] for e in events]
    p95_latency, steady_p95 = percentile(latencies, 95), percentile(steady, 95)
    longest = max(during) if during else float("nan")
    longest_from_move = max(from_move) if from_move else float("nan")
    latency_target = interval + 3
    met = (p95_latency <= latency_target and dropped == 0 and out_of_order == 0 and longest <= 2 * steady_p95)
    figure = {
        "id": "4", "name": "promotion to edge (alias move to first frame of the new version)",
        "ours": p95_latency,
        "ours_text": f"p95 {p95_latency:.2f} s (median {statistics.median(latencies):.2f}, max {max(latencies):.2f}) "
                     f"over {len(events)} swaps; dropped frames {dropped} of {len(set(indices))}; longest frame "
                     f"during a swap {longest:.1f} ms vs steady p95 {steady_p95:.1f} ms "
                     f"({longest / steady_p95:.2f}x); counting from the alias move, which adds the registry's own "
                     f"promotion work on the same cores: {longest_from_move:.1f} ms "
                     f"({longest_from_move / steady_p95:.2f}x)",
        "baseline_text": f"target: poll interval {interval:g} s + 3 s = {latency_target:g} s; 0 dropped; longest "
                         f"swap frame <= 2x steady p95 = {2 * steady_p95:.1f} ms",
        "ratio": p95_latency / latency_target, "target": f"p95 <= {latency_target:g} s, 0 dropped, <= 2x p95",
        "met": bool(met) and not args.quick,
        "limits": "the poll interval (a version is seen at the next poll, jittered +-20%), then download, load and "
                  "warm-up: the graph is optimized for this box at the lowest priority, its session created and warmed "
                  "up between frames (the frame loop and the loader take turns), so a frame waits for one such step "
                  f"at most. The edge ran at {edge_priority} and polled {via}; the registry side ran at the lowest CPU priority ({reniced}) on the same "
                  f"2 cores: a promotion call took {promotion_s:.1f} s (median; the alias moves within it, timed by its "
                  f"own request), and from the move to the poll that saw it took {move_to_seen_s:.1f} s (p95), "
                  "interval and jitter included. Before the run, a thread keeping each core busy went without running "
                  f"for up to {', '.join(f'{x:.0f}' for x in stalls)} ms ({3 if args.quick else 15} s probe, "
                  "bench/common.py:cpu_stalls): a frame hit by such a stall grows by it, swap or not.",
    }
    result = {"figures": [figure], "machine": machine(),
              "command": ".venv/bin/python bench/swap_bench.py" + (" --quick" if args.quick else ""),
              "details": {"swaps": len(events), "poll_interval_s": interval, "camera_fps": args.camera_fps,
                          "imgsz": imgsz, "precision": "int8" if int8 else "fp32", "frames": len(frames),
                          "edge_polls": via, "edge_priority": edge_priority, "registry_side_priority": reniced,
                          "dropped": dropped, "out_of_order": out_of_order, "latencies_s": latencies,
                          "steady_p95_ms": steady_p95, "longest_swap_frame_ms": longest,
                          "longest_frame_from_alias_move_ms": longest_from_move,
                          "events": events, "promotion_call_s": promotion_s, "move_to_seen_p95_s": move_to_seen_s,
                          "steady_p50_ms": percentile(steady, 50), "swap_frames": len(during),
                          "steady_max_ms": max(steady) if steady else float("nan"), "cpu_stalls_ms": stalls}}
    write_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
