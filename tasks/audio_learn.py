"""MFCC-GMM speaker models: one diagonal GaussianMixture per speaker, trained by EM.

Pure functions over arrays plus `learn_dir`, which reads `<speaker>/<utt>.npy` files and
writes model.npz / model.json / metrics.json / report.md. Single-threaded; deterministic
for a given seed.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from peer.errors import BanzaiError

if TYPE_CHECKING:  # scikit-learn takes ~3 s to import: only the workers that train pay it
    from sklearn.mixture import GaussianMixture

Array = npt.NDArray[np.float64]
Metric = Callable[[str, int, float], None]
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
EVAL_EVERY = 5  # held-out evaluation period, in EM iterations


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


def load_features(root: Path) -> dict[str, dict[str, Array]]:
    """{speaker (parent dir name): {relative path: frames x coeffs}} of every .npy under root."""
    feats: dict[str, dict[str, Array]] = {}
    dims: set[int] = set()
    for p in sorted(root.rglob("*.npy")):
        a = np.load(p, allow_pickle=False)
        if a.ndim != 2 or a.shape[0] == 0:
            continue
        a = a[np.isfinite(a).all(axis=1)].astype(np.float64)
        dims.add(a.shape[1])
        spk = p.parent.name if p.parent != root else "speaker"
        feats.setdefault(spk, {})[p.relative_to(root).as_posix()] = a
    if not feats:
        raise LearnError("LEARN needs at least one .npy feature file (frames x coefficients) "
                         "in its input, found none")
    if len(dims) > 1:
        raise LearnError(f"LEARN: feature files disagree on the coefficient count: {sorted(dims)}")
    return feats


def split(feats: Mapping[str, Mapping[str, Array]], test_fraction: float, seed: int) -> Split:
    """Deterministic split by utterance: per speaker a seeded shuffle of the sorted names."""
    out = Split()
    for spk in sorted(feats):
        names = sorted(feats[spk])
        n_test = max(1, round(len(names) * test_fraction))
        if len(names) - n_test < 1:
            raise LearnError(f"LEARN: speaker {spk!r} has {len(names)} utterance(s); at least 2 "
                             "are needed to hold one out for testing")
        rng = np.random.default_rng([seed, zlib.crc32(spk.encode())])
        order = [names[i] for i in rng.permutation(len(names))]
        out.test[spk] = {n: feats[spk][n] for n in sorted(order[:n_test])}
        out.train[spk] = {n: feats[spk][n] for n in sorted(order[n_test:])}
    return out


def _cmvn(a: Array) -> Array:
    out: Array = (a - a.mean(axis=0)) / np.maximum(a.std(axis=0), 1e-8)
    return out


def _frames(utts: Mapping[str, Array], normalize: bool) -> Array:
    return np.concatenate([_cmvn(a) if normalize else a for a in utts.values()])


def _em_step(gmm: GaussianMixture, x: Array) -> None:
    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # one EM step never "converges"
        gmm.fit(x)


@dataclass
class Trained:
    """Fitted models and the curves recorded while training them."""

    speakers: list[str]
    models: list[GaussianMixture]
    curves: dict[str, list[list[float]]]
    iterations: int


def train(data: Split, p: LearnParams, metric: Metric) -> Trained:
    """EM one iteration at a time (warm start), reporting train and held-out scores."""
    speakers = sorted(data.train)
    xs = [_frames(data.train[s], p.normalize) for s in speakers]
    for s, x in zip(speakers, xs, strict=True):
        if len(x) < p.n_components:
            raise LearnError(f"LEARN: speaker {s!r} has {len(x)} training frames, fewer than "
                             f"n_components={p.n_components}")
    from sklearn.mixture import GaussianMixture
    models = [GaussianMixture(p.n_components, covariance_type="diag", max_iter=1,
                              warm_start=True, random_state=p.seed, reg_covar=p.reg_covar)
              for _ in speakers]
    curves: dict[str, list[list[float]]] = {"train_loglik": [], "heldout": []}
    prev = -np.inf
    it = 0
    for it in range(1, p.max_iter + 1):
        for g, x in zip(models, xs, strict=True):
            _em_step(g, x)
        # lower_bound_: mean frame log-likelihood of this iteration's E-step (no extra pass)
        ll = float(np.mean([g.lower_bound_ for g in models]))
        curves["train_loglik"].append([it, ll])
        metric("train_loglik", it, ll)
        done = ll - prev < p.tol or it == p.max_iter
        if done or it % EVAL_EVERY == 0 or it == 1:
            name, value = _heldout(speakers, models, data, p.normalize)
            curves["heldout"].append([it, value])
            metric(name, it, value)
        if done:
            break
        prev = ll
    return Trained(speakers, models, curves, it)


def _heldout(speakers: list[str], models: list[GaussianMixture], data: Split,
             normalize: bool) -> tuple[str, float]:
    if len(speakers) == 1:
        x = _frames(data.test[speakers[0]], normalize)
        return "heldout_loglik", float(models[0].score(x))
    conf = confusion(speakers, models, data, normalize)
    return "heldout_accuracy", float(np.trace(conf) / conf.sum())


def confusion(speakers: list[str], models: list[GaussianMixture], data: Split,
              normalize: bool) -> npt.NDArray[np.int64]:
    """Rows: true speaker, columns: predicted (argmax of summed frame log-likelihoods)."""
    truth = [i for i, s in enumerate(speakers) for _ in data.test[s]]
    utts = [a for s in speakers for a in data.test[s].values()]
    starts = np.cumsum([0] + [len(a) for a in utts[:-1]])
    x = np.concatenate([_cmvn(a) if normalize else a for a in utts])
    # one pass per model over all held-out frames, then per-utterance sums
    scores = np.stack([np.add.reduceat(g.score_samples(x), starts) for g in models], axis=1)
    conf = np.zeros((len(speakers), len(speakers)), dtype=np.int64)
    np.add.at(conf, (np.array(truth), scores.argmax(axis=1)), 1)
    return conf


def save_npz(path: Path, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
    """Like np.savez but byte-deterministic (fixed zip timestamps) and pickle-free."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_TIME)
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def learn_dir(inp: Path, out: Path, p: LearnParams, metric: Metric,
              log: Callable[[str], None]) -> dict[str, Any]:
    """Train on `inp`, write the four output files into `out`, return the metrics."""
    feats = load_features(inp)
    data = split(feats, p.test_fraction, p.seed)
    n_train = sum(len(v) for v in data.train.values())
    n_test = sum(len(v) for v in data.test.values())
    log(f"LEARN: {len(feats)} speaker(s), {n_train} training and {n_test} held-out utterances")
    t = train(data, p, metric)
    dim = int(t.models[0].means_.shape[1])
    metrics: dict[str, Any] = {"speakers": t.speakers, "iterations": t.iterations,
                               "train_utterances": n_train, "test_utterances": n_test,
                               "curves": t.curves}
    if len(t.speakers) > 1:
        conf = confusion(t.speakers, t.models, data, p.normalize)
        metrics["accuracy"] = float(np.trace(conf) / conf.sum())
        metrics["confusion"] = {"labels": t.speakers, "matrix": conf.tolist()}
    else:
        metrics["heldout_loglik"] = t.curves["heldout"][-1][1]
    save_npz(out / "model.npz", {
        "speakers": np.array(t.speakers, dtype=str),
        "weights": np.stack([g.weights_ for g in t.models]),
        "means": np.stack([g.means_ for g in t.models]),
        "covariances": np.stack([g.covariances_ for g in t.models]),
    })
    model = {"kind": "gmm-diag-per-speaker", "speakers": t.speakers,
             "params": p.__dict__, "feature_dim": dim,
             "shapes": {"weights": [len(t.speakers), p.n_components],
                        "means": [len(t.speakers), p.n_components, dim],
                        "covariances": [len(t.speakers), p.n_components, dim]},
             "features": "MFCC frames (EXTRACT_MFCC .npy); score = sum of frame log-likelihoods",
             "normalize": "per-utterance mean/variance" if p.normalize else "none"}
    _write_json(out / "model.json", model)
    _write_json(out / "metrics.json", metrics)
    (out / "report.md").write_text(_report(metrics, p))
    return metrics


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
