"""A deterministic, realistic page corpus for demos and benchmarks.

The mix approximates what swap sees on a busy machine: about 25% zero pages, 5% other
same-filled pages, 40% text and code, 15% structured binary like a process heap (pointers,
small integers, padding) and 15% random (already compressed or encrypted data).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

KINDS = ("zero", "same", "text", "heap", "random")
MIX = (0.25, 0.05, 0.40, 0.15, 0.15)

_WORDS = """
the of and to in is that for it as was with be by on not he this are or his from at which
but have an they you were her she there been one all we their has would when if so no will
more out up into do any your what some can only other new time could about than memory
page cluster node swap kernel pool compress store load remote holder owner version network
socket buffer request reply error timeout process thread lock queue batch write read
""".split()
_CODE = (
    "def",
    "return",
    "if",
    "else:",
    "for",
    "in",
    "self",
    "None",
    "import",
    "class",
    "while",
    "int",
    "static",
    "const",
    "struct",
    "void",
    "unsigned",
    "char",
    "#include",
    "->",
    "==",
    "!=",
    "+=",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ";",
    ":",
    "0",
    "1",
    "NULL",
    "err",
    "len",
    "buf",
)


def _text_source(rng: np.random.Generator, size: int) -> bytes:
    """A long stretch of prose and code with realistic local redundancy."""
    # The draws are Generator.choice's own (a cdf searched with uniform samples; integers for
    # a uniform choice), without its per-call checks: the bytes choice gave, in half the time.
    zipf = 1.0 / np.arange(1, len(_WORDS) + 1) ** 1.1
    zipf /= zipf.sum()
    cdf = zipf.cumsum()
    cdf /= cdf[-1]
    parts: list[str] = []
    total = 0
    while total < size:
        if rng.random() < 0.5:
            n = int(rng.integers(40, 160))
            picked = cdf.searchsorted(rng.random(n), side="right").tolist()
            sentence = " ".join([_WORDS[i] for i in picked]) + ".\n"
            line = sentence[0].upper() + sentence[1:]
        else:
            lines = []
            for _ in range(int(rng.integers(4, 16))):
                indent = "    " * int(rng.integers(0, 4))
                toks = rng.integers(0, len(_CODE), int(rng.integers(2, 9))).tolist()
                number = int(rng.integers(0, 64))  # before the word: the order of the draws
                ident = f"v{number}_{_WORDS[int(rng.integers(0, len(_WORDS)))]}"
                line_toks = " ".join([_CODE[i] for i in toks])
                lines.append(f"{indent}{line_toks} {ident} = {int(rng.integers(0, 4096))};")
            line = "\n".join(lines) + "\n"
        parts.append(line)
        total += len(line)
    return "".join(parts).encode()[:size]


@functools.lru_cache(maxsize=16)
def _source(seed: int, size: int) -> tuple[bytes, Mapping[str, Any]]:
    """The text source of a seed and the generator's state after it (kept: tests reuse seeds,
    and building one costs half a second)."""
    rng = np.random.default_rng(seed)
    source = _text_source(rng, size)
    return source, rng.bit_generator.state


def _heap_page(rng: np.random.Generator, page_size: int) -> bytes:
    words = page_size // 8
    base = 0x00007F0000000000 + (int(rng.integers(0, 1 << 20)) << 12)
    choice = rng.random(words)
    out = np.zeros(words, dtype=np.uint64)
    ptr = choice < 0.40
    out[ptr] = base + (rng.integers(0, 1 << 16, int(ptr.sum())) << 4).astype(np.uint64)
    small = (choice >= 0.40) & (choice < 0.65)
    out[small] = rng.integers(0, 1024, int(small.sum())).astype(np.uint64)
    rand = choice >= 0.85
    out[rand] = rng.integers(0, 1 << 63, int(rand.sum()), dtype=np.int64).astype(np.uint64)
    return out.tobytes()


def generate(n_pages: int, seed: int = 1, page_size: int = 4096) -> Iterator[bytes]:
    """Yield n_pages pages of the mix above; the same seed always gives the same pages."""
    source, state = _source(seed, max(1 << 20, page_size * 64))
    rng = np.random.default_rng(seed)
    rng.bit_generator.state = state
    kinds = rng.choice(len(KINDS), n_pages, p=MIX)
    zero = bytes(page_size)
    patterns = [b"\xff" * 8, b"\xde\xad\xbe\xef" * 2, b"\x01\x00\x00\x00" * 2, b"  " * 4]
    for kind in kinds.tolist():
        if kind == 0:
            yield zero
        elif kind == 1:
            yield patterns[int(rng.integers(0, len(patterns)))] * (page_size // 8)
        elif kind == 2:
            start = int(rng.integers(0, len(source) - page_size))
            yield source[start : start + page_size]
        elif kind == 3:
            yield _heap_page(rng, page_size)
        else:
            yield rng.bytes(page_size)


def pages(n_pages: int, seed: int = 1, page_size: int = 4096) -> list[bytes]:
    """The first n_pages of the corpus for `seed`, as a list."""
    return list(generate(n_pages, seed, page_size))
