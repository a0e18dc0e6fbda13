"""coldest() against a model: the least recently stored or loaded pages, in stored form."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ramster.pagestore import PagePool, PoolConfig, encode
from ramster.testing import corpus

PAGE = 512
CORPUS = [*corpus.pages(40, seed=3, page_size=PAGE), bytes(PAGE), b"\x07" * PAGE]

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("store"), st.lists(st.integers(0, 40), min_size=1, max_size=8)),
        st.tuples(st.just("load"), st.lists(st.integers(0, 40), min_size=1, max_size=8)),
        st.tuples(st.just("drop"), st.lists(st.integers(0, 40), min_size=1, max_size=4)),
        st.tuples(st.just("cold"), st.integers(0, 50), st.booleans()),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_coldest_is_least_recently_used_first(ops: list[tuple[object, ...]]) -> None:
    config = PoolConfig(page_size=PAGE, budget_bytes=1 << 22)
    pool = PagePool(config)
    model: dict[int, tuple[int, int, bytes]] = {}  # offset -> (last use, version, page)
    version = 0
    for clock, op in enumerate(ops, 1):
        if op[0] == "store":
            keys = list(dict.fromkeys(op[1]))  # type: ignore[call-overload]
            data = [CORPUS[(k * 7 + clock) % len(CORPUS)] for k in keys]
            versions = list(range(version + 1, version + 1 + len(keys)))
            version += len(keys)
            assert all(pool.put_many(0, keys, data, versions))
            for k, p, v in zip(keys, data, versions, strict=True):
                model[k] = (clock, v, p)
        elif op[0] == "load":
            keys = list(dict.fromkeys(op[1]))  # type: ignore[call-overload]
            pool.get_many(0, keys)
            for k in keys:
                if k in model:
                    model[k] = (clock, *model[k][1:])
        elif op[0] == "drop":
            keys = list(dict.fromkeys(op[1]))  # type: ignore[call-overload]
            pool.drop_many(0, keys)
            for k in keys:
                model.pop(k, None)
        else:
            n, same = op[1], op[2]
            assert isinstance(n, int) and isinstance(same, bool)
            cold = pool.coldest(n, include_same_filled=same)
            want = [
                (k, v, encode(p, config))
                for k, (_, v, p) in sorted(model.items(), key=lambda kv: kv[1][0])
                if same or len(encode(p, config)) != 8
            ]
            got = [(c.offset, c.version, c.payload) for c in cold]
            assert len(got) == min(n, len(want))
            # Pages used in the same batch share a tick: compare by use, then as sets.
            ticks = {k: model[k][0] for k, _, _ in want}
            assert [ticks[k] for k, _, _ in got] == [ticks[k] for k, _, _ in want[: len(got)]]
            assert set(got) <= set(want)
            assert all(c.area == 0 for c in cold)
