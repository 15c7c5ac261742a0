"""stseq.time: gaps before and after each event, units and transforms, in one place."""

import math

import pytest
import torch

from stseq.time import (GAP_TRANSFORMS, check_gap_transform, check_time_unit, gaps_after,
                        gaps_before, transform_gaps)

EPOCH = 1_700_000_000


def test_gaps_before_and_after_are_exact_at_epoch_scale():
    ts = torch.tensor([[EPOCH, EPOCH + 1, EPOCH + 3601, EPOCH + 3601 + 2**40],
                       [EPOCH, EPOCH + 7, 0, 0]])
    lengths = torch.tensor([4, 2])
    before = gaps_before(ts, lengths)
    assert before.dtype == torch.float64
    assert before.tolist() == [[0, 1, 3600, 2**40], [0, 7, 0, 0]]
    assert gaps_after(ts, lengths).tolist() == [[1, 3600, 2**40, 0], [7, 0, 0, 0]]
    # without lengths every position counts (the float32 epoch would have lost the 1 s gap)
    assert gaps_before(ts[:1]).tolist() == [[0, 1, 3600, 2**40]]
    assert gaps_before(torch.zeros(2, 0, dtype=torch.long)).shape == (2, 0)


def test_transforms():
    gaps = torch.tensor([0, 60, 3600])
    assert transform_gaps(gaps, 60.0).tolist() == [0.0, 1.0, 60.0]
    expected = [math.log1p(0), math.log1p(1), math.log1p(60)]
    assert transform_gaps(gaps, 60.0, "log1p").tolist() == pytest.approx(expected, rel=1e-15)
    assert GAP_TRANSFORMS == ("none", "log1p")


@pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan, "60", True, None])
def test_bad_time_unit_is_named(bad):
    with pytest.raises(ValueError, match="time_unit"):
        check_time_unit(bad)


def test_bad_gap_transform_is_named():
    with pytest.raises(ValueError, match="gap_transform"):
        check_gap_transform("log")
    assert check_gap_transform("log1p") == "log1p"


@pytest.mark.parametrize("layer", ["TimeLSTM", "TLSTM", "TimeDecayGRU"])
def test_layers_read_seconds_through_their_time_options(layer):
    # a layer given seconds with time_unit and gap_transform equals one given the transformed gap
    import stseq

    torch.manual_seed(0)
    seconds = torch.tensor([[0.0, 30.0, 7200.0, 86400.0 * 40]]).double()
    x = torch.randn(1, 4, 8)
    options = {"batch_first": True, "backend": "reference"}
    plain = getattr(stseq.nn, layer)(8, 16, **options)
    timed = getattr(stseq.nn, layer)(8, 16, time_unit=60.0, gap_transform="log1p", **options)
    timed.load_state_dict(plain.state_dict())
    expected, _ = plain(x, transform_gaps(seconds, 60.0, "log1p").float())
    got, _ = timed(x, seconds)
    assert torch.equal(got, expected)
    assert "gap_transform='log1p'" in repr(timed)
    with pytest.raises(ValueError, match="gap_transform"):
        getattr(stseq.nn, layer)(8, 16, gap_transform="log")
