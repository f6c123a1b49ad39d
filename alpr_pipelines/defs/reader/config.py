"""Run configuration of the plate reader's chain: where its crops come from and how it trains."""

from typing import Literal

import dagster as dg
from pydantic import Field

from alpr_pipelines.lib.reader_model import ReaderParams
from alpr_pipelines.lib.recipes import READER_DATA

_DEFAULTS = ReaderParams()


class ReaderDatasetConfig(dg.Config):
    """Where the reader's plate crops come from.

    - ``synthetic`` (default): ``train_plates`` and ``val_plates`` crops of generated plates as the plate detector
      hands them over (``synth.plate_close_up``), from scene streams the golden set never draws;
    - ``csv``: a folder of crops (``images_dir``) and a labels file (``labels_csv``, rows ``image,text[,top_line]``);
    - ``boxes``: whole images with plate boxes and their text: a COCO JSON file (a text of two lines names its top
      line), or a folder of images with YOLO labels whose lines end in the text (``boxes``).

    User data is split into train and val by a hash of each crop (``val_share`` to val).
    """

    source: Literal["synthetic", "csv", "boxes"] = "synthetic"
    seed: int = 0
    train_plates: int = READER_DATA.train_plates
    val_plates: int = READER_DATA.val_plates
    labels_csv: str | None = None
    images_dir: str | None = None
    boxes: str | None = None
    val_share: float = 0.1


class ReaderTrainConfig(dg.Config):
    """Per-run knobs of the reader's training (``lib.reader_model.ReaderParams``)."""

    epochs: int = Field(default=_DEFAULTS.epochs, description="Training epochs")
    batch: int = Field(default=_DEFAULTS.batch, description="Batch size")
    lr: float = Field(default=_DEFAULTS.lr, description="Peak learning rate (one-cycle schedule)")
    weight_decay: float = Field(default=_DEFAULTS.weight_decay, description="AdamW weight decay")
    head: Literal["ctc", "slots", "attn"] = Field(
        default="ctc", description="ctc: a prediction per column and text line (CTC); slots: a classifier per "
        "character position; attn: a learned query per position (docs/decisions.md, 'Plate reader')")
    channels: list[int] = Field(default_factory=lambda: list(_DEFAULTS.channels),
                                description="The four convolution stages' widths")
    input_size: list[int] = Field(default_factory=lambda: list(_DEFAULTS.input_size),
                                  description="Crop height and width the reader reads at (multiples of 16)")
    ctc_stride: int = Field(default=_DEFAULTS.ctc_stride, description="Input columns per CTC step, 4 or 8 (ctc "
                            "head): 8 trains faster but leaves no room for a blank between two equal characters")
    residual_blocks: list[int] = Field(
        default_factory=lambda: list(_DEFAULTS.residual_blocks),
        description="Residual blocks after the third and after the fourth convolution stage (0-4 each)")
    precision: Literal["auto", "fp32"] = Field(
        default=_DEFAULTS.precision, description="auto: bfloat16 autocast on a CPU that computes bfloat16 "
        "natively (AMX, AVX512-BF16), else float32; fp32: float32 everywhere")
    seed: int = Field(default=_DEFAULTS.seed, description="Training seed")
    augment: bool = Field(default=_DEFAULTS.augment, description="Random shifts, scale, blur, contrast and noise")
    threads: int = Field(default=_DEFAULTS.threads, description="CPU threads; 0: every core this process may use")
    device: str = Field(default=_DEFAULTS.device, description="CUDA device id, 'cpu', or '' for CUDA 0 when present")
    restart: bool = Field(default=False, description="Start over when a crashed training's checkpoint is gone")
    force: bool = Field(default=False, description="Retrain even when dataset and config are unchanged")

    def to_params(self) -> ReaderParams:
        for name, size, what in (("channels", 4, "the four stages' widths"), ("input_size", 2, "a height and a width"),
                                 ("residual_blocks", 2, "the counts after the third and the fourth stage")):
            if len(getattr(self, name)) != size:
                raise ValueError(f"{name} takes {size} values ({what}), got {getattr(self, name)}")
        c1, c2, c3, c4 = self.channels
        height, width = self.input_size
        return ReaderParams(epochs=self.epochs, batch=self.batch, lr=self.lr, weight_decay=self.weight_decay,
                            head=self.head,
                            channels=(c1, c2, c3, c4), input_size=(height, width), seed=self.seed,
                            augment=self.augment, threads=self.threads, device=self.device,
                            ctc_stride=self.ctc_stride, precision=self.precision,
                            residual_blocks=(self.residual_blocks[0], self.residual_blocks[1]))
