"""The CTC reader's training loss: line by line where the labels name the top line, over the whole sequence
elsewhere; and residual blocks that start as identities."""

import torch
import torch.nn.functional as F  # noqa: N812 - PyTorch's convention

from alpr_pipelines.lib.reader_model import ReaderParams, _loss, build_network


def _ctc_sum(log_probs, target):
    return F.ctc_loss(log_probs, torch.tensor(target, dtype=torch.long), torch.tensor([log_probs.shape[0]]),
                      torch.tensor([len(target)]), reduction="sum")


def test_known_lines_are_scored_line_by_line_and_unknown_ones_over_the_whole_sequence():
    torch.manual_seed(0)
    logits = torch.randn(3, 16, 6)  # 8 steps per line
    targets = torch.tensor([[1, 2, 3, 4, 0], [5, 5, 3, 0, 0], [1, 3, 5, 2, 0]])
    unknown = torch.tensor([-1, -1, -1])
    assert torch.allclose(_loss(logits, targets, "ctc", unknown), _loss(logits, targets, "ctc"))

    lp = logits.log_softmax(-1).permute(1, 0, 2)
    two_lines = (_ctc_sum(lp[:8, 0:1], [1, 2]) + _ctc_sum(lp[8:, 0:1], [3, 4])) / 4  # top "12", bottom "34"
    one_line = (_ctc_sum(lp[:8, 1:2], [5, 5, 3]) + _ctc_sum(lp[8:, 1:2], [])) / 3  # bottom line all blank
    whole = _ctc_sum(lp[:, 2:3], [1, 3, 5, 2]) / 4
    expected = (two_lines + one_line + whole) / 3
    assert torch.allclose(_loss(logits, targets, "ctc", torch.tensor([2, 3, -1])), expected, atol=1e-5)
    # The same characters split elsewhere are another loss: the split is what the network is told.
    assert not torch.allclose(_loss(logits, targets, "ctc", torch.tensor([1, 3, -1])), expected, atol=1e-3)


def test_a_line_too_long_for_its_steps_keeps_the_whole_sequence_loss():
    torch.manual_seed(1)
    logits = torch.randn(1, 8, 6)  # 4 steps per line
    one_line = torch.tensor([[1, 2, 3, 4, 5]])  # 5 characters: fit the 8 steps, not a line's 4
    assert _loss(logits, one_line, "ctc", torch.tensor([5])) > 0  # not an impossible alignment zeroed
    assert torch.allclose(_loss(logits, one_line, "ctc", torch.tensor([5])), _loss(logits, one_line, "ctc"))
    doubled = torch.tensor([[1, 1, 2, 3, 0]])  # 4 characters, a blank between the pair: 5 steps
    assert torch.allclose(_loss(logits, doubled, "ctc", torch.tensor([4])), _loss(logits, doubled, "ctc"))


def test_residual_blocks_start_as_the_network_without_them():
    x = torch.rand(2, 1, *ReaderParams.input_size)
    outputs = []
    for blocks in ((0, 0), (1, 1)):
        torch.manual_seed(0)
        net = build_network("0123456789AB", 8, "ctc", residual_blocks=blocks).eval()
        outputs.append(net(x))
    assert torch.equal(outputs[0], outputs[1])
