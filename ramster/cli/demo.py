"""`make run` before the node exists: the local pool on a realistic corpus, with statistics."""

from __future__ import annotations

import asyncio
import time

from ramster.cli.report import Progress, human_bytes, table
from ramster.errors import RamsterError
from ramster.frontswap import LocalFrontswap
from ramster.pagestore import PoolConfig
from ramster.testing import corpus

BATCH = 256


async def _run(mib: int, budget_mib: int | None, seed: int, page_size: int) -> int:
    n_pages = (mib << 20) // page_size
    budget = (budget_mib << 20) if budget_mib else (mib << 20) + (8 << 20)
    fs = LocalFrontswap(PoolConfig(page_size=page_size, budget_bytes=budget))
    await fs.init(0)
    print(
        f"ramster demo: {mib} MiB of the realistic corpus ({n_pages} pages of {page_size} B, "
        f"seed {seed}) into a local pool with a {human_bytes(budget)} budget"
    )
    pages = corpus.pages(n_pages, seed, page_size)
    offsets = list(range(n_pages))
    stored: list[bool] = []
    bar = Progress("store", n_pages, "pages")
    t0 = time.perf_counter()
    for i in range(0, n_pages, BATCH):
        stored += await fs.store_many(0, offsets[i : i + BATCH], pages[i : i + BATCH])
        bar.advance(len(offsets[i : i + BATCH]))
    bar.close()
    t_store = time.perf_counter() - t0
    bar = Progress("load", n_pages, "pages")
    bad = 0
    t0 = time.perf_counter()
    for i in range(0, n_pages, BATCH):
        got = await fs.load_many(0, offsets[i : i + BATCH])
        for j, page in enumerate(got, start=i):
            if stored[j] and page != pages[j]:
                bad += 1
        bar.advance(len(got))
    bar.close()
    t_load = time.perf_counter() - t0
    st = fs.statistics().pool
    ratio = st.orig_data_size / max(st.compr_data_size, 1)
    print()
    print(
        table(
            ["pool", "value"],
            [
                ["stored pages", f"{st.stored_pages:,}"],
                ["  same-filled (8 bytes each)", f"{st.same_filled_pages:,}"],
                ["  kept raw (incompressible)", f"{st.huge_pages:,}"],
                ["refused (pool full)", f"{st.reject_pool_limit:,}"],
                ["original size", human_bytes(st.orig_data_size)],
                ["compressed payload", human_bytes(st.compr_data_size)],
                ["pool total size (real RAM)", human_bytes(st.pool_total_size)],
                ["  metadata", human_bytes(st.metadata_size)],
                ["compression ratio", f"{ratio:.2f}x"],
                ["effective ratio (orig / pool)", f"{st.orig_data_size / st.pool_total_size:.2f}x"],
                ["metadata per page", f"{st.metadata_size / max(st.stored_pages, 1):.1f} B"],
                ["store throughput", f"{n_pages / t_store:,.0f} pages/s"],
                ["load throughput", f"{n_pages / t_load:,.0f} pages/s"],
                ["pages verified", f"{stored.count(True) - bad:,} ok, {bad} bad"],
            ],
        )
    )
    return 1 if bad else 0


def run_demo(mib: int, budget_mib: int | None, seed: int, page_size: int) -> int:
    """Run the demo; 0 when every stored page came back byte-identical."""
    try:
        return asyncio.run(_run(mib, budget_mib, seed, page_size))
    except RamsterError as exc:
        print(f"ramster demo: {exc}")
        return 1
