"""Page batches and key batches on the wire."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ramster.errors import ProtocolError
from ramster.rpc import Keys, PageBatch
from ramster.rpc.frames import Chunks, FrameDecoder, FrameEncoder, Notification
from ramster.rpc.testing import DictPageStore

pages_strategy = st.lists(
    st.tuples(
        st.integers(0, (1 << 16) - 1),
        st.integers(0, (1 << 32) - 1),
        st.integers(0, (1 << 63) - 1),
        st.integers(0, (1 << 64) - 1),
        st.binary(max_size=300),
    ),
    max_size=20,
)


def over_the_wire(wire: list[object]) -> object:
    enc = FrameEncoder(1 << 20)
    data = b"".join(bytes(b) for b in enc.notification("p", wire))
    (message,) = FrameDecoder(1 << 20).feed(data)
    assert isinstance(message, Notification)
    return message.params


@settings(max_examples=200, deadline=None)
@given(pages_strategy)
def test_page_batch_round_trip(pages: list[tuple[int, int, int, int, bytes]]) -> None:
    batch = PageBatch.of(pages)
    back = PageBatch.from_wire(over_the_wire(batch.to_wire()))
    assert [(p.area, p.offset, p.version, p.checksum, bytes(p.payload)) for p in back] == pages
    assert back.payload_bytes == sum(len(p[4]) for p in pages)


def test_keys_round_trip() -> None:
    keys = Keys.of([(1, 2), (3, 4)])
    back = Keys.from_wire(over_the_wire(keys.to_wire()))
    assert list(back) == [(1, 2), (3, 4)]


GOOD: list[object] = [[1], [2], [3], [4], [2], b"ab"]


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, [1 << 16]),
        (0, [-1]),
        (1, [1 << 32]),
        (2, [1 << 63]),
        (3, [1 << 64]),
        (4, [3]),
        (4, [1]),
        (5, "ab"),
        (0, [1.0]),
        (0, [True]),
        (1, [2, 3]),
        (1, 2),
    ],
)
def test_page_batch_schema_violations(index: int, value: object) -> None:
    wire = list(GOOD)
    wire[index] = value
    with pytest.raises(ProtocolError):
        PageBatch.from_wire(wire)


def test_page_batch_shape_violations() -> None:
    with pytest.raises(ProtocolError):
        PageBatch.from_wire(GOOD[:5])
    with pytest.raises(ProtocolError):
        PageBatch.from_wire({"areas": []})
    with pytest.raises(ProtocolError):
        Keys.from_wire([[1, 2], [3]])
    with pytest.raises(ValueError, match="same length"):
        PageBatch([1], [], [], [], [])
    assert isinstance(PageBatch.empty().to_wire()[5], Chunks)


def test_dict_store_is_a_model_holder() -> None:
    store = DictPageStore()
    assert store.put_pages(PageBatch.of([(0, 1, 5, 9, b"new"), (0, 2, 1, 9, b"b")])) == [True, True]
    assert store.put_pages(PageBatch.of([(0, 1, 4, 9, b"old")])) == [False]
    got = store.get_pages(Keys.of([(0, 2), (0, 7), (0, 1)]))
    assert [(p.offset, p.version, bytes(p.payload)) for p in got] == [(2, 1, b"b"), (1, 5, b"new")]
    assert store.drop_pages(Keys.of([(0, 1), (0, 1)])) == [True, False]
