"""Per-frame log-likelihood under a diagonal Gaussian mixture: the held-out scoring of LEARN's
assembling step (tasks.audio_learn), in numpy, bit for bit scikit-learn's plain formula.

The plain formula, on frames x components arrays (the tests keep it as the reference):

    log_prob = sum(means**2 * prec) - 2 * (x @ (means * prec).T) + x**2 @ prec.T
    lp = -0.5 * (D * log(2 pi) + log_prob) + log_det + log(w)
    out = top + log(sum(exp(lp - top)))        # top: each frame's largest lp

Computed here with the same roundings in a cheaper order (the plain formula's bits for
finite inputs; see `score_samples` for the one exception):

- the factors 2 and -0.5 are powers of two, and scaling by a power of two commutes with
  every rounding: -0.5 is taken into the operands (`x**2 @ (-0.5 prec).T`,
  `-0.5 sum(means**2 * prec)`), so five elementwise steps come before the exp, not seven;
- the values are laid out components x frames in blocks of SCORE_BLOCK values: numpy's
  loops run along the frames, and a block stays in the core's cache;
- each frame's sum over the components is taken across the block's rows in the order in
  which numpy sums one frame's row (`pairwise_rows`), not by transposing the block and
  reducing its short rows. The maximum is exact in any order.

On LEARN's seed pipeline (109,866 held-out frames, D = 13, K = 8, 23 models) the held-out
scoring takes 0.15 s of CPU, against 0.25 s for the previous blocked version (64 KiB
blocks, the steps as written above): 0.06 s of it from the block size, 0.04 s from the
steps and the sums.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
SCORE_BLOCK = 65536  # values per block: 512 KiB of float64, in a core's L2 (2 MiB here)
PAIRWISE_BLOCK = 128  # numpy's pairwise summation: sums up to this many values unrolled by 8
UNROLL = 8


def pairwise_rows(a: Array, out: Array) -> Array:
    """out[j] = the sum of a[0, j], a[1, j], ... in the order numpy's `sum` adds a contiguous
    row of len(a) float64 values (its pairwise summation: under 8 values one after another,
    up to 128 in 8 running sums then added as a tree, above that the two halves, cut at a
    multiple of 8, apart); `a` is k x m, `out` has m values. Equal, bit for bit, to
    `a.T.copy().sum(axis=1)` (tested), in k-1 additions of whole rows instead of one short
    reduction per column."""
    k = len(a)
    if k < UNROLL:
        np.copyto(out, a[0])
        for i in range(1, k):
            np.add(out, a[i], out=out)
        return out
    if k > PAIRWISE_BLOCK:
        half = k // 2
        half -= half % UNROLL
        pairwise_rows(a[:half], out)
        np.add(out, pairwise_rows(a[half:], np.empty_like(out)), out=out)
        return out
    whole = k - k % UNROLL
    acc = a[:UNROLL]  # the 8 running sums
    if whole > UNROLL:
        acc = acc.copy()
        for i in range(UNROLL, whole, UNROLL):
            np.add(acc, a[i:i + UNROLL], out=acc)
    pairs = np.add(acc[0::2], acc[1::2])  # (r0 + r1), (r2 + r3), (r4 + r5), (r6 + r7)
    quads = np.add(pairs[0::2], pairs[1::2])
    np.add(quads[0], quads[1], out=out)
    for i in range(whole, k):
        np.add(out, a[i], out=out)
    return out


def score_samples(w: Array, means: Array, cov: Array, x: Array, x2: Array | None = None,
                  ) -> Array:
    """Per-frame log-likelihood of the frames `x` (frames x D) under the diagonal GMM
    (weights `w`, K x D `means` and `cov`); `x2` is x ** 2 if the caller has it already.
    The plain formula's bits (module docstring) for finite inputs, save where a partial
    result is subnormal (under 2.2e-308, which needs frame or model values under about
    1e-154; MFCC frames are not): there halving is not exact. The frames are taken in C
    order (copied if need be): OpenBLAS multiplies Fortran-ordered frames with other
    kernels, whose last bit differs for some shapes (docs/benchmarks.md, session 39 helper a)."""
    x = np.ascontiguousarray(x)
    x2 = None if x2 is None else np.ascontiguousarray(x2)
    prec_chol = 1.0 / np.sqrt(cov)
    log_det = np.sum(np.log(prec_chol), axis=1)
    prec = prec_chol ** 2
    cross = x @ (means * prec).T  # frames x components, as the plain formula has them
    half_square = (x ** 2 if x2 is None else x2) @ (-0.5 * prec).T  # = -0.5 (x**2 @ prec.T)
    half_const = (-0.5 * np.sum(means ** 2 * prec, axis=1))[:, None]
    half_two_pi = -0.5 * (x.shape[1] * np.log(2 * np.pi))
    log_det_c, log_w = log_det[:, None], np.log(w)[:, None]
    n, k = cross.shape
    rows = max(1, min(n, SCORE_BLOCK // k))
    lp_t, tot = np.empty((k, rows)), np.empty(rows)
    out: Array = np.empty(n)
    for s in range(0, n, rows):
        e = min(n, s + rows)
        a, t = lp_t[:, :e - s], tot[:e - s]
        np.add(half_const, cross[s:e].T, out=a)  # -0.5 (const - 2 cross)
        np.add(a, half_square[s:e].T, out=a)  # -0.5 (squared Mahalanobis distance)
        np.add(half_two_pi, a, out=a)  # -0.5 (D log 2 pi + distance)
        np.add(a, log_det_c, out=a)
        np.add(a, log_w, out=a)  # per component: log weight + log density
        top = a.max(axis=0)
        np.subtract(a, top, out=a)
        np.exp(a, out=a)
        np.add(top, np.log(pairwise_rows(a, t)), out=out[s:e])
    return out
