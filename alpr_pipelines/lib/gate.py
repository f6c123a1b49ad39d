"""The promotion gate: a pure policy over evaluation numbers. No I/O, no Dagster, no MLflow.

A candidate reaches Production only when every rule passes; the decision lists a readable reason per rule, so a
person can see why without reading code. A failed evaluation never reaches the gate as a score: callers raise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

CLASS_AP50_PREFIX = "AP50/"  # per-class AP50 in the metrics the gate reads: ``AP50/car``, ``AP50/bus`` ...
# (policy field, metric, floor or ceiling), in the order the decision lists them
BOUNDS = (("min_map50", "mAP50", "floor"), ("min_map50_95", "mAP50-95", "floor"),
          ("min_exact_match", "exact_match", "floor"), ("max_cer", "cer", "ceiling"))



@dataclass(frozen=True)
class GatePolicy:
    """Rules for one model.

    A floor (or, for ``max_cer``, a ceiling) applies to every candidate whose metrics have its metric, and a floor
    set above its default demands the metric: detectors report mAP, the plate reader exact match and CER.

    Attributes:
        min_map50: floor on the candidate's mAP50 on the golden set: a detector under it misses or misplaces too
            many objects to serve, whatever it is compared with.
        min_map50_95: floor on the candidate's mAP50-95 (how tight its boxes are).
        min_class_ap50: floor on every class's AP50 (``AP50/<class>`` metrics): a vehicle detector that cannot find
            buses does not ship because it finds cars well.
        min_exact_match: floor on the share of golden plates a reader reads exactly (every character).
        max_cer: ceiling on a reader's character error rate.
        score: the metric champion and challenger are compared on (higher is better).
        max_regression: the candidate may score at most this much below the champion's ``score`` (absolute).
        latency_budget_ms_p95: the candidate's p95 CPU latency at the deployment image size must stay within this.
        require_parity: the ONNX-vs-PyTorch parity check must have passed.
    """

    min_map50: float = 0.0
    min_map50_95: float = 0.0
    min_class_ap50: float = 0.0
    min_exact_match: float = 0.0
    max_cer: float = 1.0
    score: str = "mAP50-95"
    max_regression: float = 0.005
    latency_budget_ms_p95: float = 500.0
    require_parity: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, overrides: dict[str, Any], source: str) -> GatePolicy:
        """This policy with ``overrides`` (field -> value) applied; ``source`` names where they came from in errors.

        Raises:
            ValueError: an unknown field, or a value of the wrong type.
        """
        fields = self.as_dict()
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise ValueError(f"{source}: unknown gate policy fields {unknown}; known: {', '.join(fields)}")
        merged = dict(fields)
        for name, value in overrides.items():
            expected = type(fields[name])
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected):
                raise ValueError(f"{source}: {name} must be a {expected.__name__}, got {value!r}")
            merged[name] = value
        return GatePolicy(**merged)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)
    first_model: bool = False

    @property
    def verdict(self) -> str:
        return "promoted" if self.promote else "rejected"

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "promote": self.promote, "first_model": self.first_model,
                "reasons": list(self.reasons)}


def decide(candidate: dict[str, float], champion: dict[str, float] | None, parity_passed: bool | None,
           policy: GatePolicy) -> Decision:
    """Decide whether ``candidate`` replaces ``champion`` (None: no Production version yet).

    Args:
        candidate: the candidate's headline metrics (a detector's ``mAP50``, ``mAP50-95``, ``AP50/<class>`` for
            every class; a reader's ``exact_match``, ``cer``; both ``latency_ms_p95``).
        champion: the current Production version's metrics from the same evaluator and golden set, or None.
        parity_passed: the export parity check's outcome (None: unknown, treated as not passed when required).
        policy: the model's rules.
    """
    defaults = GatePolicy()
    bounds = [(metric, getattr(policy, field_name), getattr(defaults, field_name), kind)
              for field_name, metric, kind in BOUNDS]
    demanded = [m for m, value, default, _ in bounds if value != default]
    for key in (policy.score, "latency_ms_p95", *demanded):
        if key not in candidate:
            raise ValueError(f"candidate metrics lack {key!r}; evaluate the candidate before gating it")
    ok: list[bool] = []
    reasons: list[str] = []

    def rule(passed: bool, text: str) -> None:
        ok.append(passed)
        reasons.append(("PASS " if passed else "FAIL ") + text)

    for metric, value, _, kind in bounds:
        if metric in candidate:
            got = candidate[metric]
            rule(got >= value if kind == "floor" else got <= value, f"{metric} {got:.4f} vs {kind} {value:.4f}")
    score = candidate[policy.score]
    if policy.min_class_ap50 > 0:
        per_class = {k.split("/", 1)[1]: v for k, v in candidate.items() if k.startswith(CLASS_AP50_PREFIX)}
        if not per_class:
            raise ValueError("candidate metrics lack per-class AP50 (AP50/<class>); evaluate it with this release")
        weakest = min(per_class, key=lambda c: per_class[c])
        rule(per_class[weakest] >= policy.min_class_ap50,
             f"weakest class {weakest} AP50 {per_class[weakest]:.4f} vs floor {policy.min_class_ap50:.4f}")
    if champion is None:
        rule(True, "no Production version yet: first model, judged on the floor, latency and parity alone")
    else:
        if policy.score not in champion:
            raise ValueError(f"champion metrics lack {policy.score!r}; evaluate it with this release")
        best = champion[policy.score]
        delta = score - best
        rule(delta >= -policy.max_regression, f"{policy.score} {score:.4f} vs champion {best:.4f} ({delta:+.4f}, "
             f"tolerance -{policy.max_regression:.4f})")
    latency = candidate["latency_ms_p95"]
    rule(latency <= policy.latency_budget_ms_p95,
         f"p95 latency {latency:.1f} ms vs budget {policy.latency_budget_ms_p95:.1f} ms")
    if policy.require_parity:
        rule(parity_passed is True, "export parity check " + {True: "passed", False: "failed", None: "not run"}[
            parity_passed])
    return Decision(promote=all(ok), reasons=reasons, first_model=champion is None)


# Defaults per model; run config and ALPR_GATE_POLICY override them. The floors reject a detector that does not work
# (an untrained one scores mAP50 near 0), not one a little worse than the recipe's (docs/recipe.md, "Results"). They
# are set for the synthetic golden set: a model of real data judged on it may need its own (README, "Your data").
DEFAULT_POLICIES: dict[str, GatePolicy] = {
    "vehicle": GatePolicy(min_map50=0.80, min_map50_95=0.40, min_class_ap50=0.60, max_regression=0.005,
                          latency_budget_ms_p95=250.0),
    "plate": GatePolicy(min_map50=0.80, min_map50_95=0.40, max_regression=0.005, latency_budget_ms_p95=250.0),
    # The reader's floors reject one that reads clearly worse than the default recipe's (0.80 to 0.83 exact, CER
    # about 0.05 on the golden crops: docs/decisions.md, "Plate reader"; untrained: 0 and near 1). p95 is for one
    # plate read once by the network alone (as the edge reads it, an unsure plate costs seven readings:
    # served_latency_ms_p95 beside it; docs/decisions.md, "The reader's latency budget").
    "ocr": GatePolicy(min_exact_match=0.65, max_cer=0.10, score="exact_match", max_regression=0.005,
                      latency_budget_ms_p95=20.0),
}
