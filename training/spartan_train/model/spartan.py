"""SpartanModel: Long-CLIP (ViT image tower + 248-token text tower) plus SPARTAN's pose branch.

Data flow (docs/model.md 0): video frames -> ViT -> mean over frames = v; tokens -> text tower -> t;
poses -> temporal_attention -> p; query q = projection([t, p]). Retrieval scores cos(q, v).
All encoders return unnormalised features, as the reference does.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .clip import LayerNorm, Transformer, VisionTransformer
from .config import KEEP_POSITIONS, ModelConfig, get_config
from .pose import TemporalTransformer


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.jit.is_scripting()


def _expect_shape(name: str, x: torch.Tensor, shape: tuple[int | None, ...]) -> None:
    # Shape checks give a readable error instead of a broadcast failure deep inside torch.
    # Skipped while tracing for export, where shapes are symbolic.
    if _tracing():
        return
    ok = x.dim() == len(shape) and all(
        s is None or s == d for s, d in zip(shape, x.shape, strict=False)
    )
    if not ok:
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(x.shape)}")


class SpartanModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        # False when the pose branch and fusion were freshly initialised on load (a CLIP or
        # Long-CLIP checkpoint): their outputs are then meaningless until trained.
        self.pose_branch_trained = True
        self.source_format = "fresh"
        self.checkpoint_path: str | None = None

        self.visual = VisionTransformer(
            input_resolution=config.image_resolution,
            patch_size=config.vision_patch_size,
            width=config.vision_width,
            layers=config.vision_layers,
            heads=config.vision_heads,
            output_dim=config.embed_dim,
        )

        width, ctx = config.text_width, config.context_length
        self.transformer = Transformer(width, config.text_layers, config.text_heads)
        self.token_embedding = nn.Embedding(config.vocab_size, width)
        # Rows < KEEP_POSITIONS come from positional_embedding (frozen, as on the reference's
        # fine-tuning path, Q22), the rest from positional_embedding_res (docs/model.md 2.1).
        self.positional_embedding = nn.Parameter(torch.empty(ctx, width), requires_grad=False)
        self.positional_embedding_res = nn.Parameter(torch.empty(ctx, width))
        self.ln_final = LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

        self.temporal_attention = TemporalTransformer(
            use_fft=config.use_fft,
            width=config.pose_width,
            heads=config.pose_heads,
            layers=config.pose_layers,
            output_dim=config.embed_dim,
            max_len=config.pose_max_len,
            dropout=config.pose_dropout,
            mode=config.mode,
            num_frames=config.num_frames,
        )
        self.projection = nn.Linear(2 * config.embed_dim, config.embed_dim)

        # Causal mask: 0 on/below the diagonal, -inf above. Not part of the state dict.
        self.attn_mask: torch.Tensor
        self.register_buffer("attn_mask", torch.empty(ctx, ctx), persistent=False)
        self.reset_buffers()
        self.initialize_parameters()

    def reset_buffers(self) -> None:
        """(Re)compute the constant buffers, which are not in the state dict: the causal text
        mask (0 on and below the diagonal, -inf above) and the pose branch's DFT matrices."""
        ctx = self.config.context_length
        mask = torch.full((ctx, ctx), float("-inf"), device=self.attn_mask.device).triu_(1)
        with torch.no_grad():
            self.attn_mask.copy_(mask)
        self.temporal_attention.reset_buffers()

    # ----------------------------------------------------------------- sizes
    @property
    def image_resolution(self) -> int:
        return self.config.image_resolution

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def context_length(self) -> int:
        return self.config.context_length

    @property
    def num_frames(self) -> int:
        return self.config.num_frames

    @property
    def mode(self) -> str:
        return self.config.mode

    def set_mode(self, mode: str) -> None:
        """Switch the pose branch between "reference" and "corrected" (same weights)."""
        self.config = self.config.replace(mode=mode)  # validates
        self.temporal_attention.mode = mode

    # ----------------------------------------------------------------- init
    def initialize_parameters(self) -> None:
        """Fresh-model init of docs/model.md 5.5. The reference leaves positional_embedding_res
        uninitialised (torch.empty); we start it as a copy of positional_embedding, which is
        also what Long-CLIP's conversion from CLIP does."""
        cfg = self.config
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        with torch.no_grad():
            nn.init.normal_(self.positional_embedding, std=0.01)
            self.positional_embedding_res.copy_(self.positional_embedding)
        width, layers = cfg.text_width, cfg.text_layers
        attn_std = width**-0.5
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        fc_std = (2 * width) ** -0.5
        for block in self.transformer.blocks():
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=attn_std)
        self.init_pose_branch()

    def init_pose_branch(self) -> None:
        """Fresh pose branch and fusion (docs/model.md 5.5), e.g. after loading a (Long-)CLIP
        model."""
        self.temporal_attention.init_fresh()
        nn.init.normal_(self.projection.weight, std=0.02)
        nn.init.zeros_(self.projection.bias)

    # ----------------------------------------------------------------- image
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, R, R] preprocessed images -> [B, E] (unnormalised)."""
        r = self.config.image_resolution
        _expect_shape("images", images, (None, 3, r, r))
        return self.visual(images)

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, R, R] -> [B, E]: mean of the unnormalised per-frame features."""
        r = self.config.image_resolution
        _expect_shape("frames", frames, (None, None, 3, r, r))
        feats = self.visual(frames.flatten(0, 1))
        return feats.unflatten(0, frames.shape[:2]).mean(dim=1)

    # ----------------------------------------------------------------- text
    def positional_table(self) -> torch.Tensor:
        """The effective [248, W] text positional embedding: rows < 20 from positional_embedding,
        the rest from positional_embedding_res. Same values as the reference's mask1/mask2 sums."""
        keep = KEEP_POSITIONS
        return torch.cat([self.positional_embedding[:keep], self.positional_embedding_res[keep:]])

    def encode_text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, 248] token ids -> Long-CLIP text feature t [B, E] (EOT state @ text_projection)."""
        _expect_shape("tokens", tokens, (None, self.config.context_length))
        dtype = self.visual.conv1.weight.dtype
        x = self.token_embedding(tokens).to(dtype) + self.positional_table().to(dtype)
        x = self.transformer(x, self.attn_mask)
        x = self.ln_final(x).to(dtype)
        # EOT (49407) is the largest id, so argmax finds it; gather keeps this export-friendly.
        eot = tokens.argmax(dim=-1)
        x = x.gather(1, eot[:, None, None].expand(-1, 1, x.shape[-1])).squeeze(1)
        return x @ self.text_projection

    # ----------------------------------------------------------------- pose + fusion
    def encode_pose(self, poses: torch.Tensor) -> torch.Tensor:
        """[B, T, 8] relative poses -> pose feature p [B, E]. In reference mode the result for
        one sample depends on the rest of the batch (Q1, Q2)."""
        _expect_shape("poses", poses, (None, None, 8))
        self.temporal_attention.mode = self.config.mode  # the config is the one source of truth
        return self.temporal_attention(poses)

    def fuse(self, text_features: torch.Tensor, pose_features: torch.Tensor) -> torch.Tensor:
        """q = projection(cat[t, p]); weight[:, :E] acts on t, weight[:, E:] on p."""
        e = self.config.embed_dim
        _expect_shape("text_features", text_features, (None, e))
        _expect_shape("pose_features", pose_features, (None, e))
        return self.projection(torch.cat([text_features, pose_features], dim=1))

    def encode_text(self, tokens: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        """SPARTAN's pose-aware text embedding q [B, E] (unnormalised)."""
        if not _tracing() and tokens.shape[0] != poses.shape[0]:
            raise ValueError(
                f"tokens and poses must have the same batch size, got {tokens.shape[0]} "
                f"and {poses.shape[0]}"
            )
        return self.fuse(self.encode_text_features(tokens), self.encode_pose(poses))

    def forward(
        self, frames: torch.Tensor, tokens: torch.Tensor, poses: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(video features v [B, E], query features q [B, E]), both unnormalised."""
        return self.encode_video(frames), self.encode_text(tokens, poses)


def build_model(name_or_config: str | ModelConfig) -> SpartanModel:
    """A freshly initialised model from a named config (`tiny`, `B/16`, `L/14`) or a ModelConfig."""
    if isinstance(name_or_config, str):
        config = get_config(name_or_config)
    elif isinstance(name_or_config, ModelConfig):
        config = name_or_config.replace()
    else:
        raise TypeError(f"build_model takes a config name or ModelConfig, got {name_or_config!r}")
    return SpartanModel(config)
