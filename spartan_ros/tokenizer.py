"""CLIP byte-level BPE tokenizer with Long-CLIP's 248-token context (numpy only).

Produces the same ids as the reference ``simple_tokenizer.py`` (docs/model.md section 3). The
merges file ``bpe_simple_vocab_16e6.txt.gz`` (OpenAI CLIP's, MIT licence: see
``spartan_ros/vocab/NOTICE.md``) is package data of spartan_ros, so pip wheels and colcon installs
carry it; ``SPARTAN_BPE_PATH`` points at another copy.
"""

from __future__ import annotations

import gzip
import heapq
import html
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

import ftfy
import numpy as np
import regex

VOCAB_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_MD5 = "933b7abbbbde62c36f02f0e6ccde464f"  # checked by the tests only
CONTEXT_LENGTH = 248  # Long-CLIP: 4 * 77 - 3 * 20
SOT_TEXT = "<|startoftext|>"
EOT_TEXT = "<|endoftext|>"
# 49152 vocabulary entries were planned: 256 bytes, 256 bytes + "</w>", the merges, 2 specials.
NUM_MERGES = 49152 - 256 - 2
_WORD_END = "</w>"
_BPE_CACHE_SIZE = 1 << 16

# Order matters: the special tokens first, then contractions, letter runs, single digits, and runs
# of anything else that is not whitespace.
_PRETOKENIZE = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


def byte_to_unicode() -> dict[int, str]:
    """GPT-2 style byte -> printable character map, so that BPE never sees whitespace/control bytes.

    Bytes that already print as themselves keep their code point; the remaining 68 bytes get code
    points 256, 257, ... in byte order.
    """
    printable = set(range(ord("!"), ord("~") + 1))
    printable |= set(range(ord("¡"), ord("¬") + 1))
    printable |= set(range(ord("®"), ord("ÿ") + 1))
    table: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def clean_text(text: str) -> str:
    """The reference's normalisation: ftfy, HTML-unescape twice, collapse whitespace, lowercase."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


def packaged_vocab_path() -> Path:
    """The vocabulary installed with spartan_ros (``spartan_ros/vocab/``)."""
    return Path(str(resources.files("spartan_ros") / "vocab" / VOCAB_FILENAME))


def default_vocab_path() -> Path:
    """Where the merges file is: ``$SPARTAN_BPE_PATH``, else the one installed with spartan_ros."""
    env = os.environ.get("SPARTAN_BPE_PATH")
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"SPARTAN_BPE_PATH points to {path}, which is not a file")
        return path
    path = packaged_vocab_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"BPE vocabulary {VOCAB_FILENAME} not found at {path}: this spartan_ros install lacks "
            "its package data; reinstall it, or set SPARTAN_BPE_PATH to a copy of the file"
        )
    return path


class Tokenizer:
    """Byte-level BPE encoder/decoder built from the CLIP merges file."""

    def __init__(self, vocab_path: str | os.PathLike[str] | None = None) -> None:
        path = Path(vocab_path) if vocab_path is not None else default_vocab_path()
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                lines = f.read().split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read BPE vocabulary {path}: {e}") from e
        # Line 0 is a version header; the merges used are the next NUM_MERGES lines.
        merge_lines = lines[1 : NUM_MERGES + 1]
        merges: list[tuple[str, str]] = []
        for n, line in enumerate(merge_lines, start=2):
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(
                    f"BPE vocabulary {path} line {n}: expected two symbols, got {line!r}"
                )
            merges.append((parts[0], parts[1]))
        if len(merges) != NUM_MERGES:
            raise ValueError(f"BPE vocabulary {path} has {len(merges)} merges, need {NUM_MERGES}")

        self.byte_encoder = byte_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        # Vocabulary order is by code point of the mapped character: the self-printing bytes first
        # ("!" is id 0), then the 68 remapped ones (U+0100...).
        symbols = sorted(self.byte_encoder.values())
        vocab = symbols + [s + _WORD_END for s in symbols] + [a + b for a, b in merges]
        vocab += [SOT_TEXT, EOT_TEXT]
        self.encoder: dict[str, int] = {s: i for i, s in enumerate(vocab)}
        self.decoder: dict[int, str] = {i: s for s, i in self.encoder.items()}
        self.merge_rank: dict[tuple[str, str], int] = {m: r for r, m in enumerate(merges)}
        self.sot: int = self.encoder[SOT_TEXT]
        self.eot: int = self.encoder[EOT_TEXT]
        self.vocab_size = len(vocab)
        # Bytes in the longest symbol (a word of n bytes gives at least n / this many ids).
        self.longest_symbol = max(len(v.removesuffix(_WORD_END)) for v in vocab[:-2])
        self._word_ids = lru_cache(maxsize=_BPE_CACHE_SIZE)(self._word_ids_uncached)

    def bpe(self, word: str) -> list[str]:
        """Merge the byte-mapped ``word`` into vocabulary symbols (last one carries ``</w>``).

        The reference merges, round after round, every occurrence of the lowest-ranked adjacent
        pair, left to right; that costs O(n) per round and O(n^2) per word. Here the pairs wait
        in a heap ordered by (rank, position) and the symbols form a linked list, so a word
        costs O(n log n). The order of merges is the reference's: pairs of one rank go left to
        right, and a pair formed by a merge always ranks after it, because every symbol of this
        vocabulary is made by exactly one merge, later than those of its parts (the tests check
        both facts on the file and compare with the reference).
        """
        symbols = [*word[:-1], word[-1] + _WORD_END]  # "" marks a symbol merged into its left
        n = len(symbols)
        rank = self.merge_rank
        following = list(range(1, n + 1))  # index of the next live symbol (n: none)
        preceding = list(range(-1, n - 1))  # index of the previous live symbol (-1: none)
        heap = [(r, i) for i in range(n - 1)
                if (r := rank.get((symbols[i], symbols[i + 1]))) is not None]
        heapq.heapify(heap)
        while heap:
            r, i = heapq.heappop(heap)
            j = following[i] if symbols[i] else n
            if j >= n or rank.get((symbols[i], symbols[j])) != r:
                continue  # a pair that an earlier merge has broken
            merged = symbols[i] + symbols[j]
            symbols[i], symbols[j] = merged, ""
            k = following[i] = following[j]
            if k < n:
                preceding[k] = i
                if (rk := rank.get((merged, symbols[k]))) is not None:
                    heapq.heappush(heap, (rk, i))
            h = preceding[i]
            if h >= 0 and (rh := rank.get((symbols[h], merged))) is not None:
                heapq.heappush(heap, (rh, h))
        return [s for s in symbols if s]

    def _word_ids_uncached(self, word: str) -> tuple[int, ...]:
        if word in (SOT_TEXT, EOT_TEXT):  # literal special tokens in the text keep their meaning
            return (self.encoder[word],)
        return tuple(self.encoder[s] for s in self.bpe(word))

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """BPE ids of ``text`` after cleaning, without SOT/EOT.

        ``max_tokens`` bounds the work for a caller that keeps only the first ids: words are
        encoded until at least ``max_tokens`` ids are out, and a word longer than
        ``max_tokens * longest_symbol`` bytes is cut to that length first. A word that long
        gives more than ``max_tokens`` ids on its own (no symbol is longer), so the result is
        the full encoding whenever that has fewer than ``max_tokens`` ids; otherwise it has at
        least ``max_tokens`` ids, and those of a cut word may differ at its end.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids: list[int] = []
        cap = None if max_tokens is None else max(max_tokens, 1) * self.longest_symbol
        for match in _PRETOKENIZE.finditer(clean_text(text)):
            piece = match.group().encode("utf-8")
            if cap is not None:
                piece = piece[:cap]
            ids.extend(self._word_ids("".join(self.byte_encoder[b] for b in piece)))
            if max_tokens is not None and len(ids) >= max_tokens:
                break
        return ids

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of ``ids``: word ends become spaces; invalid UTF-8 becomes U+FFFD."""
        try:
            chars = "".join(self.decoder[int(i)] for i in ids)
        except KeyError as e:
            raise ValueError(f"token id {e.args[0]} is outside the vocabulary") from None
        data = bytearray(self.byte_decoder[c] for c in chars)
        return data.decode("utf-8", errors="replace").replace(_WORD_END, " ")


_tokenizer: Tokenizer | None = None
_tokenizer_lock = threading.Lock()


def get_tokenizer() -> Tokenizer:
    """The shared tokenizer (vocabulary loaded once, on first use)."""
    global _tokenizer
    with _tokenizer_lock:
        if _tokenizer is None:
            _tokenizer = Tokenizer()
        return _tokenizer


def tokenize(
    texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH, truncate: bool = True
) -> np.ndarray:
    """Token ids ``int64 [N, context_length]``: ``[SOT] + bpe + [EOT]``, zero padded.

    With ``truncate`` a too-long sequence keeps its first ``context_length`` ids and the last one is
    overwritten with EOT (the text model pools at the EOT position); without it, ValueError.
    """
    if isinstance(texts, str):
        texts = [texts]
    if context_length < 2:
        raise ValueError(f"context_length must be at least 2 (SOT and EOT), got {context_length}")
    tok = get_tokenizer()
    out = np.zeros((len(texts), context_length), dtype=np.int64)
    # With truncation only the first context_length - 2 ids are kept: encode one more (to know
    # the text was cut) and no further, however long the text (see Tokenizer.encode).
    max_tokens = context_length - 1 if truncate else None
    for row, text in enumerate(texts):
        ids = [tok.sot, *tok.encode(text, max_tokens), tok.eot]
        if len(ids) > context_length:
            if not truncate:
                raise ValueError(
                    f"text {row} is {len(ids)} tokens long, more than the context of "
                    f"{context_length}: {text[:60]!r}..."
                )
            ids = ids[:context_length]
            ids[-1] = tok.eot
        out[row, : len(ids)] = ids
    return out
