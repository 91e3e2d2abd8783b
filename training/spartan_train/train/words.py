"""Caption words as a second signal for the image tower (ours, off by default: ``--word-loss``).

The contrastive loss asks a clip to beat the other 31 clips of its batch, and random batches are
mostly told apart by town and weather; the colour of the third house on the left rarely decides
a step. This term asks the clip feature to predict the words of its own caption directly: a
linear head over the training captions' vocabulary, trained with a soft-target cross-entropy
whose target is the caption's word set weighted by inverse document frequency (words found in
every caption weigh nothing, rare ones most). The head is training-only: it is not part of the
model, its checkpoint or the ONNX export.

With ``sides`` a word also carries the side its sentence names first (left, right, centre or
none; a sentence ends at a full stop), so "a pink house" on the left and on the right are two
different outputs: which side a thing is on is what tells two clips of one street apart.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spartan_ros.tokenizer import get_tokenizer

MIN_CAPTIONS = 5  # a word must appear in this many training captions to get an output
SIDE_WORDS = (("left",), ("right",), ("center", "centre"))  # side codes 1, 2, 3; 0 is none


@cache
def _token_id(word: str) -> int:
    (token,) = get_tokenizer().encode(word)
    return token


def side_codes(tokens: Tensor) -> Tensor:
    """[b, L] token ids -> [b, L] the side of each token's sentence: the code of the first side
    word the sentence names (``SIDE_WORDS``), 0 when it names none."""
    b, n = tokens.shape
    code = torch.zeros_like(tokens)
    for side, words in enumerate(SIDE_WORDS, start=1):
        ids = torch.tensor([_token_id(w) for w in words], device=tokens.device)
        code[torch.isin(tokens, ids)] = side
    stop = (tokens == _token_id(".")).long()
    sentence = torch.cumsum(stop, dim=1) - stop  # a full stop belongs to the sentence it ends
    position = torch.arange(n, device=tokens.device).expand(b, n)
    named = torch.where(code > 0, position, n)  # n: this token names no side
    first = torch.full((b, n), n, device=tokens.device, dtype=torch.long)
    first = first.scatter_reduce(1, sentence, named, reduce="amin").gather(1, sentence)
    return torch.where(first < n, code.gather(1, first.clamp_max(n - 1)), 0)


def caption_terms(tokens: Tensor, vocab_size: int, sides: bool) -> Tensor:
    """[b, L] token ids -> [b, L] term ids: the token, plus ``side * vocab_size`` with sides."""
    if not sides:
        return tokens
    return tokens + side_codes(tokens) * vocab_size


class WordHead(nn.Module):
    """forward(video features [b, E], caption tokens [b, L]) -> the word term (a scalar).

    The vocabulary and weights are read from the training captions' tokens ``[N, L]`` once; the
    same captions give the same head on every rank.
    """

    def __init__(self, captions: np.ndarray, embed_dim: int, vocab_size: int | None = None,
                 min_captions: int = MIN_CAPTIONS, sides: bool = False) -> None:
        """``vocab_size``: the text tower's (default: the tokenizer's)."""
        super().__init__()
        vocab_size = get_tokenizer().vocab_size if vocab_size is None else vocab_size
        if captions.ndim != 2 or len(captions) == 0:
            raise ValueError(f"captions must be a non-empty [N, L] token array, got shape "
                             f"{list(captions.shape)}")
        if captions.min() < 0 or captions.max() >= vocab_size:
            raise ValueError(f"token ids must lie in [0, {vocab_size})")
        self.vocab_size, self.sides = vocab_size, sides
        terms = caption_terms(torch.from_numpy(captions).long(), vocab_size, sides).numpy()
        span = vocab_size * (len(SIDE_WORDS) + 1 if sides else 1)
        words, counts = caption_frequencies(terms, vocab_size, span)
        keep = counts >= min_captions
        words, counts = words[keep], counts[keep]
        if len(words) == 0:
            raise ValueError(f"no word appears in {min_captions} or more training captions")
        n = len(words)
        column = torch.full((span,), n, dtype=torch.long)  # column n: not a head word
        column[torch.from_numpy(words)] = torch.arange(n)
        self.column: Tensor
        self.idf: Tensor
        self.register_buffer("column", column)
        idf = [math.log(len(captions) / c) for c in counts.tolist()]
        self.register_buffer("idf", torch.tensor(idf, dtype=torch.float32))
        self.linear = nn.Linear(embed_dim, n)
        nn.init.normal_(self.linear.weight, std=embed_dim ** -0.5)
        nn.init.zeros_(self.linear.bias)

    @property
    def words(self) -> int:
        return self.linear.out_features

    def targets(self, tokens: Tensor) -> Tensor:
        """[b, L] token ids -> [b, V] target distributions (rows of zeros when a caption has
        no head word with a weight)."""
        n = self.words
        hits = torch.zeros(tokens.shape[0], n + 1, device=tokens.device)
        terms = caption_terms(tokens, self.vocab_size, self.sides)
        hits.scatter_(1, self.column[terms], 1.0)
        weighted = hits[:, :n] * self.idf
        return weighted / weighted.sum(dim=1, keepdim=True).clamp_min(1e-12)

    def forward(self, video: Tensor, tokens: Tensor) -> Tensor:
        with torch.autocast(video.device.type, enabled=False):
            logits = self.linear(video.float())
            target = self.targets(tokens)
            return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def caption_frequencies(terms: np.ndarray, vocab_size: int,
                        span: int) -> tuple[np.ndarray, np.ndarray]:
    """(term ids, number of captions holding each) over term ids in [0, span), padding (id 0)
    and the start and end of text (on any side) left out: they say nothing about the scene."""
    present = np.zeros(span, dtype=np.int64)
    for row in terms:
        present[np.unique(row)] += 1
    tokenizer = get_tokenizer()
    markers = np.array([0, tokenizer.sot, tokenizer.eot])
    present[(markers[:, None] + np.arange(0, span, vocab_size)[None]).ravel()] = 0
    words = np.flatnonzero(present)
    return words, present[words]
