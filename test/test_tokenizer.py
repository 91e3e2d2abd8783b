"""Tests for spartan_ros.tokenizer against OpenAI's original CLIP tokenizer (clip-anytorch 2.6.0).

Only ``clip/simple_tokenizer.py`` is loaded from that package: its ``__init__`` imports torchvision.
"""

import gzip
import hashlib
import importlib.util
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spartan_ros import tokenizer as tk
from spartan_ros.tokenizer import Tokenizer, default_vocab_path, get_tokenizer, tokenize

SOT, EOT = 49406, 49407


@pytest.fixture(scope="module")
def oracle():
    spec = importlib.util.find_spec("clip")  # finds the package without running its __init__
    assert spec is not None and spec.submodule_search_locations, "pip install clip-anytorch==2.6.0"
    path = Path(spec.submodule_search_locations[0]) / "simple_tokenizer.py"
    mod_spec = importlib.util.spec_from_file_location("clip_reference_simple_tokenizer", path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module.SimpleTokenizer(bpe_path=str(default_vocab_path()))


def oracle_tokenize(oracle, text: str, context_length: int = 248) -> np.ndarray:
    """The reference's tokenize(truncate=True) rule, written out on top of the oracle's encode()."""
    ids = [SOT] + oracle.encode(text) + [EOT]
    if len(ids) > context_length:
        ids = ids[:context_length]
        ids[-1] = EOT
    row = np.zeros(context_length, dtype=np.int64)
    row[: len(ids)] = ids
    return row


def driving_descriptions(n: int, seed: int = 0) -> list[str]:
    """Varied multi-sentence scene captions in the style of the DrivingScene annotations."""
    rng = random.Random(seed)
    weather = ["clear", "overcast", "rainy", "foggy", "snowy", "sunny", "drizzly", "stormy"]
    time = ["early morning", "midday", "late afternoon", "dusk", "night", "twilight"]
    road = [
        "a two-lane suburban street",
        "a wide multi-lane highway",
        "a narrow residential road lined with parked cars",
        "a roundabout with four exits",
        "an urban intersection controlled by traffic lights",
        "a winding rural road bordered by trees",
        "a bridge crossing a river",
        "a tunnel entrance",
    ]
    things = [
        "a red sedan",
        "a white delivery van",
        "two pedestrians waiting at the crosswalk",
        "a cyclist in a yellow jacket",
        "a city bus pulling away from its stop",
        "a motorcycle weaving between lanes",
        "construction cones narrowing the lane",
        "a parked truck with its hazard lights on",
        "a dog walker on the sidewalk",
        "several cars queued at the light",
    ]
    actions = [
        "The ego vehicle is turning left at the intersection.",
        "The camera car slows down and yields to oncoming traffic.",
        "The vehicle continues straight at roughly 30 km/h.",
        "The car changes to the right lane to overtake a slower vehicle.",
        "The vehicle comes to a full stop behind the stop line.",
        "It accelerates gently after the light turns green.",
        "The car makes a U-turn, then merges back into traffic.",
        "The driver keeps a safe distance of about 3.5m from the car ahead.",
    ]
    extras = [
        "Buildings on both sides have large glass windows reflecting the sky.",
        "Street lamps cast long shadows across the asphalt.",
        "Lane markings are faded but still visible; a sign reads 'SPEED LIMIT 50'.",
        "The traffic light ahead is red, and a pedestrian signal is flashing.",
        "Puddles on the road reflect the headlights of approaching vehicles.",
        "There's a gas station on the right and a caf\u00e9 with outdoor seating on the left.",
        "Trees along the median sway slightly in the wind.",
        "A billboard advertises a concert on 12/08 at 7:30pm.",
        "Road works: the right lane is closed for 200 m & traffic is diverted.",
        "The sky is partly cloudy with patches of blue.",
    ]
    out = []
    for _ in range(n):
        s = [
            f"The video shows {rng.choice(road)} on a {rng.choice(weather)} "
            f"{rng.choice(time)}, seen from the front camera of a moving car.",
            f"In front of the vehicle there is {rng.choice(things)}, and further ahead "
            f"{rng.choice(things)} can be seen.",
            rng.choice(actions),
        ]
        for _ in range(rng.randint(2, 14)):
            s.append(rng.choice(extras + actions))
        if rng.random() < 0.3:
            s.append(f"The odometer reads {rng.randint(1000, 99999)} km.")
        sep = rng.choice([" ", "  ", "\n", " \t "])
        out.append(sep.join(s))
    return out


EDGE_CASES = [
    "",
    " ",
    "   \t\n  ",
    "a",
    "Hello, World! It's 3.5m  away &amp; fine",
    "3.5m 100km/h 0.25 12,345.678 2024-05-01 07:45",
    "don't won't they're we've I'm you'll he'd IT'S",
    "...!!!???;;;:::---___+++===***",
    "(parenthesis) [brackets] {braces} <angle> \"quotes\" 'single' `back`",
    "caf\u00e9 na\u00efve \u00fcber Stra\u00dfe r\u00e9sum\u00e9 CAF\u00c9",
    "\u4e2d\u6587\u6587\u672c \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \ud55c\uad6d\uc5b4",
    "emoji \U0001f697\U0001f4a8 \U0001f6a6 \U0001f44d\U0001f3fd",
    "family \U0001f468\u200d\U0001f469\u200d\U0001f467 flag \U0001f1e9\U0001f1ea",
    "&lt;b&gt;bold&lt;/b&gt; &amp;amp; &quot;q&quot; &#39;s &#x27;t &nbsp;x",
    "&amp;amp;amp; double-escaped",
    "mojibake: caf\u00c3\u00a9 \u00e2\u20ac\u0153quoted\u00e2\u20ac\ufffd",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003em-space",
    "<|startoftext|>literal specials<|endoftext|> in text",
    "\u0130stanbul \u0130I \u00c5ngstr\u00f6m \u03a3\u03bf\u03c6\u03af\u03b1",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "\u0661\u0662\u0663 \u0968 \u2167 \u00bd \u00b2",  # non-ASCII digits / numerics
    "zero\u200bwidth soft\u00adhyphen \u0301combining e\u0301",
    "control\x00\x01\x7fchars",
]


def test_vocabulary_file_checksum_and_sizes():
    path = default_vocab_path()
    assert hashlib.md5(path.read_bytes()).hexdigest() == tk.VOCAB_MD5
    tok = get_tokenizer()
    assert tok.vocab_size == len(tok.encoder) == 49408
    assert (tok.sot, tok.eot) == (SOT, EOT)
    assert tok.decoder[0] == "!" and tok.decoder[256] == "!</w>"


def test_byte_map_matches_oracle(oracle):
    table = tk.byte_to_unicode()
    assert table == oracle.byte_encoder
    assert len(set(table.values())) == 256
    assert sum(ord(c) >= 256 for c in table.values()) == 68


def test_verified_example_from_spec():
    tok = get_tokenizer()
    ids = tok.encode("Hello, World! It's 3.5m  away &amp; fine")
    symbols = [tok.decoder[i] for i in ids]
    expected = "hello ,  world !  it 's 3 . 5 m away & fine".split()
    assert symbols == [s + "</w>" for s in expected]


@pytest.mark.parametrize("text", EDGE_CASES)
def test_edge_cases_match_oracle(oracle, text):
    tok = get_tokenizer()
    assert tok.encode(text) == oracle.encode(text)
    np.testing.assert_array_equal(tokenize(text)[0], oracle_tokenize(oracle, text))


def test_driving_descriptions_match_oracle(oracle):
    texts = driving_descriptions(50)
    ours = tokenize(texts)
    assert ours.shape == (50, 248) and ours.dtype == np.int64
    lengths = []
    for row, text in zip(ours, texts, strict=True):
        ref = oracle.encode(text)
        lengths.append(len(ref))
        np.testing.assert_array_equal(row, oracle_tokenize(oracle, text))
    # The set covers the intended range, including captions past 248 tokens.
    assert min(lengths) < 120 and max(lengths) > 246
    assert 100 <= float(np.median(lengths)) <= 300


def test_random_unicode_fuzz_matches_oracle(oracle):
    rng = random.Random(3)
    alphabet = (
        "abcXYZ019 \t\n.,;:!?'\"&#<>|/\\-_()[]{}%$@"
        "\u00e9\u00fc\u00df\u00c5\u0130\u03a3\u0416\u4e2d\u6587\u3042\ud55c\u0661\u00bd\u00b2"
        "\u200b\u00ad\u0301\u00a0\u2003\U0001f697\U0001f3fd\u200d"
    )
    pieces = ["&amp;", "&lt;", "&#39;", "'s", "'ll", "<|endoftext|>", "3.5m", "   "]
    tok = get_tokenizer()
    for _ in range(300):
        n = rng.randint(0, 40)
        text = "".join(
            rng.choice(pieces) if rng.random() < 0.1 else rng.choice(alphabet) for _ in range(n)
        )
        assert tok.encode(text) == oracle.encode(text), repr(text)


def test_truncation_rule():
    tok = get_tokenizer()
    long_text = " ".join(driving_descriptions(6, seed=1))
    ids = [SOT, *tok.encode(long_text), EOT]
    assert len(ids) > 300
    row = tokenize(long_text)[0]
    np.testing.assert_array_equal(row[:247], ids[:247])
    assert row[247] == EOT and ids[247] != EOT
    assert int(np.argmax(row)) == 247  # the text model pools at argmax = EOT
    # Exactly 248 tokens is not truncated; 249 is, and without truncate it is an error.
    body = tok.encode(long_text)
    exact = tok.decode(body[:246])
    assert len(tok.encode(exact)) == 246
    np.testing.assert_array_equal(tokenize(exact, truncate=False)[0], [SOT, *body[:246], EOT])
    with pytest.raises(ValueError, match="text 1 is .* tokens long"):
        tokenize(["short", long_text], truncate=False)
    # Other context lengths (e.g. CLIP's 77) follow the same rule.
    small = tokenize(long_text, context_length=77)
    assert small.shape == (1, 77) and small[0, 76] == EOT
    np.testing.assert_array_equal(small[0, :76], ids[:76])


def test_padding_and_batch_shapes():
    out = tokenize(["", "a photo", "   "])
    assert out.shape == (3, 248) and out.dtype == np.int64
    np.testing.assert_array_equal(out[0, :3], [SOT, EOT, 0])
    assert not out[0, 2:].any() and not out[1, 4:].any()
    np.testing.assert_array_equal(out[2], out[0])
    assert tokenize([]).shape == (0, 248)
    assert tokenize(("tuple", "input")).shape == (2, 248)
    with pytest.raises(ValueError, match="context_length"):
        tokenize("x", context_length=1)
    with pytest.raises(TypeError, match="must be a str"):
        tokenize([b"bytes"])  # type: ignore[list-item]


def test_decode_round_trip(oracle):
    tok = get_tokenizer()
    for text in driving_descriptions(5, seed=2) + EDGE_CASES:
        ids = tok.encode(text)
        assert tok.decode(ids) == oracle.decode(ids)
        # Decoding gives the cleaned text with a space after every word; re-encoding is stable.
        assert tok.encode(tok.decode(ids)) == ids
    assert tok.decode([SOT, EOT]) == "<|startoftext|><|endoftext|>"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([49408])


def test_caches_are_shared_and_bounded():
    assert get_tokenizer() is get_tokenizer()
    tok = get_tokenizer()
    info = tok._word_ids.cache_info()
    assert info.maxsize == 1 << 16
    tok.encode("cache cache cache")
    assert tok._word_ids.cache_info().hits > info.hits


def test_vocabulary_lookup_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARTAN_BPE_PATH", str(tmp_path / "missing.txt.gz"))
    with pytest.raises(FileNotFoundError, match="SPARTAN_BPE_PATH"):
        default_vocab_path()
    monkeypatch.delenv("SPARTAN_BPE_PATH")
    monkeypatch.setattr(tk, "packaged_vocab_path", lambda: tmp_path / "none.txt.gz")
    with pytest.raises(FileNotFoundError, match="reinstall it"):
        default_vocab_path()
    # An explicit copy via the environment variable is honoured.
    copy = tmp_path / "vocab.gz"
    monkeypatch.undo()
    copy.write_bytes(default_vocab_path().read_bytes())
    monkeypatch.setenv("SPARTAN_BPE_PATH", str(copy))
    assert default_vocab_path() == copy
    # Broken files name the file.
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="bad.gz"):
        Tokenizer(bad)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(b"header\na b\nc d\n"))
    with pytest.raises(ValueError, match="short.gz"):
        Tokenizer(short)


def test_module_does_not_import_torch():
    code = (
        "import sys, spartan_ros.tokenizer as t; t.tokenize('x'); assert 'torch' not in sys.modules"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).parents[1]
    )


# -- bounded work on long text ----------------------------------------------------------------

def reference_bpe(tok: Tokenizer, word: str) -> list[str]:
    """The reference's merge loop: each round merges every occurrence of the best pair."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        best = min(zip(parts[:-1], parts[1:], strict=True),
                   key=lambda p: tok.merge_rank.get(p, tk.NUM_MERGES))
        if best not in tok.merge_rank:
            break
        merged, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                merged.append(best[0] + best[1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def test_merges_file_has_the_facts_the_fast_bpe_relies_on():
    tok = get_tokenizer()
    made_at: dict[str, int] = {}
    for (a, b), rank in sorted(tok.merge_rank.items(), key=lambda item: item[1]):
        assert a + b not in made_at, f"{a + b!r} is made by two merges"
        made_at[a + b] = rank
    for (a, b), rank in tok.merge_rank.items():
        assert made_at.get(a, -1) < rank and made_at.get(b, -1) < rank, (a, b)
    assert tok.longest_symbol == max(len(s.removesuffix("</w>")) for s in made_at)


def test_fast_bpe_matches_the_reference_merge_loop():
    tok = get_tokenizer()
    rng = random.Random(11)
    letters = "aaabcdeeefghiilmnooprssttuy"
    byte_chars = list(tok.byte_encoder.values())
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 400))) for _ in range(150)]
    words += ["".join(rng.choice(byte_chars) for _ in range(rng.randint(1, 60)))
              for _ in range(150)]
    words += ["a" * n for n in (1, 2, 3, 7, 64, 301)] + ["ab" * 150, "!" * 97]
    for word in words:
        assert tok.bpe(word) == reference_bpe(tok, word), word


def test_a_one_megabyte_word_is_answered():
    """The reference merge loop is quadratic in the word: a random 1 MB word never finished
    (8000 letters took 2.8 s)."""
    rng = random.Random(7)
    word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(1_000_000))
    row = tokenize(word)[0]
    assert row[0] == SOT and row[247] == EOT and 0 not in row[1:247]
    row = tokenize("x" * 1_000_000)[0]
    assert row[0] == SOT and row[247] == EOT and len(set(row[1:247].tolist())) == 1
    assert tokenize("y" + "é" * 500_000)[0, 247] == EOT


def test_bounded_encoding_keeps_every_text_that_fits(oracle):
    """encode(text, max_tokens) is the full encoding whenever that has fewer than max_tokens
    ids, and passes at most max_tokens * longest_symbol bytes of any word to BPE."""
    seen: list[int] = []

    class Counting(Tokenizer):
        def bpe(self, word: str) -> list[str]:
            seen.append(len(word))
            return super().bpe(word)

    tok = Counting()
    rng = random.Random(5)
    texts = [" ".join(driving_descriptions(k, seed=k)) for k in range(1, 8)]
    texts += ["".join(rng.choice("abcdefghij") for _ in range(n)) for n in (100, 2000, 7000)]
    texts += ["z" * n for n in (31 * 32, 246 * 32, 247 * 32, 247 * 32 + 1, 100_000)]
    for text in texts:
        full = oracle.encode(text)
        for max_tokens in (247, 77, 5):
            seen.clear()
            ids = tok.encode(text, max_tokens)
            assert max(seen, default=0) <= max_tokens * tok.longest_symbol
            if len(full) < max_tokens:
                assert ids == full
            else:
                assert len(ids) >= max_tokens
        np.testing.assert_array_equal(tokenize(text)[0], oracle_tokenize(oracle, text))
