"""The benchmark corpus is deterministic and has the advertised mix."""

from __future__ import annotations

import hashlib

import lz4.block

from ramster.testing import corpus


def test_same_seed_same_pages() -> None:
    assert corpus.pages(200, seed=7) == corpus.pages(200, seed=7)
    assert corpus.pages(200, seed=7) != corpus.pages(200, seed=8)


def test_the_pages_of_a_seed_never_change() -> None:
    # Figures of every earlier benchmark run were measured on these bytes (digests of the
    # corpus before its text source was made faster, and its cache added).
    def digest(n: int, seed: int, page_size: int) -> str:
        return hashlib.sha256(b"".join(corpus.pages(n, seed, page_size))).hexdigest()

    assert digest(300, 1, 4096) == (
        "e4d50d31072022578d2ecccff48c1ed421f9974ed71675c6ba96a336dd5150b7"
    )
    assert digest(40, 2, 16384) == (
        "2377f263fc2783a1822b3fbb8392531386d580d7144de06f45378e71692a365d"
    )
    assert digest(300, 1, 4096) == digest(300, 1, 4096)  # and the cache keeps them


def test_mix_is_roughly_as_documented() -> None:
    pages = corpus.pages(4000, seed=1)
    zero = sum(p == bytes(4096) for p in pages) / len(pages)
    same = sum(p[:8] * 512 == p for p in pages) / len(pages)
    assert 0.22 < zero < 0.28
    assert 0.27 < same < 0.33
    sizes = [len(lz4.block.compress(p, store_size=False)) for p in pages if p[:8] * 512 != p]
    incompressible = sum(s >= 4096 for s in sizes) / len(pages)
    assert 0.12 < incompressible < 0.18
    ratio = len(pages) * 4096 / sum(len(lz4.block.compress(p, store_size=False)) for p in pages)
    assert 1.6 < ratio < 2.6


def test_page_size_is_respected() -> None:
    assert {len(p) for p in corpus.pages(100, page_size=512)} == {512}
