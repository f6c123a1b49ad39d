"""The plate reader: a small PyTorch recognizer trained from scratch (on the CPU, or a CUDA device when there is one),
one MLflow run per training, and its ONNX export with a blocking parity check.

The network is a compact CNN over a 48x192 grey crop (four stages, with a residual block after each of the last
two) with one of three heads (``edge.reader`` decodes them all): ``ctc`` (the default), one prediction per column and
text line through a bidirectional GRU, with CTC loss, so a two-line plate reads top line first; ``slots``, one
classifier per character position over the whole feature map (as fast-plate-ocr does); ``attn``, one learned query per
position attending over the map. Which one the pipeline trains, and why, is measured in docs/decisions.md ("Plate
reader").

A training is known by ``training_key`` (dataset fingerprint, parameters) like a detector's (``lib.training``): a
finished run with the key is reused (its weights checked against the sha256s it recorded), an unfinished one resumes
from its ``last.pt`` (or starts afresh if it ended before its first epoch), else a new run starts. Logged: params; per
epoch at step = epoch ``exact_match``, ``cer`` (validation), ``loss`` (training) and ``val_loss``; artifacts
``model/best.pt``, ``model/last.pt``, ``plots/learning_curve.png``, ``config/args.yaml``. Checkpoints hold tensors and
plain values only, so they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from alpr_pipelines.edge.integrity import sha256_file
from alpr_pipelines.edge.reader import DECODERS, HEADS, READER_TASK, plate_tensor
from alpr_pipelines.lib.datasets import DatasetError
from alpr_pipelines.lib.exports import ExportError, ExportResult
from alpr_pipelines.lib.models import ModelSpec
from alpr_pipelines.lib.reader_data import ReaderDataset, Sample, load_split_crops
from alpr_pipelines.lib.reader_eval import text_scores
from alpr_pipelines.lib.training import (
    COMPLETE_TAG,
    DAGSTER_RUN_TAG,
    DATASET_TAG,
    LEARNING_CURVE,
    MODEL_TAG,
    TRAINING_KEY_TAG,
    WEIGHTS_SHA_TAG,
    EpochMetrics,
    TrainingError,
    TrainingResult,
    fetch_verified_weights,
    find_training_run,
    get_or_create_experiment,
    learning_curve_png,
    metric_history,
    starts_afresh,
    superseded_reason,
    usable_cores,
)

log = logging.getLogger(__name__)
READER_METRICS = ("exact_match", "cer", "loss", "val_loss")
AUX_WEIGHT = 0.5  # the CTC reader's auxiliary per-position loss, in training only
BOTTOM_LINE_BLANK_BIAS = 4.0  # the CTC head's starting bias for the bottom text line's blank (build_network)
PRECISION_TAG = "alpr_training_precision"  # what the run trained in: "bf16-autocast" or "fp32" (ReaderParams.precision)
PARITY_MAX_LOGIT_DIFF = 1e-3  # ONNX Runtime vs PyTorch, on any logit of the parity crops


@dataclass(frozen=True)
class ReaderParams:
    """A reader training's knobs (the defaults are the recipe docs/decisions.md measured). ``channels``: the four
    stages' widths; ``augment``: random shifts, scale, blur, noise and contrast on the fly."""

    epochs: int = 12
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    head: str = "ctc"
    channels: tuple[int, int, int, int] = (16, 32, 64, 96)
    input_size: tuple[int, int] = (48, 192)  # height, width; multiples of 16 (48x192 since 2026-12-06, docs/decisions.md)
    seed: int = 0
    augment: bool = True
    threads: int = 0  # 0: every core this process may use
    device: str = ""  # "cpu", a CUDA device id, or "" for CUDA 0 when present, else the CPU
    ctc_stride: int = 4  # input columns per CTC step (4 or 8): 8 leaves no room for a blank between equal characters
    precision: Literal["auto", "fp32"] = "auto"  # auto: bfloat16 autocast where the CPU has it (cpu_trains_bf16)
    residual_blocks: tuple[int, int] = (1, 1)  # after the third and after the fourth stage (build_network)

    def validate(self) -> None:
        if self.epochs < 1 or self.batch < 1 or not self.lr > 0 or self.weight_decay < 0:
            raise TrainingError(f"epochs and batch must be positive, lr > 0, weight_decay >= 0; got {self}")
        if self.head not in HEADS:
            raise TrainingError(f"reader head {self.head!r} unknown; use one of {', '.join(HEADS)}")
        if len(self.channels) != 4 or any(c < 4 or c > 512 for c in self.channels):
            raise TrainingError(f"channels must be four widths between 4 and 512, got {self.channels}")
        if len(self.residual_blocks) != 2 or any(not 0 <= n <= 4 for n in self.residual_blocks):
            raise TrainingError(f"residual_blocks must be two counts between 0 and 4 (after the third and the fourth "
                                f"stage), got {self.residual_blocks}")
        if self.precision not in ("auto", "fp32"):
            raise TrainingError(f"precision must be 'auto' or 'fp32', got {self.precision!r}")
        h, w = self.input_size
        if self.ctc_stride not in (4, 8):
            raise TrainingError(f"ctc_stride must be 4 or 8 (input columns per CTC step), got {self.ctc_stride}")
        if h % 16 or w % 16 or not 16 <= h <= 256 or not 16 <= w <= 512:
            raise TrainingError(f"input_size must be multiples of 16 (height 16-256, width 16-512), got {h}x{w}")


def reader_training_key(spec: ModelSpec, dataset: ReaderDataset, params: ReaderParams) -> str:
    p = asdict(params)
    p.pop("threads")
    p.pop("device")
    if params.head != "ctc":
        p.pop("ctc_stride")  # only the CTC head has one
    if params.residual_blocks == (0, 0):
        p.pop("residual_blocks")  # the network before they were a setting: its trainings keep their keys
    else:
        p["blocks_start"] = "identity"  # blocks once started at random: those trainings are not reused
    blob = json.dumps({"model": spec.key, "data": dataset.fingerprint, "params": p}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


# --------------------------------------------------------------------------------------------- the network


def build_network(alphabet: str, max_length: int, head: str = "slots",
                  channels: tuple[int, ...] = ReaderParams.channels,
                  input_size: tuple[int, int] = ReaderParams.input_size,
                  ctc_stride: int = ReaderParams.ctc_stride,
                  residual_blocks: tuple[int, int] = ReaderParams.residual_blocks) -> Any:
    """The reader network: (N, 1, height, width) in [0, 1] -> logits (N, positions, len(alphabet) + 1), class 0
    the padding (slots) or the blank (ctc: a position per ``ctc_stride`` columns of the input and per text line,
    top line first). ``residual_blocks``: two-convolution residual blocks after the third stage and after the
    fourth, where the map is small (docs/decisions.md, "Depth or pixels")."""
    import torch
    from torch import nn

    c1, c2, c3, c4 = channels
    n_out = len(alphabet) + 1
    height, width = input_size
    stride = ctc_stride if head == "ctc" else 8  # the feature map's columns: width // stride

    def block(a: int, b: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True))

    class ResidualBlock(nn.Module):
        """Two 3x3 convolutions and a skip, starting as the identity (its last BatchNorm's scale 0): what follows
        a ReLU passes through unchanged until training grows the block."""

        def __init__(self, c: int) -> None:
            super().__init__()
            last = nn.BatchNorm2d(c)
            nn.init.zeros_(last.weight)
            self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                      nn.ReLU(inplace=True), nn.Conv2d(c, c, 3, padding=1, bias=False), last)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x + self.body(x))

    after_third, after_fourth = residual_blocks

    class PlateReaderNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            stem = [block(1, c1), nn.MaxPool2d(2),  # /2
                    block(c1, c2), nn.MaxPool2d(2),  # /4
                    block(c2, c3), block(c3, c3)]
            tail = [nn.MaxPool2d((2, stride // 4)),  # /8 high, /stride wide
                    block(c3, c4)]
            self.features = nn.Sequential(*stem, *tail)
            if head == "slots":
                self.head = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.2),  # /16
                                          nn.Linear(c4 * (height // 16) * (width // 16), max_length * n_out))
            elif head == "attn":
                positions = (height // 8) * (width // 8)
                self.position = nn.Parameter(torch.zeros(1, positions, c4))
                self.queries = nn.Parameter(torch.randn(max_length, c4) * 0.1)
                self.keys, self.values = nn.Linear(c4, c4), nn.Linear(c4, c4)
                self.head = nn.Sequential(nn.LayerNorm(c4), nn.Dropout(0.1), nn.Linear(c4, n_out))
            else:
                # Two predictions per column, one per text line: the sequence reads the top line's across the
                # plate, then the bottom line's (a one-line plate's characters may fall in either, in order, where
                # the labels do not name the top line; where they do, _loss puts them in the top line's).
                self.project = nn.Conv1d(c4 * (height // 8), 128, 1)
                self.context = nn.GRU(128, 64, batch_first=True, bidirectional=True)  # the whole plate per column
                lines = nn.Conv1d(128, 2 * n_out, 1)
                self.head = nn.Sequential(nn.Dropout(0.2), lines)
                # A one-line plate fits either line's predictions. The bottom line's start at blank, so one-line
                # plates are read in the top line's and the alignments agree from the first steps (without it,
                # Russian plates' first letter was learnt in the wrong line, where it cannot be seen).
                with torch.no_grad():
                    assert lines.bias is not None
                    lines.bias[n_out] += BOTTOM_LINE_BLANK_BIAS
                # Training only: a classifier per character position over the whole map, whose plain
                # cross-entropy teaches the features characters long before CTC finds its alignments.
                self.aux = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.2),
                                         nn.Linear(c4 * (height // 16) * (width // (2 * stride)),
                                                   max_length * n_out))
                self.aux_logits: torch.Tensor | None = None
            if after_third or after_fourth:
                # Drawn last from the random stream and starting as identities: the network starts as the one
                # without blocks (same seed, same weights, same function).
                self.features = nn.Sequential(*stem, *(ResidualBlock(c3) for _ in range(after_third)),
                                              *tail, *(ResidualBlock(c4) for _ in range(after_fourth)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.features(x)
            if head == "slots":
                return self.head(f).view(-1, max_length, n_out)
            if head == "attn":
                seq = f.flatten(2).transpose(1, 2) + self.position  # (N, P, C)
                weights = torch.softmax(self.queries @ self.keys(seq).transpose(1, 2) / c4 ** 0.5, dim=-1)
                return self.head(weights @ self.values(seq))
            if self.training:
                self.aux_logits = self.aux(f).view(-1, max_length, n_out)
            n, c, h, w = f.shape
            seq = torch.relu(self.project(f.reshape(n, c * h, w))).permute(0, 2, 1)  # (N, W, 128)
            seq = self.context(seq)[0].permute(0, 2, 1)
            lines = self.head(seq).reshape(n, 2, n_out, w)
            return lines.permute(0, 1, 3, 2).reshape(n, 2 * w, n_out)

    return PlateReaderNet()


def encode_targets(texts: list[str], alphabet: str, max_length: int) -> np.ndarray:
    """Texts -> (N, max_length) class ids, 0-padded (characters are ``alphabet.index + 1``)."""
    index = {ch: i + 1 for i, ch in enumerate(alphabet)}
    out = np.zeros((len(texts), max_length), np.int64)
    for i, text in enumerate(texts):
        out[i, : len(text)] = [index[ch] for ch in text[:max_length]]
    return out


def top_line_lengths(samples: list[Sample]) -> np.ndarray:
    """Each sample's top-line length (its whole text on a one-line plate); -1 where the labels do not say."""
    return np.asarray([len(s.top_line) if s.top_line else -1 for s in samples], np.int64)


def _loss(logits: Any, targets: Any, head: str, top_lengths: Any = None) -> Any:
    """The head's training loss. CTC: with ``top_lengths`` (N,; -1: not known) a crop whose lines are known is
    scored line by line, its top line against the top line's predictions and the rest against the bottom line's,
    so a two-line plate cannot settle on a character in the wrong line (from some starting weights the whole-sequence
    loss never learnt two-line plates: docs/decisions.md, "Which line a character is on"); the rest against the
    whole sequence, top line then bottom, as before. Each crop's loss is divided by its text's length
    (``F.ctc_loss``'s mean)."""
    import torch
    import torch.nn.functional as F  # noqa: N812 - PyTorch's convention

    if head != "ctc":
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    n, steps, _ = logits.shape
    lengths = (targets > 0).sum(1)
    log_probs = logits.log_softmax(-1).permute(1, 0, 2)  # (T, N, C)
    if top_lengths is None:
        t = torch.full((n,), steps, dtype=torch.long)
        return F.ctc_loss(log_probs, targets[targets > 0], t, lengths, blank=0, zero_infinity=True)
    joint = F.ctc_loss(log_probs, targets, torch.full((n,), steps, dtype=torch.long), lengths, blank=0,
                       reduction="none", zero_infinity=True)
    top = torch.where(top_lengths >= 0, top_lengths, lengths).clamp(max=lengths)
    position = torch.arange(targets.shape[1], device=targets.device).expand_as(targets)
    top_targets = torch.where(position < top[:, None], targets, 0)
    shifted = torch.gather(targets, 1, (position + top[:, None]).clamp(max=targets.shape[1] - 1))
    bottom_targets = torch.where(position < (lengths - top)[:, None], shifted, 0)
    half = torch.full((n,), steps // 2, dtype=torch.long)
    # A line whose characters (and a blank between each equal pair) outnumber a line's steps cannot be aligned
    # there: such a crop keeps the whole-sequence loss.
    known = (top_lengths >= 0) & (_ctc_steps(top_targets) <= steps // 2) & (_ctc_steps(bottom_targets) <= steps // 2)
    by_line = (F.ctc_loss(log_probs[: steps // 2], top_targets, half, top, blank=0, reduction="none",
                          zero_infinity=True)
               + F.ctc_loss(log_probs[steps // 2:], bottom_targets, half, lengths - top, blank=0, reduction="none",
                            zero_infinity=True))
    return (torch.where(known, by_line, joint) / lengths.clamp(min=1)).mean()


def _ctc_steps(targets: Any) -> Any:
    """The fewest CTC steps each 0-padded target needs: its characters and a blank between each equal pair."""
    return (targets > 0).sum(1) + ((targets[:, 1:] == targets[:, :-1]) & (targets[:, 1:] > 0)).sum(1)


def augment_batch(x: Any, generator: Any) -> Any:
    """Random shift (up to 5% of each side), scale (0.92-1.08), blur, contrast and noise of a batch (N, 1, H, W)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    n = x.shape[0]
    scale = 1 + (torch.rand(n, generator=generator) - 0.5) * 0.16
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * 0.1
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    blur = torch.rand(n, generator=generator) < 0.2
    if blur.any():
        k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]).view(1, 1, 3, 3) / 16
        x[blur] = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), k)
    gain = 1 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.5
    x = (x - 0.5) * gain + 0.5 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.2
    x = x + torch.randn(x.shape, generator=generator) * torch.rand(n, 1, 1, 1, generator=generator) * 0.06
    return x.clamp(0, 1)


def load_crops(samples: list[Sample], input_size: tuple[int, int]) -> np.ndarray:
    """The samples' crops as the reader sees them, (N, 1, height, width) uint8 (x255), read once into memory."""
    try:
        crops = load_split_crops(samples)
    except DatasetError as exc:
        raise TrainingError(str(exc)) from exc
    out = np.empty((len(crops), 1, *input_size), np.uint8)
    for i in range(0, len(crops), 256):
        out[i: i + 256] = np.round(plate_tensor(crops[i: i + 256], *input_size) * 255)
    return out


def predict_logits(model: Any, crops_u8: np.ndarray, batch: int = 256) -> np.ndarray:
    import torch

    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, len(crops_u8), batch):
            x = torch.from_numpy(crops_u8[i: i + batch]).to(device).float() / 255
            out.append(model(x).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1, 1), np.float32)


# --------------------------------------------------------------------------------------------- training


def _checkpoint(model: Any, optimizer: Any, scheduler: Any, epoch: int, best: float, config: dict) -> dict:
    return {"model": {k: v.cpu() for k, v in model.state_dict().items()}, "optimizer": None if optimizer is None else optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(), "epoch": epoch, "best": best,
            "config": json.dumps(config, sort_keys=True)}


def load_reader_checkpoint(path: Path) -> tuple[Any, dict]:
    """A reader checkpoint -> (network in eval mode, its config: alphabet, max_length, head, channels, ...). A
    checkpoint from before a setting existed loads as the network of then: an 8-column CTC step, no residual
    blocks."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    config = json.loads(ckpt["config"])
    model = build_network(config["alphabet"], config["max_length"], config["head"], tuple(config["channels"]),
                          (config["input_height"], config["input_width"]), config.get("ctc_stride", 8),
                          tuple(config.get("residual_blocks", (0, 0))))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, config


def learning_curve(epochs: list[EpochMetrics], path: Path, title: str) -> Path:
    """The reader's learning curve: validation exact match and CER, training and validation loss, by epoch."""
    return learning_curve_png(epochs, path, title, ("exact_match", "cer"), ("loss", "val_loss"))


def train_reader(
    spec: ModelSpec,
    dataset: ReaderDataset,
    params: ReaderParams,
    client: MlflowClient,
    experiment: str,
    work_dir: Path,
    dagster_run_id: str | None = None,
    restart: bool = False,
    force_nonce: str = "",
    on_epoch: Callable[[EpochMetrics], None] | None = None,
) -> TrainingResult:
    """Train the plate reader on ``dataset`` (or reuse/resume; see the module) and log it to MLflow.

    Raises:
        TrainingError: bad parameters, or an unfinished training that cannot resume (``lib.training.starts_afresh``)
            and ``restart`` is False.
    """
    import torch

    params.validate()
    steps = 2 * (params.input_size[1] // params.ctc_stride)
    if params.head == "ctc" and steps < 2 * dataset.max_length + 1:
        raise TrainingError(f"a CTC reader {params.input_size[1]} px wide predicts {steps} steps, too few for texts of "
                            f"{dataset.max_length} characters (it needs {2 * dataset.max_length + 1}); widen "
                            "input_size or use ctc_stride 4")
    key = reader_training_key(spec, dataset, params)
    if force_nonce:
        key = hashlib.sha256(f"{key}:{force_nonce}".encode()).hexdigest()[:20]
    experiment_id = get_or_create_experiment(client, experiment)
    run_dir = (work_dir / spec.key / key).resolve()
    weights = run_dir / "weights"
    best_pt, last_pt = weights / "best.pt", weights / "last.pt"
    existing = find_training_run(client, experiment_id, key)
    if existing is None and run_dir.exists():
        shutil.rmtree(run_dir)  # leftovers no MLflow run knows of: never resumed into
    if existing is not None and existing.info.status == "FINISHED" and existing.data.tags.get(COMPLETE_TAG) == "true":
        if best_pt.is_file() or fetch_verified_weights(client, existing, weights, run_dir / "download"):
            return _result(client, existing.info.run_id, experiment_id, key, run_dir, reused=True)
        client.set_tag(existing.info.run_id, "alpr_superseded", "its weights could not be verified; retrained")
        existing = None
        shutil.rmtree(run_dir, ignore_errors=True)
    afresh = starts_afresh(existing, last_pt.is_file(), restart, "reader", last_pt)
    config = {"alphabet": dataset.alphabet, "max_length": dataset.max_length, "head": params.head,
              "channels": list(params.channels), "input_height": params.input_size[0],
              "input_width": params.input_size[1], "ctc_stride": params.ctc_stride,
              "residual_blocks": list(params.residual_blocks)}
    tags = {TRAINING_KEY_TAG: key, DATASET_TAG: dataset.fingerprint, MODEL_TAG: spec.registered_name,
            "mlflow.runName": f"{spec.key}-{key[:8]}", **({DAGSTER_RUN_TAG: dagster_run_id} if dagster_run_id else {})}
    if existing is None or afresh:
        if existing is not None:
            client.set_tag(existing.info.run_id, "alpr_superseded", superseded_reason(restart))
        run_id = client.create_run(experiment_id, tags=tags).info.run_id
        logged = {**{k: v for k, v in asdict(params).items() if k != "threads"}, "batch_size": params.batch,
                  "learning_rate": params.lr, "data_fingerprint": dataset.fingerprint, "model_name": spec.registered_name,
                  "alphabet": dataset.alphabet, "max_length": dataset.max_length, "train_images": len(dataset.splits["train"]),
                  "val_images": len(dataset.splits["val"])}
        client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in logged.items()])
    else:
        run_id = existing.info.run_id
        client.update_run(run_id, status="RUNNING")
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items() if k != "mlflow.runName"])

    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(params.threads or usable_cores())
        rate = _fit(client, run_id, dataset, params, config, weights, on_epoch)
        learning_curve(metric_history(client, run_id, READER_METRICS), run_dir / LEARNING_CURVE,
                       spec.registered_name)
        (run_dir / "args.yaml").write_text(yaml.safe_dump(
            {**asdict(params), "channels": list(params.channels), "input_size": list(params.input_size), **config},
            allow_unicode=True, sort_keys=True))
        for name in ("best.pt", "last.pt"):
            client.set_tag(run_id, WEIGHTS_SHA_TAG.format(name), sha256_file(weights / name))
            client.log_artifact(run_id, str(weights / name), "model")
        client.log_artifact(run_id, str(run_dir / LEARNING_CURVE), "plots")
        client.log_artifact(run_id, str(run_dir / "args.yaml"), "config")
        client.set_tag(run_id, COMPLETE_TAG, "true")
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    finally:
        torch.set_num_threads(threads_before)
    return _result(client, run_id, experiment_id, key, run_dir, reused=False, images_per_second=rate)


def trainable_network(params: ReaderParams, alphabet: str, max_length: int, device: Any = "cpu") -> tuple[Any, Any]:
    """A fresh network of ``params`` on ``device`` (channels-last, as oneDNN prefers) and its AdamW optimizer: what
    each training starts from."""
    import torch

    model = build_network(alphabet, max_length, params.head, params.channels, params.input_size,
                          params.ctc_stride, params.residual_blocks).to(device, memory_format=torch.channels_last)
    return model, torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)


def train_step(model: Any, optimizer: Any, x: Any, target: Any, head: str, bf16: bool,
               top_lengths: Any = None) -> float:
    """One optimizer step on a batch; returns its loss. With ``bf16`` the network runs under the CPU's bfloat16
    autocast (a model on a CUDA device is not affected: it trains in float32); weights, gradients and losses stay
    float32. ``top_lengths``: see :func:`_loss`."""
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(x.contiguous(memory_format=torch.channels_last))
    loss = _loss(logits.float(), target, head, top_lengths)
    if head == "ctc":  # the auxiliary per-position loss (see build_network)
        loss = loss + AUX_WEIGHT * _loss(model.aux_logits.float(), target, "slots")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _fit(client: MlflowClient, run_id: str, dataset: ReaderDataset, params: ReaderParams, config: dict,
         weights: Path, on_epoch: Callable[[EpochMetrics], None] | None) -> float | None:
    """The epochs still due (from ``last.pt`` when it is there); returns training images per second."""
    import torch

    from alpr_pipelines.lib.training import resolve_device

    torch.manual_seed(params.seed)
    generator = torch.Generator().manual_seed(params.seed)
    name = resolve_device(params.device)
    device = torch.device("cpu" if name == "cpu" else f"cuda:{name}" if name.isdigit() else name)
    model, optimizer = trainable_network(params, dataset.alphabet, dataset.max_length, device)
    bf16 = params.precision == "auto" and device.type == "cpu" and cpu_trains_bf16()
    used, before = "bf16-autocast" if bf16 else "fp32", client.get_run(run_id).data.tags.get(PRECISION_TAG)
    if before and not before.endswith(used):  # resumed on another machine: say both
        used = f"{before}, then {used}"
    client.set_tag(run_id, PRECISION_TAG, used)
    if bf16:
        log.info("training the reader with bfloat16 autocast (this CPU computes bfloat16 natively)")
    train_x = torch.from_numpy(load_crops(dataset.splits["train"], params.input_size))
    train_y = torch.from_numpy(encode_targets([s.text for s in dataset.splits["train"]], dataset.alphabet,
                                              dataset.max_length))

    def known_tops(split: str) -> Any:
        """The split's top-line lengths, or None where no crop names its top line (the whole-sequence loss): decided
        once here, not per batch on the device."""
        tops = torch.from_numpy(top_line_lengths(dataset.splits[split]))
        return tops if bool((tops >= 0).any()) else None

    train_top, val_top = known_tops("train"), known_tops("val")  # val: the loss as training computes it
    val_x = load_crops(dataset.splits["val"], params.input_size)
    val_texts = [s.text for s in dataset.splits["val"]]
    val_y = torch.from_numpy(encode_targets(val_texts, dataset.alphabet, dataset.max_length))
    steps = (len(train_x) + params.batch - 1) // params.batch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=params.lr, total_steps=params.epochs * steps,
                                                    pct_start=0.1)
    start, best = 0, -1.0
    last_pt = weights / "last.pt"
    if last_pt.is_file():
        ckpt = torch.load(last_pt, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start, best = int(ckpt["epoch"]), float(ckpt["best"])
        generator.manual_seed(params.seed + start)
        log.info("resuming the reader's training at epoch %d of %d", start + 1, params.epochs)
    weights.mkdir(parents=True, exist_ok=True)
    decode = DECODERS[params.head]
    started, trained = time.perf_counter(), 0
    for epoch in range(start + 1, params.epochs + 1):
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        total = 0.0
        for i in range(steps):
            idx = order[i * params.batch: (i + 1) * params.batch]
            x = train_x[idx].float() / 255
            if params.augment:
                x = augment_batch(x, generator)
            loss = train_step(model, optimizer, x.to(device), train_y[idx].to(device), params.head, bf16,
                              None if train_top is None else train_top[idx].to(device))
            scheduler.step()
            total += loss * len(idx)
            trained += len(idx)
        logits = predict_logits(model, val_x)
        with torch.inference_mode():
            val_loss = float(_loss(torch.from_numpy(logits), val_y, params.head, val_top))
        exact, cer = text_scores([r.text for r in decode(logits, dataset.alphabet)], val_texts)
        values = {"exact_match": exact, "cer": cer, "loss": total / len(train_x), "val_loss": val_loss}
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, epoch) for k, v in values.items()])
        score = epoch_score(values)
        if score > best:
            best = score
            _save(_checkpoint(model, None, None, epoch, best, config), weights / "best.pt")
        _save(_checkpoint(model, optimizer, scheduler, epoch, best, config), last_pt)
        if on_epoch is not None:
            on_epoch(EpochMetrics(epoch, values))
    if not (weights / "best.pt").is_file():
        raise TrainingError(f"the reader's training ended without writing {weights / 'best.pt'}")
    elapsed = time.perf_counter() - started
    return trained / elapsed if trained and elapsed > 0 else None


def cpu_trains_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX): the reader then trains under bfloat16
    autocast, weights and losses in float32 (a third more crops a second: docs/benchmarks.md, "Investigations");
    elsewhere bfloat16 is emulated and slower, so training stays in float32."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return False
    capabilities = torch.cpu.get_capabilities()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def epoch_score(values: dict[str, float]) -> float:
    """How ``best.pt`` is chosen: exact match first, the character error rate breaking ties."""
    return values.get("exact_match", 0.0) + (1 - values.get("cer", 1.0)) * 1e-3


def _save(obj: dict, path: Path) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _result(client: MlflowClient, run_id: str, experiment_id: str, key: str, run_dir: Path, reused: bool,
            images_per_second: float | None = None) -> TrainingResult:
    """Final metrics are the best epoch's (by validation exact-match), the epoch ``best.pt`` holds."""
    epochs = metric_history(client, run_id, READER_METRICS)
    best = max(epochs, key=lambda e: epoch_score(e.values), default=None)
    curve = run_dir / LEARNING_CURVE
    if not curve.is_file() and epochs:
        learning_curve(epochs, curve, client.get_run(run_id).data.tags.get(MODEL_TAG, key))
    weights = run_dir / "weights"
    return TrainingResult(run_id, experiment_id, key, weights / "best.pt", weights / "last.pt", run_dir, reused,
                          epochs, best.values if best else {}, images_per_second, curve if curve.is_file() else None)


# --------------------------------------------------------------------------------------------- export


def export_reader_onnx(best_pt: Path, out_dir: Path, opset: int = 17) -> ExportResult:
    """ONNX of a reader checkpoint, dynamic batch, FP32, with everything the edge needs in ``metadata_props``
    (``alpr_task``, ``alphabet``, ``max_length``, ``head``, ``input_height``, ``input_width``). Written to a temporary
    name and renamed.

    Raises:
        ExportError: the checkpoint does not load or the export fails.
    """
    import onnx
    import torch

    try:
        model, config = load_reader_checkpoint(best_pt)
    except Exception as exc:
        raise ExportError(f"cannot load the reader checkpoint {best_pt}: {exc}") from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / "plate_reader.onnx"
    tmp = out_dir / ".plate_reader.partial.onnx"
    started = time.perf_counter()
    try:
        dummy = torch.zeros(1, 1, config["input_height"], config["input_width"])
        torch.onnx.export(model, (dummy,), str(tmp), input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                          dynamo=False)
        proto = onnx.load(str(tmp))
        meta = {"alpr_task": READER_TASK, "alphabet": config["alphabet"], "max_length": str(config["max_length"]),
                "head": config["head"], "input_height": str(config["input_height"]),
                "input_width": str(config["input_width"])}
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        os.replace(tmp, dest)
    except Exception as exc:
        raise ExportError(f"ONNX export of the reader failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(format="onnx", path=str(dest), sha256=sha256_file(dest), size_bytes=dest.stat().st_size,
                        details={"head": config["head"], "max_length": config["max_length"],
                                 "alphabet": config["alphabet"], "opset": opset,
                                 "input": [config["input_height"], config["input_width"]],
                                 "seconds": round(time.perf_counter() - started, 2)})


@dataclass(frozen=True)
class ReaderParity:
    passed: bool
    crops: int
    same_text: int
    max_logit_diff: float
    tolerance: float = PARITY_MAX_LOGIT_DIFF

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def reader_parity(best_pt: Path, onnx_path: Path, crops: list[np.ndarray]) -> ReaderParity:
    """PyTorch and ONNX Runtime on the same crops: every decoded string the same and every logit within
    :data:`PARITY_MAX_LOGIT_DIFF`."""
    import torch

    from alpr_pipelines.edge.reader import OnnxPlateReader

    model, config = load_reader_checkpoint(best_pt)
    reader = OnnxPlateReader(onnx_path, providers=["CPUExecutionProvider"])
    tensor = plate_tensor(crops, config["input_height"], config["input_width"])
    with torch.inference_mode():
        theirs = model(torch.from_numpy(tensor)).numpy()
    ours = reader.session.run(None, {reader.input_name: tensor})[0]
    decode = DECODERS[config["head"]]
    same = sum(a.text == b.text for a, b in zip(decode(theirs, config["alphabet"]), decode(ours, config["alphabet"]),
                                                 strict=True))
    diff = float(np.abs(theirs - ours).max()) if len(crops) else 0.0
    return ReaderParity(passed=same == len(crops) and diff <= PARITY_MAX_LOGIT_DIFF and len(crops) > 0,
                        crops=len(crops), same_text=same, max_logit_diff=diff)


MAX_EXACT_DROP = 0.005  # an INT8 reader may read at most half a point fewer validation plates exactly


def quantize_reader_int8(fp32_onnx: Path, calibration: list[np.ndarray], val_crops: list[np.ndarray],
                         val_texts: list[str], out_dir: Path, max_drop: float = MAX_EXACT_DROP) -> ExportResult:
    """A statically quantized (QDQ, per-channel, 7-bit weights as ``lib.quantize`` for the same CPUs) copy of the
    reader, published only when its exact-match on ``val_crops``, read as the edge reads, is within ``max_drop`` of
    FP32's; else a skipped result with both scores.

    Raises:
        ExportError: quantization itself failed (the FP32 model is unaffected).
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from alpr_pipelines.edge.reader import OnnxPlateReader
    from alpr_pipelines.edge.reread import RereadUnsure
    from alpr_pipelines.lib.reader_eval import read_in_batches, text_scores

    fp32 = OnnxPlateReader(fp32_onnx, providers=["CPUExecutionProvider"])
    if not calibration or not val_crops:
        raise ExportError("INT8 calibration needs the training crops and the validation crops; one is empty")
    tensors = [plate_tensor([c], fp32.height, fp32.width) for c in calibration[:: max(1, len(calibration) // 64)]]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{fp32.input_name: t} for t in tensors])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / "plate_reader.int8.onnx"
    started = time.perf_counter()
    tmp_dir = Path(tempfile.mkdtemp(prefix=".int8-", dir=out_dir))
    try:
        pre, out = tmp_dir / "pre.onnx", tmp_dir / "int8.onnx"
        quant_pre_process(str(fp32_onnx), str(pre))
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True)
        import onnx

        model = onnx.load(str(out))
        have = {p.key for p in model.metadata_props}
        for p in onnx.load(str(fp32_onnx)).metadata_props:
            if p.key not in have:
                model.metadata_props.add(key=p.key, value=p.value)
        model.metadata_props.add(key="alpr_precision", value="int8")
        onnx.save(model, str(out))
        int8 = OnnxPlateReader(out, providers=["CPUExecutionProvider"])

        def exact(reader: OnnxPlateReader) -> float:  # as the edge reads: the unsure plates again as copies
            texts = [r.text for r in read_in_batches(RereadUnsure(reader), val_crops, 64)]
            return text_scores(texts, val_texts)[0]

        scores = {"fp32_exact_match": exact(fp32), "int8_exact_match": exact(int8)}
        drop = scores["fp32_exact_match"] - scores["int8_exact_match"]
        if drop > max_drop:
            return ExportResult(format="onnx_int8", path=None, details=scores,
                                skipped_reason=f"skipped: exact match drops {drop:.4f} (> {max_drop}) on validation")
        os.replace(out, dest)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"INT8 quantization of the reader failed: {exc}") from exc
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return ExportResult(format="onnx_int8", path=str(dest), sha256=sha256_file(dest), size_bytes=dest.stat().st_size,
                        details={**scores, "seconds": round(time.perf_counter() - started, 2)})
