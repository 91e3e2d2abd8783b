"""The engine's cache of text features: the same tokens give the same features, computed once."""

from __future__ import annotations

import numpy as np
import pytest

from spartan_ros.runtime.engine import Engine, FeatureCache
from spartan_ros.tokenizer import tokenize


@pytest.fixture(scope="module")
def engine(model_dir) -> Engine:
    return Engine(model_dir, providers=("cpu",), text_threads=1, text_cache=4, spinning=False)


def test_cached_features_equal_the_graph_and_are_counted(engine: Engine) -> None:
    texts = ["a red car at the crossing", "the gas station where we turned left"]
    fresh = engine.run_text(tokenize(texts, context_length=engine.context_length))
    hits = engine._text_cache.hits
    first = engine.encode_text(texts)
    again = engine.encode_text(["the gas station where we turned left", "a red car at the "
                                "crossing", "a new text"])
    np.testing.assert_array_equal(first, fresh)
    np.testing.assert_array_equal(again[:2], fresh[::-1])
    assert engine._text_cache.hits == hits + 2
    again[0] += 1.0  # a caller changing its answer changes nothing kept
    np.testing.assert_array_equal(engine.encode_text(texts[1])[0], fresh[1])


def test_the_cache_keeps_the_most_recent_only() -> None:
    cache = FeatureCache(2)
    out = np.zeros(3, dtype=np.float32)
    for key in (b"a", b"b", b"c"):
        cache.put(key, np.full(3, ord(key), dtype=np.float32))
    assert not cache.get(b"a", out)
    assert cache.get(b"b", out) and out[0] == ord("b")
    assert not FeatureCache(0).get(b"a", out)


def test_a_text_asked_again_is_found_by_its_words_and_a_huge_one_by_its_tokens(
        engine: Engine) -> None:
    """A planner's repeated question skips the tokenizer (its key is the text itself); two
    spellings with the same tokens share the features; a text longer than any question is
    kept under its truncated tokens only, so no key grows with the text."""
    text = "stopping at a red light at night"
    first = engine.encode_text(text)
    assert b"text:" + text.encode() in engine._text_cache.keys()
    hits = engine._text_cache.hits
    np.testing.assert_array_equal(engine.encode_text(text), first)
    assert engine._text_cache.hits == hits + 1  # one lookup, by the text
    spaced = "stopping  at a red light at   night"  # other bytes, the same tokens
    np.testing.assert_array_equal(engine.encode_text(spaced), first)
    huge = "fog " * 100_000
    engine.encode_text(huge)
    assert all(len(key) < 4096 for key in engine._text_cache.keys())
