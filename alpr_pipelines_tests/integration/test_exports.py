"""The ONNX export's head: box decoding traced as reductions (exports.dfl_as_reductions) gives PyTorch's numbers."""

from pathlib import Path

import numpy as np
import onnx

from alpr_pipelines.lib.datasets import load_data_yaml, split_images
from alpr_pipelines.lib.exports import dfl_as_reductions, export_onnx, onnx_parity


def test_dfl_as_reductions_gives_the_softmax_expectation():
    import torch
    from ultralytics.nn.modules.block import DFL

    dfl = DFL(16).eval()
    # Logits as large as a confident head's: the max is subtracted before exp, so nothing overflows.
    x = torch.randn(2, 64, 300, generator=torch.Generator().manual_seed(0)) * 40
    with torch.no_grad():
        expected = dfl(x)
        with dfl_as_reductions():
            got = dfl(x)
        after = dfl(x)
    assert got.shape == expected.shape == (2, 4, 300)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, expected, atol=1e-4)
    assert torch.equal(after, expected)  # Ultralytics' own forward is back after the block


def test_the_export_decodes_boxes_without_a_softmax_and_matches_pytorch(untrained_checkpoint, tiny_views, tmp_path):
    result = export_onnx(untrained_checkpoint, tmp_path / "export", 64)
    graph = onnx.load(str(result.path)).graph
    dfl_ops = [n.op_type for n in graph.node if "/dfl/" in n.name]
    assert "Softmax" not in dfl_ops and "Transpose" not in dfl_ops, dfl_ops
    assert {"ReduceMax", "Exp", "ReduceSum", "Div"} <= set(dfl_ops), dfl_ops
    images = split_images(load_data_yaml(tiny_views["plate"]), "val")
    report = onnx_parity(untrained_checkpoint, Path(result.path or ""), images)
    assert report.passed, report.as_dict()
    assert report.max_box_diff_px <= 0.01 and np.isfinite(report.max_score_diff)
