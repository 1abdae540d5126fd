import math

import pytest

from cropssl.schedules import constant, cosine_to, warmup_cosine, warmup_stable_decay


def test_warmup_cosine_by_formula():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    mid = 10 + 45
    assert warmup_cosine(mid, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10, final_ratio=0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, 100, 10, final_ratio=0.1) == pytest.approx(0.1)
    s = 30
    expect = 0.5 * (1 + math.cos(math.pi * (s - 10) / 90))
    assert warmup_cosine(s, 100, 10) == pytest.approx(expect)


def test_wsd_phases():
    assert warmup_stable_decay(4, 100, 5) == pytest.approx(1.0)
    assert warmup_stable_decay(50, 100, 5, decay_fraction=0.2) == 1.0
    assert warmup_stable_decay(79, 100, 5, decay_fraction=0.2) == 1.0
    assert warmup_stable_decay(90, 100, 5, decay_fraction=0.2) == pytest.approx(0.5)
    assert warmup_stable_decay(100, 100, 5, decay_fraction=0.2, final_ratio=0.0) == pytest.approx(0.0)


def test_momentum_ramp_and_constant():
    assert cosine_to(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert cosine_to(50, 100, 0.996, 1.0) == pytest.approx(0.998)
    assert cosine_to(100, 100, 0.996, 1.0) == pytest.approx(1.0)
    assert constant(3, 10, 5) == pytest.approx(0.8) and constant(7, 10, 5) == 1.0
