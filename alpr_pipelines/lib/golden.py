"""The frozen golden evaluation set, in one place: what it is, where it lives, and how it is made.

Two splits per model, each the model's own view (``lib.views``) of scenes that training never draws:

- ``golden``: the in-distribution split (scene stream "golden"); the gate reads its scores;
- ``shift``: the held-out split (stream "golden_shift"): plates in formats, colours and a font training never sees
  (``lib.plates``). Its scores are reported beside the golden ones, to tell generalisation from memorisation.

The plate reader's splits are plate crops (``lib.reader_data``) of the same two streams' close-ups
(``synth.plate_close_up``), cut as the edge cuts a detected plate.

Both are deterministic: the same :class:`GoldenSpec` gives the same images on any machine (plates of these streams
are drawn only in shipped fonts, never in fonts found on the machine).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from alpr_pipelines.lib.datasets import validate_dataset, write_synthetic_views
from alpr_pipelines.lib.models import DETECTOR_SPECS, MODEL_SPECS
from alpr_pipelines.lib.reader_data import validate_reader_dataset, write_synthetic_reader_dataset
from alpr_pipelines.lib.synth import GENERATOR_VERSION


@dataclass(frozen=True)
class GoldenSpec:
    """The golden set's identity: its seed, how many scenes each split has, and their size; how many plate crops
    the reader's golden and shift splits have."""

    seed: int = 20241101
    scenes: int = 200
    width: int = 640
    height: int = 384
    plates: int = 600
    shift_plates: int = 300

    def key(self) -> str:
        blob = json.dumps({"generator": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class GoldenSplits:
    """One model's golden data: each split's data YAML (the reader's: its crops folder) and content fingerprint."""

    data_yaml: Path
    fingerprint: str
    shift_yaml: Path
    shift_fingerprint: str

    @property
    def key(self) -> str:
        """Identity of both splits together: an evaluation cached under another key is stale."""
        return hashlib.sha256(f"{self.fingerprint}:{self.shift_fingerprint}".encode()).hexdigest()[:32]

    def as_dict(self) -> dict[str, str]:
        return {"data_yaml": str(self.data_yaml), "fingerprint": self.fingerprint,
                "shift_yaml": str(self.shift_yaml), "shift_fingerprint": self.shift_fingerprint}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> GoldenSplits:
        return cls(Path(d["data_yaml"]), d["fingerprint"], Path(d["shift_yaml"]), d["shift_fingerprint"])


def golden_dir(root: Path, spec: GoldenSpec) -> Path:
    """Where the golden set of ``spec`` lives under ``root``: a folder per spec, never rewritten once complete."""
    return root / spec.key()


def write_golden(root: Path, spec: GoldenSpec = GoldenSpec()) -> dict[str, GoldenSplits]:
    """Model key -> its golden splits under ``root`` (generated once, then reused), validated and fingerprinted.

    Raises:
        DatasetValidationError: a split fails validation (its files were changed by hand).
    """
    out = golden_dir(root, spec)
    in_dist = write_synthetic_views(out / "golden", DETECTOR_SPECS.values(), spec.seed, {"val": spec.scenes},
                                    spec.width, spec.height, purpose="golden")
    shift = write_synthetic_views(out / "shift", DETECTOR_SPECS.values(), spec.seed, {"val": spec.scenes},
                                  spec.width, spec.height, purpose="golden_shift")
    splits = {}
    for key, model in MODEL_SPECS.items():
        if model.task == "read":
            crops = write_synthetic_reader_dataset(out / "reader_golden", spec.seed, 0, spec.plates,
                                                   purposes=("golden", "golden"), top_lines=False)
            shift_crops = write_synthetic_reader_dataset(out / "reader_shift", spec.seed, 0, spec.shift_plates,
                                                         purposes=("golden_shift", "golden_shift"), top_lines=False)
            splits[key] = GoldenSplits(crops, validate_reader_dataset(crops, ("val",)).fingerprint, shift_crops,
                                       validate_reader_dataset(shift_crops, ("val",)).fingerprint)
            continue
        golden_fp = validate_dataset(in_dist[key], model.names, required_splits=("val",)).fingerprint
        shift_fp = validate_dataset(shift[key], model.names, required_splits=("val",)).fingerprint
        splits[key] = GoldenSplits(in_dist[key], golden_fp, shift[key], shift_fp)
    return splits
