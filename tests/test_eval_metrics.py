"""evals.metrics: Control, Scaling and Performance against hand-computed values.

Where the s1 paper's own numbers can be recomputed they are: its Control values
are shares of |A| budgets (40 % = 2 of 5, 60 % = 3 of 5, 50 % = 1 of 2, 100 %),
and its accuracies are shares of the 30 AIME24 problems (56.7 % = 17/30,
50.0 % = 15/30). Its Scaling values cannot be recomputed from the published
curves, so Scaling is checked on points worked out by hand.
"""

from __future__ import annotations

import pytest

from evals.metrics import (
    accuracy,
    control,
    control_by_setting,
    performance,
    scaling,
    within,
)


def test_within_bounds() -> None:
    assert within(512, None, 512) and within(0, None, 512) and not within(513, None, 512)
    assert within(300, 256, None) and not within(255, 256, None)
    assert within(7, None, None)


def test_control_paper_shares() -> None:
    # step-conditional control: 3 of 5 budgets respected -> 60 %
    assert control([(100, None, 128), (200, None, 256), (400, None, 512), (2000, None, 1024),
                    (5000, None, 2048)]) == pytest.approx(60.0)
    # token-conditional control: 2 of 5 budgets respected -> 40 %
    assert control([(100, None, 128), (200, None, 256), (600, None, 512), (2000, None, 1024),
                    (5000, None, 2048)]) == pytest.approx(40.0)
    # class-conditional: 1 of 2 classes ("short", "long") respected -> 50 %
    assert control([(900, None, 500), (3000, 2000, None)]) == pytest.approx(50.0)
    # budget forcing respects every budget -> 100 %
    assert control([(512, None, 512), (1024, None, 1024)]) == 100.0
    assert control([]) is None


def test_control_by_setting() -> None:
    ok = [(10, None, 16), (16, None, 16)]
    bad = [(10, None, 16), (17, None, 16)]
    assert control_by_setting([ok, ok]) == 100.0
    assert control_by_setting([ok, bad]) == 50.0  # one run out makes the budget fail
    assert control_by_setting([[]]) is None


def test_scaling_hand_computed() -> None:
    # slopes per 1000 tokens: (40-20)/1 = 20, (50-20)/3 = 10, (50-40)/2 = 5 -> mean 35/3
    points = [(2000, 40.0), (1000, 20.0), (4000, 50.0)]
    assert scaling(points) == pytest.approx(35 / 3)
    assert scaling(points, per=1) == pytest.approx(35 / 3 / 1000)
    # a flat and a falling curve
    assert scaling([(512, 30.0), (1024, 30.0)]) == 0.0
    assert scaling([(1000, 40.0), (2000, 30.0)]) == pytest.approx(-10.0)


def test_scaling_edge_cases() -> None:
    assert scaling([(1000, 50.0)]) is None  # one budget: no pair
    assert scaling([]) is None
    # equal token counts have no slope; the remaining pair decides
    assert scaling([(1000, 10.0), (1000, 20.0), (3000, 30.0)]) == pytest.approx((10 + 5) / 2)
    assert scaling([(1000, 10.0), (1000, 20.0)]) is None


def test_performance_and_paper_accuracies() -> None:
    assert accuracy(17, 30) == pytest.approx(56.67, abs=0.005)  # s1-32B with budget forcing
    assert accuracy(15, 30) == pytest.approx(50.0)              # without
    assert round(accuracy(17, 30), 1) == 56.7
    assert accuracy(0, 0) is None
    points = [(2000, accuracy(15, 30)), (4000, accuracy(17, 30)), (8000, accuracy(16, 30))]
    assert performance(points) == pytest.approx(56.67, abs=0.005)
    assert performance([]) is None
    # "from 50% to 57% on AIME24": one step up of 2 problems over the extra tokens
    assert scaling([(4000, accuracy(15, 30)), (6000, accuracy(17, 30))]) == \
        pytest.approx((200 / 30) / 2)
