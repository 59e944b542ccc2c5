"""EM one iteration at a time: the trajectory of repeated one-iteration fits, one E-step each."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tasks.gmm_em import EmSteps

sklearn_mixture = pytest.importorskip("sklearn.mixture")


def _model(k: int, seed: int) -> object:
    return sklearn_mixture.GaussianMixture(k, covariance_type="diag", max_iter=1,
                                           warm_start=True, random_state=seed, reg_covar=1e-3)


def _frames(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, 6)) * 4.0
    x: np.ndarray = np.concatenate([c + rng.normal(size=(400, 6)) * rng.uniform(0.5, 2.0)
                                    for c in centres])
    return x


@pytest.mark.parametrize(("k", "seed"), [(1, 0), (3, 1), (8, 2), (12, 3)])
def test_steps_equal_repeated_one_iteration_fits_bit_for_bit(k: int, seed: int) -> None:
    x = _frames(seed)
    fitted, stepped = _model(k, seed), _model(k, seed)
    em = EmSteps(stepped, x)
    for _ in range(15):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted.fit(x)
        bound = em.step()
        assert bound == fitted.lower_bound_ == stepped.lower_bound_
        for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
            assert np.array_equal(getattr(stepped, name).view(np.int64),
                                  getattr(fitted, name).view(np.int64)), name
    assert em.iterations == 15


def test_one_e_step_per_iteration(monkeypatch: pytest.MonkeyPatch) -> None:
    """`fit` adds a second E-step for its labels; the steps after the first call do not."""
    calls: list[int] = []
    real = sklearn_mixture.GaussianMixture._e_step

    def counted(self: object, *a: object, **kw: object) -> object:
        calls.append(1)
        return real(self, *a, **kw)

    monkeypatch.setattr(sklearn_mixture.GaussianMixture, "_e_step", counted)
    em = EmSteps(_model(4, 0), _frames(0))
    em.step()  # the initialising fit: its iteration's E-step and the labels' one
    assert len(calls) == 2
    for _ in range(10):
        em.step()
    assert len(calls) == 2 + 10
