import numpy as np
import pytest

from dqltoolkit.heads.schedules import SCHEDULES


def test_vp_matches_paper_values():
    betas = SCHEDULES.get("vp")(5)
    np.testing.assert_allclose(betas, [0.196, 0.459, 0.636, 0.755, 0.835], atol=1e-3)


@pytest.mark.parametrize("T", [5, 10, 50])
def test_vp_final_abar_is_independent_of_T(T):
    betas = SCHEDULES.get("vp")(T)
    assert np.prod(1 - betas) == pytest.approx(np.exp(-5.05), rel=1e-9)
    t = np.arange(1, T + 1)
    np.testing.assert_allclose(1 - betas, np.exp(-0.1 / T - 0.5 * 9.9 * (2 * t - 1) / T**2))


def test_linear_schedule_formula_and_weak_noise_at_T5():
    betas = SCHEDULES.get("linear")(5)
    np.testing.assert_allclose(betas, np.linspace(1e-4, 2e-2, 5))
    assert np.prod(1 - betas) == pytest.approx(0.95, abs=0.01)


def test_cosine_schedule_formula():
    T, s = 10, 0.008
    betas = SCHEDULES.get("cosine")(T)
    f = lambda t: np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2
    abar = np.array([f(t) / f(0) for t in range(0, T + 1)])
    expected = np.clip(1 - abar[1:] / abar[:-1], 0, 0.999)  # betas clipped as in Nichol & Dhariwal
    np.testing.assert_allclose(betas, expected, rtol=1e-9)
    np.testing.assert_allclose(np.cumprod(1 - betas)[:-1], abar[1:-1], rtol=1e-6)  # unclipped steps
    assert betas.max() == pytest.approx(0.999)
