"""CLIP byte-level BPE tokenizer with Long-CLIP's 248-token context (numpy only).

Produces the same ids as the reference ``simple_tokenizer.py`` (MODEL.md section 3). The merges file
``bpe_simple_vocab_16e6.txt.gz`` (OpenAI CLIP's, MIT licence: see ``spartan_ros/vocab/NOTICE.md``)
is package data of spartan_ros, so pip wheels and colcon installs carry it; ``SPARTAN_BPE_PATH``
points at another copy.
"""

from __future__ import annotations

import gzip
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
        self._word_ids = lru_cache(maxsize=_BPE_CACHE_SIZE)(self._word_ids_uncached)

    def bpe(self, word: str) -> list[str]:
        """Merge the byte-mapped ``word`` into vocabulary symbols (last one carries ``</w>``)."""
        parts = list(word[:-1]) + [word[-1] + _WORD_END]
        rank = self.merge_rank
        while len(parts) > 1:
            # The pair with the lowest merge rank wins; every occurrence of it is merged at once,
            # scanning left to right without overlaps.
            best = min(
                zip(parts[:-1], parts[1:], strict=True), key=lambda p: rank.get(p, NUM_MERGES)
            )
            if best not in rank:
                break
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == best[0] and parts[i + 1] == best[1]:
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def _word_ids_uncached(self, word: str) -> tuple[int, ...]:
        if word in (SOT_TEXT, EOT_TEXT):  # literal special tokens in the text keep their meaning
            return (self.encoder[word],)
        return tuple(self.encoder[s] for s in self.bpe(word))

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` after cleaning, without SOT/EOT."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids: list[int] = []
        for piece in _PRETOKENIZE.findall(clean_text(text)):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self._word_ids(mapped))
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
    for row, text in enumerate(texts):
        ids = [tok.sot, *tok.encode(text), tok.eot]
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
