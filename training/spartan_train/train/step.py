"""One training forward pass (features + loss) as an nn.Module, so DistributedDataParallel can wrap
it, and the validation metric of docs/model.md 10.2."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spartan_train.model import SpartanModel
from spartan_train.train.loss import (
    LossConfig,
    LossParts,
    contrastive_loss,
    own_motion_loss,
    with_term,
)
from spartan_train.train.words import WordHead


def text_features(model: SpartanModel, tokens: Tensor) -> Tensor:
    """``model.encode_text_features`` computed over only the first L positions, L = the last EOT
    position in the batch + 1.

    The text tower is causal, so the state at the EOT token (the only one used) never sees the
    padding after it: dropping trailing positions gives the same features (to float rounding)
    for a fraction of the cost (driving captions use ~100 of 248 positions, short captions ~16).
    """
    ctx = model.context_length
    if tokens.dim() != 2 or tokens.shape[1] != ctx:
        raise ValueError(f"tokens must have shape [*, {ctx}], got {list(tokens.shape)}")
    eot = tokens.argmax(dim=-1)  # EOT (49407) is the largest id
    n = int(eot.max()) + 1 if tokens.shape[0] else ctx
    if n >= ctx:
        return model.encode_text_features(tokens)
    dtype = model.visual.conv1.weight.dtype
    x = model.token_embedding(tokens[:, :n]).to(dtype) + model.positional_table()[:n].to(dtype)
    x = model.transformer(x, model.attn_mask[:n, :n])
    x = model.ln_final(x).to(dtype)
    x = x[torch.arange(x.shape[0], device=x.device), eot]
    return x @ model.text_projection


class ContrastiveStep(nn.Module):
    """forward(frames, long tokens, short tokens, poses) -> LossParts, as docs/model.md 8.2.

    Long and short captions are fused with the same poses, each through its own pose-branch pass
    (independent dropout, Q9), plus a third pass for the pose terms. In reference mode each pass
    sees the whole local batch, as the reference's does (Q1). ``words`` is the head of the
    caption-word term, needed when ``loss.words`` > 0.
    """

    def __init__(self, model: SpartanModel, loss: LossConfig,
                 words: WordHead | None = None) -> None:
        super().__init__()
        if loss.words > 0 and words is None:
            raise ValueError("the caption-word term needs a WordHead")
        self.model = model
        self.loss = loss
        self.words = words

    def forward(self, frames: Tensor, tokens_long: Tensor, tokens_short: Tensor,
                poses: Tensor) -> LossParts:
        m = self.model
        video_raw = m.encode_video(frames)
        video = F.normalize(video_raw, dim=-1)
        t_long, p_long = text_features(m, tokens_long), m.encode_pose(poses)
        text_long = F.normalize(m.fuse(t_long, p_long), dim=-1)
        text_short = pose = None
        if self.loss.short:
            t = text_features(m, tokens_short)
            text_short = F.normalize(m.fuse(t, m.encode_pose(poses)), dim=-1)
        if self.loss.uses_pose_terms:
            pose = m.encode_pose(poses)
        parts = contrastive_loss(video, text_long, m.logit_scale, self.loss, text_short, pose)
        if self.loss.own_motion > 0:
            text_part, motion_part = fusion_parts(m, t_long, p_long)
            own = own_motion_loss(text_part, motion_part, video, m.logit_scale,
                                  self.loss.label_smoothing)
            parts = with_term(parts, "own", own, self.loss.own_motion)
        if self.loss.words > 0:
            assert self.words is not None
            parts = with_term(parts, "words", self.words(video_raw, tokens_long), self.loss.words)
        return parts


def fusion_parts(model: SpartanModel, text: Tensor, pose: Tensor) -> tuple[Tensor, Tensor]:
    """(W_t t, W_p p + b): the fusion's two halves, so that fuse(t, p) = sum of the two."""
    e = model.config.embed_dim
    w, bias = model.projection.weight, model.projection.bias
    return text @ w[:, :e].T, pose @ w[:, e:].T + bias


@torch.no_grad()
def gallery_top1(
    model: SpartanModel,
    batches: Iterable[tuple[Tensor, Tensor, Tensor]],
) -> tuple[int, int]:
    """Text+pose -> video top-1 within each gallery (docs/model.md 10.2): ``batches`` of
    (preprocessed frames [n, K, 3, R, R], long tokens [n, 248], poses [n, T, 8]). Query i is right
    when video i scores highest in its own batch (ties to the first index). Returns (correct,
    total) pooled over all queries. The caller sets eval mode."""
    correct = total = 0
    for frames, tokens, poses in batches:
        v = F.normalize(model.encode_video(frames), dim=-1)
        q = F.normalize(model.fuse(text_features(model, tokens), model.encode_pose(poses)), dim=-1)
        pred = (q @ v.T).argmax(dim=1)
        correct += int((pred == torch.arange(len(pred), device=pred.device)).sum())
        total += len(pred)
    return correct, total
