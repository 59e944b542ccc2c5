"""MFCC-GMM speaker models (LEARN version 2): one diagonal GaussianMixture per speaker, each
trained by EM on its own, then assembled into one model with held-out scores.

Pure functions over arrays, plus `learn_speaker` (one speaker directory -> `<speaker>.npz`:
its model's EM trajectory and its held-out frames), `assemble` (those files -> model.npz /
model.json / metrics.json / report.md) and `learn_dir` (both, one speaker after another: the
serial LEARN, whose output equals the mesh's chunked one byte for byte). Single-threaded;
deterministic for a given seed. scikit-learn is imported only by the functions that train
(and by LEARN's warm-up in a peer's forkserver: tasks.audio.warm_learn).
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from peer.errors import BanzaiError
from tasks.gmm_em import EmSteps
from tasks.gmm_score import score_samples

Array = npt.NDArray[np.float64]
Metric = Callable[[str, int, float], None]
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
EVAL_EVERY = 5  # held-out evaluation period, in EM iterations
FORMAT = "banzai-learn-speaker-v2"  # the per-speaker file's format tag


class LearnError(BanzaiError):
    """The LEARN input cannot be used to train (no features, too few utterances...)."""


@dataclass(frozen=True)
class LearnParams:
    """Training settings (see the LEARN task for their meaning)."""

    n_components: int = 8
    test_fraction: float = 0.25
    seed: int = 0
    max_iter: int = 100
    tol: float = 1e-3
    normalize: bool = False
    reg_covar: float = 1e-3


@dataclass
class Split:
    """Per speaker: {utterance name: frames} for training and held-out testing."""

    train: dict[str, dict[str, Array]] = field(default_factory=dict)
    test: dict[str, dict[str, Array]] = field(default_factory=dict)


def _load(p: Path, dims: set[int]) -> Array | None:
    a = np.load(p, allow_pickle=False)
    if a.ndim != 2 or a.shape[0] == 0:
        return None
    out: Array = a[np.isfinite(a).all(axis=1)].astype(np.float64)
    dims.add(out.shape[1])
    return out


def _no_features() -> LearnError:
    return LearnError("LEARN needs at least one .npy feature file (frames x coefficients) "
                      "in its input, found none")


def _check_dims(dims: set[int], where: str = "") -> None:
    if len(dims) > 1:
        raise LearnError(f"LEARN: feature files{where} disagree on the coefficient count: "
                         f"{sorted(dims)}")


def load_features(root: Path) -> dict[str, dict[str, Array]]:
    """{speaker (parent dir name): {relative path: frames x coeffs}} of every .npy under root."""
    feats: dict[str, dict[str, Array]] = {}
    dims: set[int] = set()
    for p in sorted(root.rglob("*.npy")):
        a = _load(p, dims)
        if a is not None:
            spk = p.parent.name if p.parent != root else "speaker"
            feats.setdefault(spk, {})[p.relative_to(root).as_posix()] = a
    if not feats:
        raise _no_features()
    _check_dims(dims)
    return feats


def load_speaker(d: Path) -> dict[str, Array]:
    """{file name: frames x coeffs} of the .npy files directly in `d` (one speaker's)."""
    dims: set[int] = set()
    utts = {p.name: a for p in sorted(d.glob("*.npy")) if (a := _load(p, dims)) is not None}
    _check_dims(dims, f" of speaker {d.name!r}")
    return utts


def split_speaker(spk: str, utts: Mapping[str, Array], test_fraction: float, seed: int,
                  ) -> tuple[dict[str, Array], dict[str, Array]]:
    """One speaker's (train, test): a seeded shuffle of the sorted utterance names (the seed
    mixes in the speaker's name, so that each speaker's split depends on it alone)."""
    names = sorted(utts)
    n_test = max(1, round(len(names) * test_fraction))
    if len(names) - n_test < 1:
        raise LearnError(f"LEARN: speaker {spk!r} has {len(names)} utterance(s); at least 2 "
                         "are needed to hold one out for testing")
    rng = np.random.default_rng([seed, zlib.crc32(spk.encode())])
    order = [names[i] for i in rng.permutation(len(names))]
    return ({n: utts[n] for n in sorted(order[n_test:])},
            {n: utts[n] for n in sorted(order[:n_test])})


def split(feats: Mapping[str, Mapping[str, Array]], test_fraction: float, seed: int) -> Split:
    """Deterministic split by utterance: per speaker a seeded shuffle of the sorted names."""
    out = Split()
    for spk in sorted(feats):
        out.train[spk], out.test[spk] = split_speaker(spk, feats[spk], test_fraction, seed)
    return out


def _cmvn(a: Array) -> Array:
    out: Array = (a - a.mean(axis=0)) / np.maximum(a.std(axis=0), 1e-8)
    return out


def _frames(utts: Mapping[str, Array], normalize: bool) -> Array:
    return np.concatenate([_cmvn(a) if normalize else a for a in utts.values()])


def eval_points(iterations: int) -> list[int]:
    """The iterations at which held-out scores are taken: 1, every EVAL_EVERY, the last."""
    return sorted({1, iterations, *range(EVAL_EVERY, iterations + 1, EVAL_EVERY)})


@dataclass
class SpeakerFit:
    """One speaker's EM trajectory: lower bounds per iteration, the model at eval_points of
    its own iteration count (the last one is the final model), and its held-out frames."""

    speaker: str
    lower_bounds: Array
    snapshots: list[int]
    weights: Array  # snapshots x K
    means: Array  # snapshots x K x D
    covariances: Array  # snapshots x K x D
    heldout: Array  # held-out frames (normalised if asked) x D
    heldout_lengths: npt.NDArray[np.int64]  # frames per held-out utterance, in name order
    train_utterances: int

    @property
    def iterations(self) -> int:
        return len(self.lower_bounds)

    def at(self, it: int) -> tuple[Array, Array, Array]:
        """(weights, means, covariances) after iteration min(it, its last)."""
        i = self.snapshots.index(min(it, self.iterations))
        return self.weights[i], self.means[i], self.covariances[i]

    def save(self, path: Path) -> None:
        save_npz(path, {"format": np.array([FORMAT]), "speaker": np.array([self.speaker]),
                        "lower_bounds": self.lower_bounds,
                        "snapshots": np.array(self.snapshots, dtype=np.int64),
                        "weights": self.weights, "means": self.means,
                        "covariances": self.covariances, "heldout": self.heldout,
                        "heldout_lengths": self.heldout_lengths,
                        "train_utterances": np.array([self.train_utterances],
                                                     dtype=np.int64)})

    @classmethod
    def load(cls, path: Path) -> SpeakerFit:
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z or str(z["format"].reshape(-1)[0]) != FORMAT:
                raise LearnError(f"LEARN: {path.name} is not a per-speaker model ({FORMAT})")
            return cls(str(z["speaker"].reshape(-1)[0]), z["lower_bounds"],
                       [int(i) for i in z["snapshots"]], z["weights"], z["means"],
                       z["covariances"], z["heldout"], z["heldout_lengths"],
                       int(z["train_utterances"].reshape(-1)[0]))


def train_speaker(spk: str, utts: Mapping[str, Array], p: LearnParams, metric: Metric,
                  ) -> SpeakerFit:
    """EM one iteration at a time (warm start) on one speaker's training utterances, until
    its own mean frame log-likelihood improves by less than `tol` (or max_iter); reports
    `train_loglik/<speaker>` per iteration."""
    train_u, test_u = split_speaker(spk, utts, p.test_fraction, p.seed)
    x = _frames(train_u, p.normalize)
    if len(x) < p.n_components:
        raise LearnError(f"LEARN: speaker {spk!r} has {len(x)} training frames, fewer than "
                         f"n_components={p.n_components}")
    from sklearn.mixture import GaussianMixture
    g = GaussianMixture(p.n_components, covariance_type="diag", max_iter=1, warm_start=True,
                        random_state=p.seed, reg_covar=p.reg_covar)
    em = EmSteps(g, x)
    bounds: list[float] = []
    snaps: list[tuple[int, Array, Array, Array]] = []
    prev = -np.inf
    for it in range(1, p.max_iter + 1):
        ll = em.step()  # mean frame log-likelihood of this iteration's E-step
        bounds.append(ll)
        metric(f"train_loglik/{spk}", it, ll)
        done = ll - prev < p.tol or it == p.max_iter
        if done or it % EVAL_EVERY == 0 or it == 1:
            snaps.append((it, g.weights_.copy(), g.means_.copy(), g.covariances_.copy()))
        if done:
            break
        prev = ll
    return SpeakerFit(spk, np.array(bounds, dtype=np.float64), [s[0] for s in snaps],
                      np.stack([s[1] for s in snaps]), np.stack([s[2] for s in snaps]),
                      np.stack([s[3] for s in snaps]), _frames(test_u, p.normalize),
                      np.array([len(a) for a in test_u.values()], dtype=np.int64),
                      len(train_u))


def learn_speaker(src: Path, out_dir: Path, p: LearnParams, metric: Metric) -> Path | None:
    """One speaker (the .npy files directly in `src`, named after it) -> out_dir/<name>.npz;
    None if none of them holds a frame (as if the speaker were absent)."""
    utts = load_speaker(src) if src.is_dir() else {}
    if not utts:
        return None
    fit = train_speaker(src.name, utts, p, metric)
    dest = out_dir / f"{src.name}.npz"
    fit.save(dest)
    return dest


class Heldout:
    """Every speaker's held-out frames as one array, and each speaker model's per-utterance
    scores on them, computed once per (speaker, iteration it is taken at): an eval point
    past a speaker's last iteration, and the final confusion, reuse its final model's."""

    def __init__(self, fits: Sequence[SpeakerFit]) -> None:
        self.fits = fits
        self.truth = np.repeat(np.arange(len(fits)), [len(f.heldout_lengths) for f in fits])
        lengths = np.concatenate([f.heldout_lengths for f in fits])
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.x = np.concatenate([f.heldout for f in fits])
        self.x2 = self.x ** 2  # shared by every model's pass
        self._scores: dict[tuple[int, int], Array] = {}

    def scores(self, i: int, it: int) -> Array:
        """Per held-out utterance: its summed frame log-likelihood under speaker i's model
        after iteration min(it, its last)."""
        f = self.fits[i]
        key = (i, min(it, f.iterations))
        got = self._scores.get(key)
        if got is None:  # one pass over all held-out frames, then per-utterance sums
            frames = score_samples(*f.at(it), self.x, self.x2)
            got = self._scores[key] = np.add.reduceat(frames, self.starts)
        return got

    def confusion(self, it: int) -> npt.NDArray[np.int64]:
        """Rows: true speaker, columns: predicted (argmax of summed frame log-likelihoods),
        with each speaker's model after iteration min(it, its last)."""
        n = len(self.fits)
        scores = np.stack([self.scores(i, it) for i in range(n)], axis=1)
        conf = np.zeros((n, n), dtype=np.int64)
        np.add.at(conf, (self.truth, scores.argmax(axis=1)), 1)
        return conf


def confusion(fits: Sequence[SpeakerFit], it: int) -> npt.NDArray[np.int64]:
    """Rows: true speaker, columns: predicted (argmax of summed frame log-likelihoods), with
    each speaker's model after iteration min(it, its last)."""
    return Heldout(fits).confusion(it)


def _heldout(fits: Sequence[SpeakerFit], it: int, held: Heldout) -> tuple[str, float]:
    if len(fits) == 1:
        f = fits[0]
        return "heldout_loglik", float(np.mean(score_samples(*f.at(it), f.heldout)))
    conf = held.confusion(it)
    return "heldout_accuracy", float(np.trace(conf) / conf.sum())


def load_fits(inp: Path) -> list[SpeakerFit]:
    """The per-speaker files under `inp`, in speaker order."""
    fits = [SpeakerFit.load(q) for q in sorted(inp.rglob("*.npz"))] if inp.is_dir() else []
    if not fits:
        raise _no_features()
    fits.sort(key=lambda f: f.speaker)
    names = [f.speaker for f in fits]
    if len(set(names)) < len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise LearnError(f"LEARN: two speaker directories share the name(s) {dup}")
    _check_dims({f.means.shape[2] for f in fits}, " of the speakers")
    return fits


def save_npz(path: Path, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
    """Like np.savez but byte-deterministic (fixed zip timestamps) and pickle-free."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_TIME)
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())



def assemble(inp: Path, out: Path, p: LearnParams, metric: Metric) -> dict[str, Any]:
    """The per-speaker files under `inp` -> the four output files in `out`; returns the
    metrics. Curves: `train_loglik` is the mean over speakers of each one's lower bound at
    iteration min(t, its last); held-out scores at eval_points of the longest run."""
    fits = load_fits(inp)
    speakers = [f.speaker for f in fits]
    last = max(f.iterations for f in fits)
    curves: dict[str, list[list[float]]] = {"train_loglik": [], "heldout": []}
    for it in range(1, last + 1):
        ll = float(np.mean([f.lower_bounds[min(it, f.iterations) - 1] for f in fits]))
        curves["train_loglik"].append([it, ll])
        metric("train_loglik", it, ll)
    held = Heldout(fits)
    for it in eval_points(last):
        name, value = _heldout(fits, it, held)
        curves["heldout"].append([it, value])
        metric(name, it, value)
    n_train = sum(f.train_utterances for f in fits)
    n_test = sum(len(f.heldout_lengths) for f in fits)
    metrics: dict[str, Any] = {"speakers": speakers, "iterations": last,
                               "speaker_iterations": {f.speaker: f.iterations for f in fits},
                               "train_utterances": n_train, "test_utterances": n_test,
                               "curves": curves}
    if len(fits) > 1:
        conf = held.confusion(last)
        metrics["accuracy"] = float(np.trace(conf) / conf.sum())
        metrics["confusion"] = {"labels": speakers, "matrix": conf.tolist()}
    else:
        metrics["heldout_loglik"] = curves["heldout"][-1][1]
    final = [f.at(last) for f in fits]
    save_npz(out / "model.npz", {
        "speakers": np.array(speakers, dtype=str),
        "weights": np.stack([m[0] for m in final]),
        "means": np.stack([m[1] for m in final]),
        "covariances": np.stack([m[2] for m in final]),
    })
    dim = int(fits[0].means.shape[2])
    model = {"kind": "gmm-diag-per-speaker", "version": 2, "speakers": speakers,
             "params": p.__dict__, "feature_dim": dim,
             "shapes": {"weights": [len(fits), p.n_components],
                        "means": [len(fits), p.n_components, dim],
                        "covariances": [len(fits), p.n_components, dim]},
             "features": "MFCC frames (EXTRACT_MFCC .npy); score = sum of frame log-likelihoods",
             "normalize": "per-utterance mean/variance" if p.normalize else "none"}
    _write_json(out / "model.json", model)
    _write_json(out / "metrics.json", metrics)
    (out / "report.md").write_text(_report(metrics, p))
    return metrics


def speaker_dirs(root: Path) -> list[Path]:
    """The directories under `root` (itself included) that directly hold .npy files: one
    speaker each, as the mesh's chunks of LEARN take them."""
    return sorted({q.parent for q in root.rglob("*.npy")})


def learn_dir(inp: Path, out: Path, p: LearnParams, metric: Metric,
              log: Callable[[str], None]) -> dict[str, Any]:
    """The serial LEARN: every speaker of `inp` one after another (`learn_speaker`), then
    `assemble`; writes the four output files into `out` and returns the metrics."""
    dirs = speaker_dirs(inp) if inp.is_dir() else []
    if not dirs:
        raise _no_features()
    with tempfile.TemporaryDirectory(prefix="learn-", dir=out.parent) as tmp:
        for d in dirs:  # each result where the mesh's assembly puts it (beside its dir)
            where = Path(tmp) / d.relative_to(inp).parent
            where.mkdir(parents=True, exist_ok=True)
            learn_speaker(d, where, p, metric)
        m = assemble(Path(tmp), out, p, metric)
    log(f"LEARN: {len(m['speakers'])} speaker(s), {m['train_utterances']} training and "
        f"{m['test_utterances']} held-out utterances")
    return m


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n")


def _report(m: Mapping[str, Any], p: LearnParams) -> str:
    lines = ["# LEARN: GMM speaker models", "",
             f"- speakers: {', '.join(m['speakers'])}",
             f"- utterances: {m['train_utterances']} train, {m['test_utterances']} held out "
             f"(test_fraction={p.test_fraction}, seed={p.seed})",
             f"- model: {p.n_components} diagonal Gaussians per speaker, "
             f"{m['iterations']} EM iterations"]
    if "accuracy" in m:
        lines.append(f"- held-out utterance accuracy: **{m['accuracy']:.1%}**")
        labels = m["confusion"]["labels"]
        lines += ["", "Confusion (rows: true, columns: predicted)", "",
                  "| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for lab, row in zip(labels, m["confusion"]["matrix"], strict=True):
            lines.append(f"| {lab} | " + " | ".join(str(v) for v in row) + " |")
    else:
        lines.append(f"- held-out average frame log-likelihood: {m['heldout_loglik']:.3f}")
    return "\n".join(lines) + "\n"
