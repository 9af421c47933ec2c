"""The lower confidence bound that decides whether a candidate meets the SLA."""
from __future__ import annotations

import numpy as np
import pytest

from edgeslim.core.errors import UsageError
from edgeslim.search.confidence import margin, pack, unpack, z_value


def test_paired_margin_counts_only_the_images_that_changed():
    rng = np.random.default_rng(0)
    base = rng.random(6000) < 0.92
    same = base.copy()
    assert margin(same, base, confidence=0.9) == 0.0  # identical predictions: no noise in the drop
    few, many = base.copy(), base.copy()
    few[:60] = ~few[:60]  # 1% of the images flip
    many[:600] = ~many[:600]  # 10% flip
    m_few, m_many = margin(few, base, confidence=0.9), margin(many, base, confidence=0.9)
    assert 0 < m_few < m_many
    # 1% flips: SE of the paired difference ~ sqrt(0.01 / 6000) -> z * SE in points
    assert m_few == pytest.approx(100 * 1.2816 * np.sqrt(0.01 / 6000), rel=0.05)


def test_binomial_margin_and_confidence_levels():
    c = np.r_[np.ones(900, bool), np.zeros(100, bool)]  # 90% of 1000
    se = 100 * np.sqrt(0.9 * 0.1 / 1000)
    assert margin(c, confidence=0.9) == pytest.approx(1.2816 * se, rel=1e-3)
    assert margin(c, confidence=0.975) == pytest.approx(1.96 * se, rel=1e-3)
    assert margin(c, confidence=0.5) == margin(c, confidence=0) == 0.0


def test_bad_confidence_and_mismatched_pairs_are_usage_errors():
    for bad in (1.0, -0.1, "0.9", True):
        with pytest.raises(UsageError):
            z_value(bad)
    with pytest.raises(UsageError, match="10 candidate predictions against 11"):
        margin(np.ones(10, bool), np.ones(11, bool))


def test_pack_round_trip():
    c = np.random.default_rng(1).random(6001) < 0.5
    assert np.array_equal(unpack(pack(c)), c)


def test_rule_text_says_how_feasibility_is_decided():
    from edgeslim.search.confidence import rule_text

    assert rule_text(0.9, True) == "as a one-sided lower bound at confidence 0.9 (paired with the baseline per image)"
    assert "binomial" in rule_text(0.95, False)
    assert rule_text(0, True) == rule_text(0.5, False) == ""
