"""SPARTAN's contrastive loss (docs/model.md 8.2), with features gathered across ranks.

Per rank, with local batch b and world size W, every logit matrix is [b, b*W]: the local rows
against the features of all ranks, concatenated in rank order, so the target of local row i is
``rank * b + i``. The gather keeps autograd (``torch.distributed.nn.functional.all_gather``):
the gradient of a gathered feature flows back to the rank that computed it. One process means no
gather at all.

Two loss kinds:

- ``reference`` (SPARTAN with ``--new_loss``, the released checkpoint):
  long  = 0.5 * CE(i2t_long) / 2 + CE(t2i_long) / 2        (i.e. 0.25 and 0.5, Q7)
  short = 0.49 CE(i2t_short) + 0.49 CE(t2i_short) + 0.01 CE(pose2i) + 0.01 CE(i2pose)
  (``pose_weight`` sets the two 0.01s; a larger one asks the clips' pixels and their motion
  to predict each other, so the pose input has something in the video to match)
  (``pose_terms=False`` gives SPARTAN without ``--new_loss``: short = (i2t + t2i) / 2)
- ``longclip``: Long-CLIP's symmetric weights, long = (i2t + t2i) / 2, short = (i2t + t2i) / 2,
  no pose terms.

The short terms compare short-caption queries against PCA_k of the video features (k = 32), and
the pose terms PCA_k of the pose features; PCA is computed on the local batch, before gathering.

One optional term of our own (``own_motion > 0``; off by default, so the reference loss is
unchanged) trains what the node does with it. The node scores every stored segment j with its
own recorded motion: score(text i, j) = cos(W_t t_i + W_p p_j + b, v_j). The reference loss only
ever sees a caption fused with its own clip's poses, never with another clip's, so nothing teaches
the fused query to prefer the clip whose motion *and* pixels fit the words. The own-motion term is
that ranking as a cross-entropy over the batch (text i against every clip j, each fused with
clip j's motion, target j = i). With batches drawn several windows per drive
(``--drive-group``), its negatives are the other places of the same drive, as in the node.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

LOSS_KINDS = ("reference", "longclip")
PCA_DIM = 32
LABEL_SMOOTHING = 0.1
# SPARTAN's weights (docs/model.md 8.2 steps 8-9)
LONG_WEIGHTS = {"reference": (0.25, 0.5), "longclip": (0.5, 0.5)}  # (i2t, t2i)
SHORT_WEIGHTS = (0.49, 0.49)  # (i2t_short, t2i_short)
POSE_WEIGHT = 0.01  # each of pose2i and i2pose in the reference


@dataclass
class LossConfig:
    kind: str = "reference"
    short: bool = True  # include the short-caption terms
    pose_terms: bool = True  # SPARTAN's new_loss pose terms (reference kind only)
    pca_dim: int = PCA_DIM
    label_smoothing: float = LABEL_SMOOTHING
    own_motion: float = 0.0  # weight of the own-motion term (ours; 0 = the reference loss)
    pose_weight: float = POSE_WEIGHT  # weight of each pose term
    words: float = 0.0  # weight of the caption-word term (ours, train/words.py; 0 = off)

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"loss kind must be one of {LOSS_KINDS}, got {self.kind!r}")
        if self.pca_dim < 1:
            raise ValueError(f"pca_dim must be >= 1, got {self.pca_dim}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        weights = (("own_motion", self.own_motion), ("pose_weight", self.pose_weight),
                   ("words", self.words))
        for name, weight in weights:
            if not (weight >= 0.0 and math.isfinite(weight)):
                raise ValueError(f"{name} must be a finite weight >= 0, got {weight}")

    @property
    def uses_pose_terms(self) -> bool:
        return self.short and self.pose_terms and self.kind == "reference"


@dataclass
class LossParts:
    loss: Tensor  # long + short (+ own_motion x own + words x words), what is optimised
    long: Tensor
    short: Tensor
    own: Tensor | None = None  # the own-motion term, unweighted (None when its weight is 0)
    words: Tensor | None = None  # the caption-word term, unweighted (None when its weight is 0)


def pca(x: Tensor, k: int = PCA_DIM) -> Tensor:
    """Reconstruction of the rows of ``x`` [b, E] from their first ``k`` principal components.

    ``Xc V_k V_k^T + mu`` with ``Xc = x - mu`` and V_k the first k right singular vectors of Xc
    (fp32, thin SVD). The centred rows span at most min(b - 1, E) dimensions, so when k covers that
    the result is ``x`` itself (Q6: always the case for local batches <= 33 at k = 32); we return
    ``x`` directly then, which is the same value and the same (identity) gradient, and avoids
    back-propagating through an SVD with a zero singular value.
    """
    if x.dim() != 2:
        raise ValueError(f"pca expects a [b, E] matrix, got shape {list(x.shape)}")
    if k >= min(x.shape[0] - 1, x.shape[1]):
        return x
    with torch.autocast(x.device.type, enabled=False):
        xf = x.float()
        mu = xf.mean(dim=0, keepdim=True)
        xc = xf - mu
        _, _, vh = torch.linalg.svd(xc, full_matrices=False)
        vk = vh[:k].T  # [E, k]
        return (xc @ vk @ vk.T + mu).to(x.dtype)


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(x: Tensor) -> Tensor:
    """All ranks' ``x`` concatenated in rank order along dim 0, with autograd; ``x`` alone in a
    single process. Every rank must pass the same shape."""
    _, size = world()
    if size == 1:
        return x
    from torch.distributed.nn.functional import all_gather  # imported lazily: needs distributed

    with warnings.catch_warnings():
        # torch 2.13 marks it deprecated in favour of a private API; it works and is documented
        warnings.simplefilter("ignore", FutureWarning)
        parts = all_gather(x.contiguous())
    return torch.cat(parts, dim=0)


def _ce(logits: Tensor, targets: Tensor, smoothing: float) -> Tensor:
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # softmax / CE in fp32 under autocast, as the reference
    return F.cross_entropy(logits, targets, label_smoothing=smoothing)


def contrastive_loss(
    video: Tensor,
    text_long: Tensor,
    logit_scale: Tensor,
    config: LossConfig,
    text_short: Tensor | None = None,
    pose: Tensor | None = None,
) -> LossParts:
    """The loss of one rank's batch.

    ``video``: L2-normalised pooled video features [b, E]; ``text_long`` / ``text_short``:
    L2-normalised fused queries of the long / short captions [b, E]; ``pose``: the unnormalised pose
    features [b, E] of a separate pose pass (pose terms only); ``logit_scale``: the model's
    parameter (the logits are scaled by its exp, unclamped, Q21).
    """
    b = video.shape[0]
    for name, t in (("text_long", text_long), ("text_short", text_short), ("pose", pose)):
        if t is not None and t.shape != video.shape:
            raise ValueError(f"{name} has shape {list(t.shape)}, video {list(video.shape)}")
    if config.short and text_short is None:
        raise ValueError("the short-caption terms need text_short")
    if config.uses_pose_terms and pose is None:
        raise ValueError("the pose terms need pose features")
    rank, _ = world()
    scale = logit_scale.exp()
    targets = torch.arange(b, device=video.device) + rank * b
    eps = config.label_smoothing

    def pair(local_a: Tensor, local_b: Tensor, all_a: Tensor, all_b: Tensor) -> tuple[Tensor, ...]:
        # a->b: local a rows against every rank's b; b->a: local b rows against every rank's a
        a2b = _ce(scale * local_a @ all_b.T, targets, eps)
        b2a = _ce(scale * local_b @ all_a.T, targets, eps)
        return a2b, b2a

    video_all = gather(video)
    i2t, t2i = pair(video, text_long, video_all, gather(text_long))
    w_i2t, w_t2i = LONG_WEIGHTS[config.kind]
    long = w_i2t * i2t + w_t2i * t2i

    short = torch.zeros((), device=video.device, dtype=long.dtype)
    if config.short:
        assert text_short is not None
        video_s = pca(video, config.pca_dim)  # not re-normalised, as the reference
        video_s_all = gather(video_s)
        i2ts, ts2i = pair(video_s, text_short, video_s_all, gather(text_short))
        if config.uses_pose_terms:
            assert pose is not None
            pose_s = F.normalize(pca(pose, config.pca_dim), dim=-1)
            i2ps, ps2i = pair(video_s, pose_s, video_s_all, gather(pose_s))
            w, wp = SHORT_WEIGHTS, config.pose_weight
            short = w[0] * i2ts + w[1] * ts2i + wp * (ps2i + i2ps)
        else:
            short = (i2ts + ts2i) / 2
    return LossParts(loss=long + short, long=long, short=short)


def with_term(parts: LossParts, name: str, term: Tensor, weight: float) -> LossParts:
    """``parts`` with an optional term (``own`` or ``words``) kept and, weighted, added to the
    optimised loss."""
    return replace(parts, loss=parts.loss + weight * term, **{name: term})


def own_motion_loss(
    text_part: Tensor,
    motion_part: Tensor,
    video: Tensor,
    logit_scale: Tensor,
    smoothing: float = LABEL_SMOOTHING,
) -> Tensor:
    """Cross-entropy of text i against every clip j scored with clip j's own motion.

    ``text_part`` = W_t t [b, E], ``motion_part`` = W_p p + bias [b, E] (the fusion split by
    columns, so q_ij = text_part_i + motion_part_j), ``video`` the L2-normalised clip features
    [b, E]. The cosine is expanded as in ``runtime/scoring.py`` (no [b, b, E] tensor):
    q_ij . v_j = a_i . v_j + c_j . v_j and |q_ij|^2 = |a_i|^2 + 2 a_i . c_j + |c_j|^2.
    Local rows against every rank's clips, like the other terms.
    """
    if not (text_part.shape == motion_part.shape == video.shape):
        raise ValueError(f"text_part {list(text_part.shape)}, motion_part "
                         f"{list(motion_part.shape)} and video {list(video.shape)} must match")
    rank, _ = world()
    b = video.shape[0]
    with torch.autocast(video.device.type, enabled=False):  # the expansion wants fp32
        a, c_all, v_all = (_full(x) for x in (text_part, gather(motion_part), gather(video)))
        dot = a @ v_all.T + (c_all * v_all).sum(dim=1)[None, :]
        norm2 = (a * a).sum(dim=1)[:, None] + 2 * a @ c_all.T + (c_all * c_all).sum(dim=1)[None]
        cos = dot / norm2.clamp_min(1e-12).sqrt()
        targets = torch.arange(b, device=video.device) + rank * b
        return _ce(logit_scale.exp() * cos, targets, smoothing)


def _full(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
