"""The fleet benchmark's verdicts and report text: which fleet sizes held, what limited the figure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psutil

from alpr_pipelines.stack.registry_cache import RunningCache
from fleet import (
    COLD_BURST,
    MODELS,
    TARGET_DEVICES,
)
from fleet.load import StepResult
from fleet.server import FleetServer


def cpu_ceiling_devices(cpu_ms_per_lookup: float | None, interval: float) -> int | None:
    """The fleet whose lookups would keep every core of this machine busy with nothing else running."""
    if not cpu_ms_per_lookup:
        return None
    lookups_per_s = (psutil.cpu_count() or 1) * 1000 / cpu_ms_per_lookup
    return int(lookups_per_s * interval / len(MODELS))


def verdicts(steps: list[StepResult]) -> dict[int, StepResult]:
    """Per fleet size, the run that decides it: the first that met the target, else the last that missed."""
    out: dict[int, StepResult] = {}
    for s in steps:
        if s.devices not in out or not out[s.devices].met:
            out[s.devices] = s
    return out


def limits_text(decisive: StepResult | None, broke: bool, server: FleetServer, password_check: dict[str, Any],
                costs: dict[str, Any], cold: list[dict[str, Any]]) -> str:
    """What limits the figure: the CPU cost of a lookup, and the CPU split at the breaking (or the last) step."""
    if decisive is None or not decisive.cpu:
        return "not measured"
    cores = (psutil.cpu_count() or 1)
    idle_auth, idle_plain = costs.get("basic_auth"), costs.get("no_auth")
    per_lookup = (idle_auth["server_cpu_ms_per_lookup"] + idle_auth["postgres_cpu_ms_per_lookup"] if idle_auth
                  else decisive.cpu_ms_per_lookup)
    if idle_auth:
        cost = (f"A lookup costs {idle_auth['server_cpu_ms_per_lookup']} ms of CPU in MLflow's workers and "
                f"{idle_auth['postgres_cpu_ms_per_lookup']} ms in PostgreSQL on an idle server")
        if idle_plain:
            cost += f" ({idle_plain['server_cpu_ms_per_lookup']} ms in the workers without the basic-auth app)"
    else:
        cost = f"A lookup costs {decisive.cpu_ms_per_lookup} ms of server and database CPU under load"
    cost += (f", so {cores} cores with nothing else running carry at most ~"
             f"{cpu_ceiling_devices(per_lookup, decisive.interval_s)} devices")
    ttl = server.auth_cache_ttl
    if ttl == 0:
        cost += (f"; without its credential cache, basic-auth re-verifies the edge password on every request "
                 f"({password_check['method']}, {password_check['verify_cpu_ms']:.0f} ms of CPU each)")
    cpu = decisive.cpu
    at = (f"At {decisive.devices} devices{'' if broke else ' (the largest tried)'} the server's workers used "
          f"{cpu['server_pct']:.0f}% of a core, PostgreSQL {cpu['postgres_ours_pct']:.0f}%, the load generator "
          f"{cpu['generator_pct']:.0f}% (p99 dispatch lag {decisive.dispatch_lag_p99_ms:.0f} ms), other processes on "
          f"this shared machine {cpu['others_pct']:.0f}%")
    answered = decisive.achieved_lookups_per_s * decisive.measured_s
    if broke and idle_auth and answered:
        per_answer = 1000 * cpu["cpu_s"]["server"] / answered
        times_idle = per_answer / idle_auth["server_cpu_ms_per_lookup"]
        at += (f"; it answered {decisive.achieved_lookups_per_s:.0f} of {decisive.offered_lookups_per_s:.0f} "
               f"lookups/s at {per_answer:.0f} ms of worker CPU each, {times_idle:.1f}x the idle cost")
        if ttl and len(cold) >= 2 and times_idle >= 1.5:
            warm = min(b["server_cpu_s"] for b in cold)
            at += (f": requests queued in a worker's threads check the password together whenever its {ttl} s "
                   f"credential cache is empty ({COLD_BURST} concurrent lookups cost {cold[0]['server_cpu_s']:.1f} s "
                   f"of CPU on a fresh server, {warm:.1f} s warm), so past saturation it collapses into timeouts "
                   "instead of slowing down")
    return f"{cost}. {at}."


@dataclass(frozen=True)
class LadderVerdict:
    largest: StepResult | None  # the largest size that met the target
    breaking: StepResult | None  # the smallest size above it that missed every run
    decisive: StepResult | None  # the breaking step, else the largest size tried
    at_target: StepResult | None  # the run that decided TARGET_DEVICES, when tried


def verdict(steps: list[StepResult]) -> LadderVerdict:
    by_size = verdicts(steps)
    good = [s for s in by_size.values() if s.met]
    largest = max(good, key=lambda s: s.devices) if good else None
    breaking = min((s for s in by_size.values() if not s.met and (largest is None or s.devices > largest.devices)),
                   key=lambda s: s.devices, default=None)
    decisive = breaking or (max(by_size.values(), key=lambda s: s.devices) if by_size else None)
    return LadderVerdict(largest, breaking, decisive, by_size.get(TARGET_DEVICES))


def mlflow_share(step: StepResult) -> float | None:
    """The share of a cached step's lookups that MLflow answered (a miss or an expired entry refreshed)."""
    total = sum(step.cache_status.values())
    return (step.cache_status.get("MISS", 0) + step.cache_status.get("EXPIRED", 0)) / total if total else None


def ladder_text(v: LadderVerdict) -> str:
    largest, breaking = v.largest, v.breaking
    parts = [f"{largest.devices} devices met the target (p99 {largest.p99_ms:.0f} ms, 0 errors, "
             f"{largest.achieved_lookups_per_s:.0f} lookups/s)" if largest else "no fleet size met the target"]
    if largest is not None and (share := mlflow_share(largest)) is not None:
        parts[0] += f", {100 * share:.2g}% of them answered by MLflow"
    if v.at_target is not None and v.at_target is not largest:
        parts.append(f"{TARGET_DEVICES} devices: p99 {v.at_target.p99_ms:.0f} ms, {v.at_target.errors} errors")
    if breaking:
        parts.append(f"breaks at {breaking.devices} devices: p99 {breaking.p99_ms:.0f} ms, {breaking.errors} errors "
                     f"({breaking.offered_lookups_per_s:.0f} lookups/s offered, {breaking.achieved_lookups_per_s:.0f}"
                     " answered)")
    elif v.decisive is not None:
        parts.append(f"did not break within the sizes tried (up to {v.decisive.devices})")
    return "; ".join(parts)


def cache_limits_text(v: LadderVerdict, cache: RunningCache) -> str:
    """What limits the cached fleet: where the CPU went at the breaking (or the largest) step."""
    step = v.decisive
    if step is None or not step.cpu:
        return "not measured"
    cpu = step.cpu
    text = (f"Through the registry cache ({cache.ttl} entries) a lookup costs {step.cpu_ms_per_lookup} ms of CPU on "
            f"the registry side (nginx, MLflow and PostgreSQL together) at {step.devices} devices, "
            f"{'where it broke' if v.breaking else 'the largest size tried'}. There nginx used "
            f"{cpu['cache_pct']:.0f}% of a core, "
            f"MLflow {cpu['server_pct']:.0f}%, PostgreSQL {cpu['postgres_ours_pct']:.0f}%, the load generator "
            f"{cpu['generator_pct']:.0f}% (p99 dispatch lag {step.dispatch_lag_p99_ms:.0f} ms), other processes "
            f"{cpu['others_pct']:.0f}%, of the machine's {cpu['machine_capacity_pct']}%")
    if v.breaking and cpu["generator_pct"] >= max(cpu["cache_pct"], cpu["server_pct"]):
        text += ("; the simulated fleet itself (one Python process opening a connection per poll) is what gives out "
                 "first, not the registry")
    return text + "."


def figure(direct: list[StepResult], cached: list[StepResult], server: FleetServer, cache: RunningCache,
           password_check: dict[str, Any], costs: dict[str, Any], cold: list[dict[str, Any]]) -> dict[str, Any]:
    """Figure 6: the fleet through the registry cache (ours) against the same fleet polling MLflow directly."""
    ours_v, base_v = verdict(cached), verdict(direct)
    ours = ours_v.largest.devices if ours_v.largest else 0
    base = base_v.largest.devices if base_v.largest else 0
    return {
        "id": "6", "name": "the registry under a fleet", "ours": ours,
        "ours_text": (f"through the registry cache (nginx, {cache.ttl} entries) in front of the same MLflow: "
                      + ladder_text(ours_v)),
        "baseline_text": ("the fleet polling MLflow directly (basic-auth, PostgreSQL, as edge boxes did before): "
                          + ladder_text(base_v)),
        "ratio": round(ours / base, 1) if base else None, "target": ">= 1000 devices",
        "met": ours >= TARGET_DEVICES,
        "limits": (cache_limits_text(ours_v, cache) + " Without the cache: "
                   + limits_text(base_v.decisive, base_v.breaking is not None, server, password_check, costs, cold)),
    }


