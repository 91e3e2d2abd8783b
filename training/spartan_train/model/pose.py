"""SPARTAN's pose branch (`temporal_attention`): FFT features + a transformer (docs/model.md
5.2-5.3).

Two modes, same parameters:

- ``reference`` reproduces the released model exactly, quirks included. Q1: the encoder sees the
  tokens as ``[T, B, C]`` although it is batch-first, so at each time row the B samples of the
  batch attend to each other and nothing attends across time. Q2: the FFT features are normalised
  with one scalar mean / unbiased std over the whole batch (zero-padding rows included, no epsilon).
- ``corrected`` attends over the T frames within each sample and normalises each sample's FFT
  features on its own (over its real frequency bins, with an epsilon; the padding rows stay zero),
  so a sample's embedding no longer depends on what else is in the batch.

Row k of the encoder input is [raw pose k | Re FFT bin k | Im FFT bin k] in both modes (rows past
the last bin hold the padding), which keeps the reference's parameter shapes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .clip import Attention

POSE_DIM = 8  # [t, x, y, z, qx, qy, qz, qw]
NORM_EPS = 1e-5  # corrected mode only


def dft_matrices(frames: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """cos and sin of the real DFT as [frames, frames] float32 matrices, zero past bin frames // 2.

    Re F = cos @ x and Im F = -(sin @ x) equal torch.fft.rfft(x, dim=time) to float rounding, and
    the zero rows are the reference's padding of the 13 bins to T = 24 rows. A matrix product
    (unlike aten::fft_rfft) exports to ONNX.
    """
    k = torch.arange(frames, device=device)
    # reduce k*n mod frames before scaling so large angles lose no precision
    angle = (k[:, None] * k[None, :] % frames).double() * (2 * math.pi / frames)
    real_bin = (k <= frames // 2)[:, None]
    return (angle.cos() * real_bin).float(), (angle.sin() * real_bin).float()


def fft_features(x: Tensor, cos: Tensor, sin: Tensor, per_sample: bool) -> Tensor:
    """Normalised [Re | Im] of the real FFT over time, zero-padded to T rows: [B, T, 16]."""
    g = torch.cat([cos @ x, -(sin @ x)], dim=2)
    if not per_sample:
        return (g - g.mean()) / g.std()  # Q2: batch-global scalars, unbiased, no epsilon
    # per sample, over the real bins only; the padding rows stay zero
    real = (cos.abs().sum(dim=1, keepdim=True) > 0).to(g.dtype)  # [T, 1]
    count = real.sum() * g.shape[2]
    mean = (g * real).sum(dim=(1, 2), keepdim=True) / count
    var = ((g - mean) * real).pow(2).sum(dim=(1, 2), keepdim=True) / count
    return (g - mean) / torch.sqrt(var + NORM_EPS) * real


class PoseEncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer`` as the reference builds it: post-norm, ReLU, batch-first."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = Attention(width, heads, dropout=dropout)
        self.linear1 = nn.Linear(width, 4 * width)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(4 * width, width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.norm1(h + self.dropout1(self.self_attn(h)))
        ff = self.linear2(self.dropout(F.relu(self.linear1(h))))
        return self.norm2(h + self.dropout2(ff))


class PoseEncoder(nn.Module):
    def __init__(self, width: int, heads: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(PoseEncoderLayer(width, heads, dropout) for _ in range(layers))

    def layer_list(self) -> list[PoseEncoderLayer]:
        return [m for m in self.layers if isinstance(m, PoseEncoderLayer)]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            h = layer(h)
        return h


class TemporalTransformer(nn.Module):
    """poses [B, T, 8] -> pose feature [B, E]."""

    def __init__(
        self,
        use_fft: bool,
        width: int,
        heads: int,
        layers: int,
        output_dim: int,
        max_len: int = 5000,
        dropout: float = 0.1,
        mode: str = "reference",
        num_frames: int = 24,
    ) -> None:
        super().__init__()
        self.use_fft = use_fft
        self.mode = mode
        self.input_projection = nn.Linear(3 * POSE_DIM if use_fft else POSE_DIM, width)
        self.positional_encoding = nn.Parameter(torch.zeros(1, max_len, width))
        self.transformer_encoder = PoseEncoder(width, heads, layers, dropout)
        self.output_projection = nn.Linear(width, output_dim)
        # DFT matrices for the usual window length, precomputed (not part of the state dict)
        self.dft_cos: Tensor
        self.dft_sin: Tensor
        self.register_buffer("dft_cos", torch.empty(num_frames, num_frames), persistent=False)
        self.register_buffer("dft_sin", torch.empty(num_frames, num_frames), persistent=False)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        cos, sin = dft_matrices(self.dft_cos.shape[0], self.dft_cos.device)
        with torch.no_grad():
            self.dft_cos.copy_(cos)
            self.dft_sin.copy_(sin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corrected = self.mode == "corrected"
        x = x.float()
        if self.use_fft:  # Q3: the reference also computes the FFT without FFT and discards it
            cos, sin = self.dft_cos, self.dft_sin
            if not torch.jit.is_tracing() and x.shape[1] != cos.shape[1]:
                cos, sin = dft_matrices(x.shape[1], x.device)  # an unusual window length
            fft = fft_features(x, cos.to(x.dtype), sin.to(x.dtype), per_sample=corrected)
            x = torch.cat([x, fft], dim=2)
        h = self.input_projection(x) + self.positional_encoding[:, : x.shape[1]]
        if corrected:
            h = self.transformer_encoder(h)  # attention over the T frames of each sample
        else:
            # Q1: [T, B, C] into a batch-first encoder: attention across the batch at each row
            h = self.transformer_encoder(h.transpose(0, 1)).transpose(0, 1)
        return self.output_projection(h.mean(dim=1))

    def init_fresh(self) -> None:
        """docs/model.md 5.5: Linear weights N(0, 0.02^2) with zero bias, positional table zeros,
        norms 1/0, in_proj xavier. In reference mode every layer starts with layer 0's
        in_proj_weight, as the reference's deep-copied encoder layer does; corrected mode draws
        each independently."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.positional_encoding)
        layers = self.transformer_encoder.layer_list()
        for layer in layers:
            nn.init.xavier_uniform_(layer.self_attn.in_proj_weight)
            nn.init.zeros_(layer.self_attn.in_proj_bias)
        if self.mode == "reference":
            with torch.no_grad():
                for layer in layers[1:]:
                    layer.self_attn.in_proj_weight.copy_(layers[0].self_attn.in_proj_weight)
