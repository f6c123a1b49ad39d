"""The plate reader's training against a real `mlflow server`: one run per training, resumed after a crash, reused
when nothing changed; its ONNX export agrees with PyTorch."""

import cv2
import pytest

from alpr_pipelines.lib.models import OCR
from alpr_pipelines.lib.reader_data import validate_reader_dataset, write_synthetic_reader_dataset
from alpr_pipelines.lib.reader_model import (
    PRECISION_TAG,
    ReaderParams,
    cpu_trains_bf16,
    export_reader_onnx,
    load_reader_checkpoint,
    reader_parity,
    reader_training_key,
    train_reader,
)
from alpr_pipelines.lib.training import TrainingError, resolve_device

TINY = ReaderParams(epochs=3, batch=8, channels=(4, 8, 8, 8), seed=1, residual_blocks=(1, 1))  # blocks: exported too


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    root = write_synthetic_reader_dataset(tmp_path_factory.mktemp("reader-data"), seed=11, train=24, val=8)
    return validate_reader_dataset(root)


def test_a_crashed_training_resumes_in_the_same_run_and_a_finished_one_is_reused(mlflow_server, mlflow_client,
                                                                                 crops, tmp_path):
    def crash_at_2(epoch):
        if epoch.epoch == 2:
            raise RuntimeError("simulated crash in epoch 2")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train_reader(OCR, crops, TINY, mlflow_client, "reader-tests", tmp_path, on_epoch=crash_at_2)
    (crashed,) = mlflow_client.search_runs([mlflow_client.get_experiment_by_name("reader-tests").experiment_id])
    assert crashed.info.status == "FAILED"

    resumed = train_reader(OCR, crops, TINY, mlflow_client, "reader-tests", tmp_path)
    assert resumed.run_id == crashed.info.run_id and not resumed.reused
    assert [m.step for m in mlflow_client.get_metric_history(resumed.run_id, "exact_match")] == [1, 2, 3]
    run = mlflow_client.get_run(resumed.run_id)
    assert run.info.status == "FINISHED" and run.data.params["epochs"] == "3"
    _, config = load_reader_checkpoint(resumed.best_pt)  # loads with weights_only=True: no pickled code in a checkpoint
    assert config["alphabet"] == crops.alphabet and config["max_length"] == crops.max_length

    again = train_reader(OCR, crops, TINY, mlflow_client, "reader-tests", tmp_path / "elsewhere")
    assert again.reused and again.run_id == resumed.run_id  # fetched from the artifact store, hashes checked
    assert again.best_pt.read_bytes() == resumed.best_pt.read_bytes()


def test_a_lost_checkpoint_is_not_silently_restarted(mlflow_server, mlflow_client, crops, tmp_path):
    params = ReaderParams(epochs=2, batch=8, channels=(4, 8, 8, 8), seed=2)

    def crash(epoch):
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        train_reader(OCR, crops, params, mlflow_client, "reader-tests-lost", tmp_path, on_epoch=crash)
    for f in tmp_path.rglob("last.pt"):
        f.unlink()
    with pytest.raises(TrainingError, match="cannot resume"):
        train_reader(OCR, crops, params, mlflow_client, "reader-tests-lost", tmp_path)
    restarted = train_reader(OCR, crops, params, mlflow_client, "reader-tests-lost", tmp_path, restart=True)
    assert [m.step for m in mlflow_client.get_metric_history(restarted.run_id, "loss")] == [1, 2]


def test_a_training_stopped_before_its_first_epoch_starts_afresh(mlflow_server, mlflow_client, crops, tmp_path,
                                                                 monkeypatch):
    """Ctrl-C during the first epoch (here: at its second training step) wrote no checkpoint, so the next training
    starts a new run without `restart` (the lost checkpoint of a run that logged an epoch still fails loudly: the test
    above)."""
    import alpr_pipelines.lib.reader_model as reader_model

    params = ReaderParams(epochs=1, batch=8, channels=(4, 8, 8, 8), seed=3)
    real_step, steps = reader_model.train_step, []

    def stopped_at_the_second(*args, **kwargs):
        steps.append(1)
        if len(steps) == 2:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(reader_model, "train_step", stopped_at_the_second)
        with pytest.raises(KeyboardInterrupt):
            train_reader(OCR, crops, params, mlflow_client, "reader-tests-stopped", tmp_path)
    experiment = mlflow_client.get_experiment_by_name("reader-tests-stopped").experiment_id
    (first,) = mlflow_client.search_runs([experiment])
    assert len(steps) == 2 and first.info.status == "FAILED" and not first.data.metrics
    assert not list(tmp_path.rglob("last.pt"))
    fresh = train_reader(OCR, crops, params, mlflow_client, "reader-tests-stopped", tmp_path)
    assert fresh.run_id != first.info.run_id
    assert [m.step for m in mlflow_client.get_metric_history(fresh.run_id, "loss")] == [1]
    superseded = mlflow_client.get_run(first.info.run_id).data.tags["alpr_superseded"]
    assert superseded == "stopped before its first epoch ended; started afresh"


def test_the_onnx_reader_reads_what_pytorch_reads(mlflow_server, mlflow_client, crops, tmp_path):
    result = train_reader(OCR, crops, TINY, mlflow_client, "reader-tests", tmp_path)
    trained_in = mlflow_client.get_run(result.run_id).data.tags[PRECISION_TAG]
    on_cpu = resolve_device(TINY.device) == "cpu"
    assert trained_in == ("bf16-autocast" if on_cpu and cpu_trains_bf16() else "fp32")  # float32 weights either way
    exported = export_reader_onnx(result.best_pt, tmp_path / "onnx")
    images = [cv2.imread(str(s.image)) for s in crops.splits["val"]]
    report = reader_parity(result.best_pt, tmp_path / "onnx" / "plate_reader.onnx", images)
    assert report.passed and report.same_text == len(images), report
    assert exported.details and exported.details["alphabet"] == crops.alphabet


@pytest.mark.parametrize(("stride", "residual"), [(4, (1, 2)), (4, None), (8, None)])
def test_the_ctc_grid_follows_its_stride_and_checkpoints_name_their_network(stride, residual, tmp_path):
    """A CTC step per ``stride`` input columns and per text line; a checkpoint names its stride and residual blocks,
    and one written before either was a setting (not in its config) loads as the network of then: an 8-column
    step, no residual blocks."""
    import json

    import torch

    from alpr_pipelines.lib.reader_model import build_network

    net = build_network("0123456789", 10, "ctc", (4, 8, 8, 8), (32, 128), stride, residual or (0, 0)).eval()
    assert net(torch.zeros(2, 1, 32, 128)).shape == (2, 2 * 128 // stride, 11)
    config = {"alphabet": "0123456789", "max_length": 10, "head": "ctc", "channels": [4, 8, 8, 8],
              "input_height": 32, "input_width": 128,
              **({"ctc_stride": stride} if stride != 8 else {}),
              **({"residual_blocks": list(residual)} if residual else {})}
    torch.save({"model": net.state_dict(), "config": json.dumps(config)}, tmp_path / "best.pt")
    loaded, _ = load_reader_checkpoint(tmp_path / "best.pt")  # load_state_dict is strict: the same layers
    assert loaded(torch.zeros(1, 1, 32, 128)).shape == (1, 2 * 128 // stride, 11)


def test_residual_blocks_go_after_the_stage_they_name_and_out_of_range_ones_are_refused(crops):
    """(after the third stage, after the fourth): each block two 3x3 convolutions and two norms of its stage's
    width. A reader without blocks keeps the training key it had before they were a setting."""
    import hashlib
    import json
    from dataclasses import asdict, replace

    import torch

    from alpr_pipelines.lib.reader_model import build_network

    def parameters(blocks: tuple[int, int]) -> int:
        return sum(p.numel() for p in build_network("0123456789", 10, "ctc", (4, 8, 12, 16), (32, 128), 4,
                                                    blocks).features.parameters())

    def block(width: int) -> int:
        return 2 * (width * width * 9 + 2 * width)

    assert parameters((1, 0)) - parameters((0, 0)) == block(12)
    assert parameters((0, 2)) - parameters((0, 0)) == 2 * block(16)
    net = build_network("0123456789", 10, "ctc", (4, 8, 12, 16), (32, 128), 4, (2, 3)).eval()
    assert net(torch.zeros(1, 1, 32, 128)).shape == (1, 64, 11)
    with pytest.raises(TrainingError, match="residual_blocks must be two counts between 0 and 4"):
        ReaderParams(residual_blocks=(5, 0)).validate()
    without = replace(TINY, residual_blocks=(0, 0))
    assert reader_training_key(OCR, crops, TINY) != reader_training_key(OCR, crops, without)
    before = {k: v for k, v in asdict(without).items() if k not in ("threads", "device", "residual_blocks")}
    blob = json.dumps({"model": OCR.key, "data": crops.fingerprint, "params": before}, sort_keys=True)
    assert reader_training_key(OCR, crops, without) == hashlib.sha256(blob.encode()).hexdigest()[:20]


def test_an_unknown_ctc_stride_is_refused_by_name():
    with pytest.raises(TrainingError, match="ctc_stride must be 4 or 8"):
        ReaderParams(ctc_stride=6).validate()


def test_precision_is_checked_and_an_explicit_fp32_training_is_its_own(crops):
    from dataclasses import replace

    with pytest.raises(TrainingError, match="precision must be 'auto' or 'fp32'"):
        ReaderParams(precision="fp16").validate()
    assert reader_training_key(OCR, crops, TINY) != reader_training_key(OCR, crops, replace(TINY, precision="fp32"))


def test_bfloat16_training_is_chosen_exactly_where_the_cpu_computes_bfloat16():
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    flags = set(cpuinfo.read_text().split())
    assert cpu_trains_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_the_bottom_lines_blank_starts_biased_so_one_line_plates_read_in_the_top_line():
    import torch

    from alpr_pipelines.lib.reader_model import BOTTOM_LINE_BLANK_BIAS, build_network

    net = build_network("0123456789", 10, "ctc", (4, 8, 8, 8), (32, 128), 4).eval()
    bias = net.head[1].bias.detach().view(2, 11)  # (line, class), class 0 the blank
    assert float(bias[1, 0] - bias[0, 0]) == pytest.approx(BOTTOM_LINE_BLANK_BIAS, abs=1.0)
    probs = net(torch.rand(4, 1, 32, 128)).softmax(-1)
    top, bottom = float(probs[:, :32, 0].mean()), float(probs[:, 32:, 0].mean())
    assert bottom > 0.5 > top  # an untrained reader's bottom line is mostly blank, its top line not
