"""The diagonal GMM's per-frame scores: bit for bit the plain formula, whatever the block."""

from __future__ import annotations

import numpy as np
import pytest

from tasks import gmm_score


def _plain_score(w: np.ndarray, means: np.ndarray, cov: np.ndarray, x: np.ndarray,
                 ) -> np.ndarray:
    """The diagonal GMM's per-frame log-likelihood as LEARN v2 first computed it: the
    reference that score_samples must equal bit for bit."""
    prec_chol = 1.0 / np.sqrt(cov)
    log_det = np.sum(np.log(prec_chol), axis=1)
    prec = prec_chol ** 2
    log_prob = (np.sum(means ** 2 * prec, axis=1) - 2.0 * (x @ (means * prec).T)
                + (x ** 2) @ prec.T)
    lp = -0.5 * (x.shape[1] * np.log(2 * np.pi) + log_prob) + log_det + np.log(w)
    top = lp.max(axis=1)
    out: np.ndarray = top + np.log(np.sum(np.exp(lp - top[:, None]), axis=1))
    return out


@pytest.mark.parametrize("k", [1, 2, 7, 8, 9, 16, 17, 128, 129, 300, 512])
def test_score_samples_equals_the_plain_formula_bit_for_bit(
        k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocked and laid out components x frames, with -0.5 taken into the operands and the
    sums over components taken across rows, the scores are still the plain formula's bits,
    whatever the block size (one frame, a remainder, the default, one block for all)."""
    rng = np.random.default_rng(k)
    for d, n, scale in ((1, 1, 7.0), (13, 1000, 7.0), (40, 257, 7.0), (13, 300, 300.0),
                        (13, 300, 1e-3)):
        x = rng.normal(size=(n, d)) * scale
        w = rng.dirichlet(np.ones(k))
        means = rng.normal(size=(k, d)) * 3.0 * scale
        cov = rng.uniform(0.01, 5.0, size=(k, d)) * scale ** 2
        for block in (1, 7 * k, gmm_score.SCORE_BLOCK, 10 ** 9):
            xb = x[:40] if block == 1 else x  # one frame a block: 40 frames suffice
            want = _plain_score(w, means, cov, xb).view(np.int64)
            monkeypatch.setattr(gmm_score, "SCORE_BLOCK", block)
            assert np.array_equal(gmm_score.score_samples(w, means, cov, xb).view(np.int64),
                                  want)
            assert np.array_equal(
                gmm_score.score_samples(w, means, cov, xb, xb ** 2).view(np.int64), want)


@pytest.mark.parametrize("k", [1, 2, 5, 7, 8, 9, 15, 16, 23, 64, 127, 128, 129, 136, 255,
                               256, 300, 512, 1000])
def test_pairwise_rows_sums_in_numpys_order(k: int) -> None:
    """Each column's sum over the rows equals numpy's sum of that column as a contiguous
    row, bit for bit, on values whose sum depends on the order they are added in."""
    rng = np.random.default_rng(k)
    a = rng.normal(size=(k, 5000)) * np.exp(rng.uniform(-30.0, 30.0, size=(k, 5000)))
    want = np.ascontiguousarray(a.T).sum(axis=1)
    got = gmm_score.pairwise_rows(a, np.empty(a.shape[1]))
    assert np.array_equal(got.view(np.int64), want.view(np.int64))
    if k >= 8:  # the order matters on these values: one after another gives other bits
        one_by_one = a[0].copy()
        for row in a[1:]:
            one_by_one += row
        assert not np.array_equal(one_by_one, want)


@pytest.mark.parametrize("k", [1, 2, 8])
def test_score_samples_of_fortran_ordered_frames_has_the_c_ordered_bits(k: int) -> None:
    """Frames handed over in Fortran order (a transposed or sliced array) score as the same
    frames in C order do: OpenBLAS would multiply them with other kernels."""
    rng = np.random.default_rng(100 + k)
    for d, n in ((13, 1000), (40, 257), (13, 300)):
        x = rng.normal(size=(n, d)) * 7.0
        w = rng.dirichlet(np.ones(k))
        means = rng.normal(size=(k, d)) * 21.0
        cov = rng.uniform(0.01, 5.0, size=(k, d)) * 49.0
        want = _plain_score(w, means, cov, x).view(np.int64)
        xf = np.asfortranarray(x)
        assert np.array_equal(gmm_score.score_samples(w, means, cov, xf).view(np.int64), want)
        assert np.array_equal(
            gmm_score.score_samples(w, means, cov, xf, np.asfortranarray(x ** 2)).view(np.int64),
            want)
