"""The new head, trained with numpy on per-frame features: a linear map of a window of frames.

The base's features of a frame already carry motion (the TSM shifts mix the previous frames into every
block), so by default the head reads the current frame's features alone; with ``frames`` > 1 it reads a
window of the last frames (measured in docs/teach.md: on generator 5's new motions the window did not
beat the current frame with 1 to 20 clips per class, so it is an option, not the default).

Per frame ``x_t = P ((f_t - mean) * inv_std)`` (standardised, projected on the first ``dim``
principal axes of the training frames), then ``views`` of the window, each a fixed weighting of its
frames (``current``: x_t; ``mean``: the window's mean; ``delta``: x_t minus the window's oldest), and a
softmax regression over the views (class-balanced cross-entropy, L2, full-batch Adam). The views are
linear in the window, so the trained weights fold into one matrix over the window: the graph holds
exactly one MatMul/Gemm (:class:`edge.teach.graph.HeadWeights`), and :func:`forward` is that graph in
numpy, frame for frame (the window starts as zeros, the standardised mean, as after a state reset).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from edge.teach.graph import HeadWeights

VIEWS = ("current", "mean", "delta")


@dataclass(frozen=True)
class HeadConfig:
    frames: int = 1                       # window length (frames at the model's rate); 1: the current frame
    views: tuple[str, ...] = ("current",)  # with frames > 1: VIEWS (current, mean, delta)
    dim: int = 96                         # principal axes kept (0: the raw features)
    l2: float = 3e-3                      # weight decay on the view weights
    steps: int = 300                      # Adam steps (full batch)
    lr: float = 0.03
    skip_first: int = 1                   # steps at a sequence's start left out of training (states filling)
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def settings(self) -> dict:
        d = asdict(self)
        d["views"] = list(self.views)
        d.pop("extra")
        return d


def view_matrix(frames: int, views: tuple[str, ...]) -> np.ndarray:
    """K x V weights of each view over the window's frames (oldest first)."""
    cols = []
    for v in views:
        w = np.zeros(frames, np.float64)
        if v == "current":
            w[-1] = 1.0
        elif v == "mean":
            w[:] = 1.0 / frames
        elif v == "delta":
            w[-1] += 1.0
            w[0] -= 1.0
        else:
            raise ValueError(f"unknown view {v!r}")
        cols.append(w)
    return np.stack(cols, 1)


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0)
    var = x.var(0)
    inv = 1.0 / np.sqrt(var + 0.01 * var.mean() + 1e-12)
    return mean.astype(np.float32), inv.astype(np.float32)


def _pca(x: np.ndarray, d: int, rng: np.random.Generator) -> np.ndarray:
    """D x d principal axes of the (standardised, centred) rows of ``x``: a randomised range finder on the
    feature side (every QR and eigen-decomposition is D x 2d or 2d x 2d, whatever the number of rows)."""
    n, dd = x.shape
    d = min(d, n - 1, dd)
    q = rng.standard_normal((dd, min(dd, 2 * d))).astype(np.float32)
    for _ in range(2):
        q, _ = np.linalg.qr(x.T @ (x @ q))
    b = (x @ q).astype(np.float64)                     # N x 2d
    s2, u = np.linalg.eigh(b.T @ b)                    # 2d x 2d
    top = np.argsort(s2)[::-1][:d]
    return np.ascontiguousarray((q @ u[:, top]).astype(np.float32))


def windows(z: np.ndarray, frames: int) -> np.ndarray:
    """T x d -> T x K x d, the K frames up to each step, zeros before the first (as the graph's history)."""
    t, d = z.shape
    pad = np.concatenate([np.zeros((frames - 1, d), z.dtype), z])
    idx = np.arange(t)[:, None] + np.arange(frames)[None, :]
    return pad[idx]


def _design(seqs: list[np.ndarray], head_in: tuple[np.ndarray, np.ndarray, np.ndarray | None], a: np.ndarray,
            skip: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of view features for every step of every sequence (and each row's sequence index)."""
    mean, inv, proj = head_in
    rows, owner = [], []
    for i, f in enumerate(seqs):
        x = (f - mean) * inv
        z = x @ proj if proj is not None else x
        w = windows(z, a.shape[0])                              # T x K x d
        v = np.einsum("tkd,kv->tvd", w, a).reshape(len(f), -1)  # T x (V*d)
        keep = slice(min(skip, len(f) - 1), None)
        rows.append(v[keep])
        owner.append(np.full(len(v[keep]), i))
    return np.concatenate(rows).astype(np.float32), np.concatenate(owner)


def _fit_softmax(x: np.ndarray, y: np.ndarray, classes: int, sample_w: np.ndarray, cfg: HeadConfig,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n, m = x.shape
    w = np.zeros((m, classes), np.float32)
    b = np.zeros(classes, np.float32)
    onehot = np.eye(classes, dtype=np.float32)[y]
    sw = (sample_w / sample_w.sum()).astype(np.float32)[:, None]
    mw, vw, mb, vb = (np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b))
    b1, b2 = 0.9, 0.999
    for t in range(1, cfg.steps + 1):
        z = x @ w + b
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) * sw
        gw = x.T @ g + cfg.l2 * w
        gb = g.sum(0)
        mw = b1 * mw + (1 - b1) * gw
        vw = b2 * vw + (1 - b2) * gw * gw
        mb = b1 * mb + (1 - b1) * gb
        vb = b2 * vb + (1 - b2) * gb * gb
        lr = cfg.lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        w -= lr * mw / (np.sqrt(vw) + 1e-8)
        b -= lr * mb / (np.sqrt(vb) + 1e-8)
    return w, b


def fit(seqs: list[np.ndarray], labels: list[int], classes: int, cfg: HeadConfig) -> HeadWeights:
    """Train a head on feature sequences (T_i x D) with one label each; classes are balanced."""
    rng = np.random.default_rng(cfg.seed)
    allf = np.concatenate(seqs)
    mean, inv = _standardiser(allf)
    proj = _pca((allf - mean) * inv, cfg.dim, rng) if cfg.dim else None
    a = view_matrix(cfg.frames, cfg.views)
    x, owner = _design(seqs, (mean, inv, proj), a, cfg.skip_first)
    y = np.asarray(labels)[owner]
    counts = np.bincount(y, minlength=classes).astype(np.float64)
    sample_w = 1.0 / counts[y]
    # standardise the view features too (folded into the weights afterwards)
    vmu, vsd = x.mean(0), x.std(0) + 1e-6
    w, b = _fit_softmax((x - vmu) / vsd, y, classes, sample_w, cfg, rng)
    w = w / vsd[:, None]
    b = b - vmu @ w
    d = proj.shape[1] if proj is not None else allf.shape[1]
    wv = w.reshape(len(cfg.views), d, classes)                  # per view
    full = np.einsum("kv,vdc->kdc", a.astype(np.float32), wv).reshape(cfg.frames * d, classes)
    return HeadWeights(mean=mean, inv_std=inv, weight=full.astype(np.float32), bias=b.astype(np.float32),
                       frames=cfg.frames, proj=proj)


def forward(head: HeadWeights, feats: np.ndarray) -> np.ndarray:
    """The grafted graph's logits for a sequence of features (T x D) from a reset: T x C (float32)."""
    x = (feats.astype(np.float32) - head.mean) * head.inv_std
    z = x @ head.proj if head.proj is not None else x
    w = windows(z, head.frames).reshape(len(feats), -1)
    return (w @ head.weight + head.bias).astype(np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def predict_clip(head: HeadWeights, feats: np.ndarray) -> np.ndarray:
    """A clip's class probabilities as ``eval`` scores it: the mean softmax over its frames."""
    return softmax(forward(head, feats)).mean(0)
