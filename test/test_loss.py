"""The contrastive loss of docs/model.md 8.2 on small hand-made cases, and the gather across
ranks."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from spartan_train.train.loss import LossConfig, contrastive_loss, own_motion_loss, pca
from spartan_train.train.schedule import ClockCosine, WarmupCosine, lr_at


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def _pca_by_formula(x: torch.Tensor, k: int) -> torch.Tensor:
    """docs/model.md 8.2 step 3 written out, with no shortcut."""
    mu = x.mean(dim=0, keepdim=True)
    xc = x - mu
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)
    vk = vh[:k].T
    return xc @ vk @ vk.T + mu


# --------------------------------------------------------------------------- PCA


@pytest.mark.parametrize("b", [2, 14, 32, 33])
def test_pca_is_identity_for_small_batches(b: int) -> None:
    x = _unit(b, 64, seed=b)
    assert pca(x, 32) is x  # the shortcut
    # ...and it is what the formula gives (Q6: identity for b <= 33)
    assert torch.allclose(_pca_by_formula(x, 32), x, atol=1e-10)


def test_pca_is_identity_when_k_covers_the_width() -> None:
    x = _unit(50, 16)
    assert pca(x, 32) is x
    assert torch.allclose(_pca_by_formula(x, 32), x, atol=1e-10)


def test_pca_projects_larger_batches() -> None:
    x = _unit(40, 64, seed=3).float().requires_grad_(True)
    y = pca(x, 32)
    want = _pca_by_formula(x.detach().double(), 32).float()
    assert torch.allclose(y, want, atol=1e-5)
    assert not torch.allclose(y, x, atol=1e-3)  # b = 40 > 33: a real reduction
    # the centred result has rank 32
    s = torch.linalg.svdvals((y - y.mean(0)).detach().double())
    assert (s > 1e-5).sum() == 32
    y.pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_pca_rejects_non_matrices() -> None:
    with pytest.raises(ValueError, match=r"\[b, E\]"):
        pca(torch.zeros(2, 3, 4))


# --------------------------------------------------------------------------- weights


def _ce(logits: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, torch.arange(logits.shape[0]), label_smoothing=0.1)


def test_reference_weights() -> None:
    b, e = 6, 16
    v, tl, ts, p = (_unit(b, e, seed=s) for s in range(4))
    ls = torch.tensor(2.0, dtype=torch.float64)
    parts = contrastive_loss(v, tl, ls, LossConfig(), text_short=ts, pose=p)
    s = math.exp(2.0)
    pn = F.normalize(p, dim=-1)  # PCA is the identity here (b <= 33)
    long = 0.25 * _ce(s * v @ tl.T) + 0.5 * _ce(s * tl @ v.T)
    short = (0.49 * _ce(s * v @ ts.T) + 0.49 * _ce(s * ts @ v.T)
             + 0.01 * _ce(s * pn @ v.T) + 0.01 * _ce(s * v @ pn.T))
    assert torch.allclose(parts.long, long)
    assert torch.allclose(parts.short, short)
    assert torch.allclose(parts.loss, long + short)


def test_pose_weight_scales_only_the_pose_terms() -> None:
    b, e = 6, 16
    v, tl, ts, p = (_unit(b, e, seed=s) for s in range(4))
    ls = torch.tensor(2.0, dtype=torch.float64)
    s = math.exp(2.0)
    pn = F.normalize(p, dim=-1)
    pose_terms = _ce(s * pn @ v.T) + _ce(s * v @ pn.T)
    ref = contrastive_loss(v, tl, ls, LossConfig(), text_short=ts, pose=p)
    heavy = contrastive_loss(v, tl, ls, LossConfig(pose_weight=0.5), text_short=ts, pose=p)
    assert torch.allclose(heavy.long, ref.long)
    assert torch.allclose(heavy.short - ref.short, (0.5 - 0.01) * pose_terms)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="pose_weight"):
            LossConfig(pose_weight=bad)


def test_reference_without_pose_terms_and_longclip_weights() -> None:
    b, e = 5, 8
    v, tl, ts = (_unit(b, e, seed=s) for s in range(3))
    ls = torch.tensor(math.log(10.0), dtype=torch.float64)
    s = 10.0
    short = (_ce(s * v @ ts.T) + _ce(s * ts @ v.T)) / 2
    ref = contrastive_loss(v, tl, ls, LossConfig(pose_terms=False), text_short=ts)
    assert torch.allclose(ref.long, 0.25 * _ce(s * v @ tl.T) + 0.5 * _ce(s * tl @ v.T))
    assert torch.allclose(ref.short, short)
    lc = contrastive_loss(v, tl, ls, LossConfig(kind="longclip"), text_short=ts)
    assert torch.allclose(lc.long, (_ce(s * v @ tl.T) + _ce(s * tl @ v.T)) / 2)
    assert torch.allclose(lc.short, short)
    no_short = contrastive_loss(v, tl, ls, LossConfig(short=False))
    assert float(no_short.short) == 0.0
    assert torch.allclose(no_short.loss, ref.long)


def test_perfect_alignment_gives_low_loss() -> None:
    # orthonormal rows: matching pairs have cosine 1, all others 0
    b, e = 8, 16
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(e, b, dtype=torch.float64, generator=g))
    x = q.T.contiguous()
    eps = 0.1
    qc, qo = 1 - eps + eps / b, eps / b  # label-smoothed target
    entropy = -(qc * math.log(qc) + (b - 1) * qo * math.log(qo))
    weights = 0.25 + 0.5 + 0.49 + 0.49 + 0.01 + 0.01
    # at the scale where softmax reproduces the smoothed target, every CE is at its minimum
    ls = torch.tensor(math.log(math.log(qc / qo)), dtype=torch.float64)
    aligned = contrastive_loss(x, x, ls, LossConfig(), text_short=x, pose=x)
    assert float(aligned.loss) == pytest.approx(weights * entropy, rel=1e-9)
    shuffled = x[torch.roll(torch.arange(b), 1)]
    wrong = contrastive_loss(x, shuffled, ls, LossConfig(), text_short=shuffled, pose=shuffled)
    assert float(wrong.loss) > 5 * float(aligned.loss)
    # at the reference's scale 100, label smoothing charges over-confidence: CE = lse - qc * 100
    ls100 = torch.tensor(math.log(100.0), dtype=torch.float64)
    at100 = contrastive_loss(x, x, ls100, LossConfig(), text_short=x, pose=x)
    ce100 = math.log(math.exp(100.0) + b - 1) - qc * 100.0
    assert float(at100.loss) == pytest.approx(weights * ce100, rel=1e-9)


def test_logit_scale_gets_a_gradient_and_is_unclamped() -> None:
    v, t = _unit(4, 8, seed=1), _unit(4, 8, seed=2)
    ls = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)  # exp(10) >> 100
    parts = contrastive_loss(v, t, ls, LossConfig(short=False))
    parts.loss.backward()
    assert ls.grad is not None and ls.grad != 0
    clamped = contrastive_loss(v, t, torch.tensor(math.log(100.0)), LossConfig(short=False))
    assert not torch.allclose(parts.loss.detach().float(), clamped.loss.float())


def test_bad_inputs() -> None:
    v = _unit(4, 8)
    ls = torch.tensor(1.0)
    with pytest.raises(ValueError, match="text_short"):
        contrastive_loss(v, v, ls, LossConfig())
    with pytest.raises(ValueError, match="pose"):
        contrastive_loss(v, v, ls, LossConfig(), text_short=v)
    with pytest.raises(ValueError, match="shape"):
        contrastive_loss(v, _unit(3, 8), ls, LossConfig(short=False))
    with pytest.raises(ValueError, match="loss kind"):
        LossConfig(kind="clip")


# --------------------------------------------------------------------------- own-motion term


def _own_motion_naive(text: torch.Tensor, pose: torch.Tensor, video: torch.Tensor,
                      fusion: torch.nn.Linear, ls: torch.Tensor) -> torch.Tensor:
    """Every (caption i, clip j) pair fused explicitly, as the node's naive scoring would."""
    b = text.shape[0]
    logits = torch.empty(b, b, dtype=text.dtype)
    for i in range(b):
        for j in range(b):
            q = F.normalize(fusion(torch.cat([text[i], pose[j]])), dim=-1)
            logits[i, j] = ls.exp() * (q @ video[j])
    return F.cross_entropy(logits, torch.arange(b), label_smoothing=0.1)


def test_own_motion_term_is_the_node_ranking_as_cross_entropy() -> None:
    from spartan_train.model import build_model
    from spartan_train.train.step import fusion_parts

    torch.manual_seed(0)
    model = build_model("tiny").double()
    e = model.config.embed_dim
    text, pose, video = _unit(6, e, seed=1), _unit(6, e, seed=2), _unit(6, e, seed=3)
    ls = torch.tensor(math.log(30.0), dtype=torch.float64)
    a, c = fusion_parts(model, text, pose)
    assert torch.allclose(a + c, model.fuse(text, pose), atol=1e-12)
    fast = own_motion_loss(a, c, video, ls)
    slow = _own_motion_naive(text, pose, video, model.projection, ls)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-9)
    # the term falls when each clip's own motion is what makes its caption fit
    aligned = own_motion_loss(video, torch.zeros_like(video), video, ls)
    assert aligned.item() < own_motion_loss(a, c, video, ls).item()
    with pytest.raises(ValueError, match="must match"):
        own_motion_loss(a, c[:3], video, ls)
    with pytest.raises(ValueError, match="own_motion"):
        LossConfig(own_motion=-1.0)


# --------------------------------------------------------------------------- schedule


def test_warmup_cosine() -> None:
    assert lr_at(0, 1.0, 200, 1000) == pytest.approx(1 / 200)
    assert lr_at(199, 1.0, 200, 1000) == pytest.approx(1.0)
    assert lr_at(200, 1.0, 200, 1000) == pytest.approx(1.0)
    assert lr_at(600, 1.0, 200, 1000) == pytest.approx(0.5)
    assert lr_at(1000, 1.0, 200, 1000) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(5000, 1.0, 200, 1000) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(0, 2.0, 0, 10) == pytest.approx(2.0)
    s = WarmupCosine(1e-3, 10, 100)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert s.apply(opt, 4) == pytest.approx(5e-4)
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)
    t = WarmupCosine(0.0, 0, 1)
    t.load_state_dict(s.state_dict())
    assert t == s


def test_clock_cosine_follows_the_share_of_the_budget_used() -> None:
    s = ClockCosine(1.0, warmup=2)
    assert s.lr(0) == pytest.approx(0.5) and s.lr(1) == pytest.approx(1.0)  # warm-up in steps
    s.advance(0.2)
    assert s.lr(2) == pytest.approx(1.0)  # the cosine starts where warm-up ended: 20 % used
    s.advance(0.6)
    assert s.lr(3) == pytest.approx(0.5)  # half-way through the remaining 80 %
    s.advance(1.0)
    assert s.lr(4) == pytest.approx(0.0, abs=1e-12)
    s.advance(3.0)  # past the deadline: clamped
    assert s.used == 1.0 and s.lr(5) == pytest.approx(0.0, abs=1e-12)

    # a resumed run carries on from the share used and ends at its own deadline
    half = ClockCosine(1.0, warmup=0)
    half.advance(0.5)
    assert half.lr(10) == pytest.approx(1.0)  # warm_end = 0.5 here (no warm-up steps)
    half.advance(0.75)
    resumed = ClockCosine(0.0, 0)
    resumed.load_state_dict(half.state_dict())
    assert resumed.lr(11) == pytest.approx(half.lr(11))
    resumed.advance(0.0)
    assert resumed.used == pytest.approx(0.75)
    resumed.advance(0.5)  # half of the new budget: half of the 25 % left
    assert resumed.used == pytest.approx(0.875)

    with pytest.raises(ValueError, match="counts steps"):
        ClockCosine(1.0, 0).load_state_dict(WarmupCosine(1.0, 0, 10).state_dict())
    with pytest.raises(ValueError, match="clock"):
        WarmupCosine(1.0, 0, 10).load_state_dict(half.state_dict())
    with pytest.raises(ValueError):
        ClockCosine(-1.0, 0)


# --------------------------------------------------------------------------- gather (2 ranks)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _features(b: int, e: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return [torch.randn(b, e, generator=g, dtype=torch.float64) for _ in range(4)]


def _loss_of(raw: list[torch.Tensor], ls: torch.Tensor) -> torch.Tensor:
    v, tl, ts = (F.normalize(x, dim=-1) for x in raw[:3])
    own = own_motion_loss(raw[2], raw[3], v, ls)  # gathered the same way
    return contrastive_loss(v, tl, ls, LossConfig(), text_short=ts, pose=raw[3]).loss + own


def _rank_main(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        full = _features(4 * world, 8)
        local = [x[rank * 4:(rank + 1) * 4].clone().requires_grad_(True) for x in full]
        ls = torch.tensor(math.log(20.0), dtype=torch.float64, requires_grad=True)
        loss = _loss_of(local, ls)
        loss.backward()
        assert ls.grad is not None
        out[rank] = (loss.item(), [x.grad for x in local], ls.grad.item())
    finally:
        dist.destroy_process_group()


def test_gathered_loss_matches_one_process_on_the_whole_batch() -> None:
    """Mean over 2 ranks of the gathered loss == the loss of one process holding both halves
    (PCA is the identity at b = 4), and gradients flow back across ranks through the gather: the
    local feature gradient / world == the one-process gradient of the same rows."""
    world = 2
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank_main, args=(world, _free_port(), out), nprocs=world, join=True)
        results = dict(out)
    full = [x.clone().requires_grad_(True) for x in _features(4 * world, 8)]
    ls = torch.tensor(math.log(20.0), dtype=torch.float64, requires_grad=True)
    loss = _loss_of(full, ls)
    loss.backward()
    mean = sum(results[r][0] for r in range(world)) / world
    assert mean == pytest.approx(loss.item(), rel=1e-10)
    for r in range(world):
        for g_local, x in zip(results[r][1], full, strict=True):
            assert x.grad is not None
            assert torch.allclose(g_local / world, x.grad[r * 4:(r + 1) * 4], atol=1e-12)
    assert ls.grad is not None
    assert sum(results[r][2] for r in range(world)) / world == pytest.approx(ls.grad.item())
