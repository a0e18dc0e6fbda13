"""The byte model's verdicts, without a server: what the NBD fault tests call right and wrong."""

from __future__ import annotations

from tests.chaos.byte_model import (
    BLOCK,
    EIO,
    OLDER,
    OTHER,
    RIGHT,
    UNSURE_EIO,
    ZEROS,
    ByteModel,
    Check,
    content,
    counter_of,
)


def test_contents_name_their_block_and_write() -> None:
    data = content(7, 42)
    assert len(data) == BLOCK
    assert counter_of(data, 7) == 42
    assert counter_of(data, 8) is None  # another block's bytes
    assert counter_of(bytes(BLOCK), 7) is None
    assert content(7, 43) != data


def test_an_acknowledged_write_is_the_only_right_content() -> None:
    model = ByteModel(blocks=16)
    assert model.verdict(3, bytes(BLOCK)) == RIGHT  # never written
    first = model.begin(3)
    model.ack(3, first, "n0")
    second = model.begin(3)
    model.ack(3, second, "n0")
    assert model.verdict(3, second) == RIGHT
    assert model.verdict(3, first) == OLDER
    assert model.verdict(3, bytes(BLOCK)) == ZEROS
    assert model.verdict(3, content(4, 99)) == OTHER
    assert model.verdict(3, 5) == EIO


def test_an_unanswered_write_leaves_either_content_right_until_the_next_ack() -> None:
    model = ByteModel(blocks=16)
    old = model.begin(1)
    model.ack(1, old, "n0")
    lost = model.begin(1)
    model.fail("broken")
    assert model.verdict(1, old) == RIGHT
    assert model.verdict(1, lost) == RIGHT
    assert model.verdict(1, 5) == UNSURE_EIO
    assert model.verdict(1, bytes(BLOCK)) == ZEROS
    new = model.begin(1)
    model.ack(1, new, "n1")
    assert model.verdict(1, lost) == OLDER  # settled by the newer acknowledged write
    assert model.verdict(1, old) == OLDER
    assert model.errors == {"broken": 1}
    assert model.acks_by("n1", after=0.0) == 1


def test_a_check_counts_eio_as_wrong_only_where_asked() -> None:
    check = Check("t")
    for block, verdict in enumerate([RIGHT, EIO, UNSURE_EIO, ZEROS, OLDER]):
        check.add(block, verdict)
    assert check.bad(allow_eio=True) == 2
    assert check.bad(allow_eio=False) == 3
    assert check.wrong == [(3, ZEROS), (4, OLDER)]
    assert check.wrong_blocks == [1, 3, 4]
