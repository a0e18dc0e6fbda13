"""Batch planning, without a server: runs, order, refusals, and the request order kept."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from ramster.nbd import const, plan
from ramster.nbd.export import TRIM, WRITE, ZERO
from ramster.nbd.wire import Request

SIZE = 1 << 30
MAX = 32 << 20


def req(handle: int, cmd: int, offset: int = 0, length: int = 4096, flags: int = 0) -> Request:
    payload = bytes(length) if cmd == const.CMD_WRITE else b""
    return Request(handle, cmd, flags, offset, length, payload)


def test_reads_and_writes_are_runs_and_the_rest_goes_alone() -> None:
    batch = [
        req(1, const.CMD_READ),
        req(2, const.CMD_READ, 4096),
        req(3, const.CMD_WRITE),
        req(4, const.CMD_TRIM, 8192),  # short: joins the writes
        req(5, const.CMD_WRITE_ZEROES, 0, 4096),
        req(6, const.CMD_FLUSH, 0, 0),
        req(7, const.CMD_TRIM, 0, 2 << 20),  # long: alone, through the page map
        req(8, const.CMD_READ, SIZE - 4096, 8192),  # past the end: refused
        req(9, const.CMD_DISC, 0, 0),
    ]
    steps = plan.plan(batch, SIZE, MAX)
    assert [(s.kind, [r.handle for r in s.requests]) for s in steps] == [
        (plan.READ, [1, 2]),
        (plan.MUTATE, [3, 4, 5]),
        (plan.ALONE, [6]),
        (plan.ALONE, [7]),
        (const.EINVAL, [8]),
        (plan.DISC, [9]),
    ]


def test_mutations_carry_what_the_export_needs() -> None:
    assert plan.mutation(req(1, const.CMD_WRITE, 4096, 512)) == (WRITE, 4096, bytes(512))
    assert plan.mutation(req(2, const.CMD_TRIM, 8192, 4096)) == (TRIM, 8192, 4096)
    assert plan.mutation(req(3, const.CMD_WRITE_ZEROES, 0, 4096)) == (ZERO, 0, 4096)


COMMANDS = [
    const.CMD_READ,
    const.CMD_WRITE,
    const.CMD_TRIM,
    const.CMD_WRITE_ZEROES,
    const.CMD_FLUSH,
    99,  # unknown
]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(COMMANDS),
            st.integers(0, SIZE // 4096),
            st.sampled_from([0, 512, 4096, 1 << 20, 2 << 20]),
        ),
        max_size=40,
    )
)
def test_every_request_is_answered_once_in_order(items: list[tuple[int, int, int]]) -> None:
    batch = [req(i, cmd, off * 4096, length) for i, (cmd, off, length) in enumerate(items)]
    steps = plan.plan(batch, SIZE, MAX)
    assert [r.handle for s in steps for r in s.requests] == list(range(len(batch)))
    for step in steps:
        if step.kind not in (plan.READ, plan.MUTATE):
            assert len(step.requests) == 1
        for r in step.requests:
            assert plan.kind(r, 0) == step.kind or step.kind > 0
    # Neighbouring runs of the same kind would have been one.
    kinds = [s.kind for s in steps]
    assert all(not (a == b and a in (plan.READ, plan.MUTATE)) for a, b in itertools.pairwise(kinds))
