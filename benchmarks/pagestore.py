"""Benchmark: the local pool against a bare lz4 loop over the same realistic corpus.

    python benchmarks/pagestore.py [--quick]

Rounds alternate the anchor (bare lz4.block compress / decompress of every page) with the pool
(store_many / load_many through the frontswap contract, batches of 256 pages), so that both
see the same machine; ratios are medians over rounds. A separate phase streams 256 MiB of the
corpus into a fresh pool and measures the process's RSS growth against the compressed bytes.
The last line is one JSON object with the figures issue 2 names.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time

import lz4.block
import psutil

from ramster.cli.report import human_bytes, table
from ramster.frontswap import LocalFrontswap
from ramster.pagestore import PoolConfig
from ramster.testing import corpus

BATCH = 256
PAGE = 4096


def bare_compress(pages: list[bytes]) -> tuple[float, float, list[bytes]]:
    """Seconds for lz4 alone (output dropped), seconds for lz4 keeping its output, the output."""
    compress = lz4.block.compress
    # The anchor is lz4 alone: keeping 256 MiB of results adds page faults that vary from
    # round to round (seen: 91k to 155k pages/s), which would make the ratio flatter the pool.
    t0 = time.perf_counter()
    for p in pages:
        compress(p, store_size=False)
    alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    kept = [compress(p, store_size=False) for p in pages]
    return alone, time.perf_counter() - t0, kept


def bare_decompress(blobs: list[bytes]) -> float:
    decompress = lz4.block.decompress
    t0 = time.perf_counter()
    for b in blobs:
        decompress(b, uncompressed_size=PAGE)
    return time.perf_counter() - t0


async def pool_round(pages: list[bytes]) -> tuple[float, float, LocalFrontswap]:
    fs = LocalFrontswap(PoolConfig(budget_bytes=2 << 30))
    await fs.init(0)
    n = len(pages)
    offsets = list(range(n))
    t0 = time.perf_counter()
    for i in range(0, n, BATCH):
        await fs.store_many(0, offsets[i : i + BATCH], pages[i : i + BATCH])
    t_store = time.perf_counter() - t0
    # Like the bare loop, the timed pass drops what it loads; a second pass verifies every byte.
    t0 = time.perf_counter()
    for i in range(0, n, BATCH):
        await fs.load_many(0, offsets[i : i + BATCH])
    t_load = time.perf_counter() - t0
    for i in range(0, n, BATCH):
        if await fs.load_many(0, offsets[i : i + BATCH]) != pages[i : i + BATCH]:
            raise SystemExit("pool returned different bytes: benchmark invalid")
    return t_store, t_load, fs


async def rss_phase(total_pages: int, seed: int) -> dict[str, float]:
    proc = psutil.Process()
    gc.collect()
    fs = LocalFrontswap(PoolConfig(budget_bytes=2 << 30))
    await fs.init(0)
    gen = corpus.generate(total_pages, seed=seed + 1)
    # Warm the generator and the allocator so their one-off costs are not counted as the pool's.
    first = [next(gen) for _ in range(BATCH)]
    await fs.store_many(0, list(range(BATCH)), first)
    del first
    gc.collect()
    base_rss = proc.memory_info().rss
    base_compr = fs.statistics().pool.compr_data_size
    offset = BATCH
    while True:
        batch = [p for _, p in zip(range(BATCH), gen, strict=False)]
        if not batch:
            break
        await fs.store_many(0, list(range(offset, offset + len(batch))), batch)
        offset += len(batch)
    gc.collect()
    st = fs.statistics().pool
    grown = proc.memory_info().rss - base_rss
    compr = st.compr_data_size - base_compr
    return {
        "pages": offset,
        "rss_growth": grown,
        "compressed": compr,
        "pool_total_size": st.pool_total_size,
        "rss_per_compressed_byte": grown / compr,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer pages and rounds (~1 minute)")
    parser.add_argument("--seed", type=int, default=1, help="corpus seed (default 1)")
    args = parser.parse_args()
    n_pages = 16384 if args.quick else 65536  # 64 MiB or 256 MiB
    rounds = 3 if args.quick else 5
    print(f"generating {human_bytes(n_pages * PAGE)} of corpus...", file=sys.stderr)
    pages = corpus.pages(n_pages, seed=args.seed)

    rows = []
    store_ratios, load_ratios, store_rates, load_rates = [], [], [], []
    kept_ratios: list[float] = []
    fs = None
    for r in range(rounds):
        t_c, t_kept, blobs = bare_compress(pages)
        t_d = bare_decompress(blobs)
        del blobs
        del fs
        gc.collect()
        t_s, t_l, fs = await pool_round(pages)
        store_ratios.append(t_c / t_s)
        kept_ratios.append(t_kept / t_s)
        load_ratios.append(t_d / t_l)
        store_rates.append(n_pages / t_s)
        load_rates.append(n_pages / t_l)
        rows.append(
            [
                f"round {r + 1}",
                f"{n_pages / t_c:,.0f}",
                f"{n_pages / t_kept:,.0f}",
                f"{n_pages / t_s:,.0f}",
                f"{t_c / t_s:.2f}",
                f"{n_pages / t_d:,.0f}",
                f"{n_pages / t_l:,.0f}",
                f"{t_d / t_l:.2f}",
            ]
        )
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    assert fs is not None
    st = fs.statistics().pool
    print(
        table(
            [
                "pages/s",
                "bare lz4 c",
                "c, kept",
                "pool store",
                "ratio",
                "bare lz4 d",
                "pool load",
                "ratio",
            ],
            rows,
        )
    )
    print()
    print("streaming 256 MiB into a fresh pool for the RSS measurement...", file=sys.stderr)
    del fs, pages
    gc.collect()
    rss = await rss_phase(65536, args.seed)
    metadata_per_page = st.metadata_size / st.stored_pages
    ratio = st.orig_data_size / st.compr_data_size
    print(
        table(
            ["pool", "value"],
            [
                ["pages stored", f"{st.stored_pages:,}"],
                ["same-filled / raw", f"{st.same_filled_pages:,} / {st.huge_pages:,}"],
                ["compression ratio (orig / payload)", f"{ratio:.2f}x"],
                ["orig / pool_total_size", f"{st.orig_data_size / st.pool_total_size:.2f}x"],
                ["metadata per page", f"{metadata_per_page:.1f} B"],
                ["RSS growth, 256 MiB streamed", human_bytes(rss["rss_growth"])],
                ["compressed bytes stored", human_bytes(rss["compressed"])],
                ["RSS per compressed byte", f"{rss['rss_per_compressed_byte']:.3f}"],
            ],
        )
    )
    result = {
        "store_pages_per_s": round(statistics.median(store_rates)),
        "load_pages_per_s": round(statistics.median(load_rates)),
        "store_vs_bare_lz4": round(statistics.median(store_ratios), 3),
        "load_vs_bare_lz4": round(statistics.median(load_ratios), 3),
        "store_vs_bare_lz4_kept": round(statistics.median(kept_ratios), 3),
        "compression_ratio": round(ratio, 3),
        "metadata_bytes_per_page": round(metadata_per_page, 1),
        "rss_per_compressed_byte": round(rss["rss_per_compressed_byte"], 3),
        "pages": n_pages,
        "rounds": rounds,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
