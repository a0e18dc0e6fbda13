"""hold.put and hold.drop params: the owner's call sequence is optional on the wire (an older
caller sends none), and nothing else may take its place."""

from __future__ import annotations

import pytest

from ramster.errors import ProtocolError
from ramster.node.handlers.holder import _drop_params, _expect_params, _put_params
from ramster.protocol import EPHEMERAL

BATCH = b"batch"


def test_put_params_with_and_without_a_sequence() -> None:
    assert _put_params(["o", "i", BATCH]).rest == [False, None, BATCH]
    assert _put_params(["o", "i", EPHEMERAL, BATCH]).rest == [True, None, BATCH]
    assert _put_params(["o", "i", 7, BATCH]).rest == [False, 7, BATCH]
    assert _put_params(["o", "i", EPHEMERAL, 7, BATCH]).rest == [True, 7, BATCH]
    bads: list[list[object]] = [
        ["o", "i", "other", BATCH],
        ["o", "i", 7, EPHEMERAL, BATCH],
        ["o", "i", True, BATCH],
        ["o", "i", -1, BATCH],
        ["o", "i", EPHEMERAL, 7, 8, BATCH],
        ["o", "i"],
    ]
    for bad in bads:
        with pytest.raises(ProtocolError):
            _put_params(bad)


def test_drop_params_with_and_without_a_sequence() -> None:
    assert _drop_params(["o", "i", b"k", [1]]).rest == [b"k", [1], None]
    assert _drop_params(["o", "i", b"k", [1], 9]).rest == [b"k", [1], 9]
    bads: list[list[object]] = [
        ["o", "i", b"k"],
        ["o", "i", b"k", [1], "9"],
        ["o", "i", b"k", [1], 9, 9],
    ]
    for bad in bads:
        with pytest.raises(ProtocolError):
            _drop_params(bad)


def test_expect_params_with_and_without_a_sequence() -> None:
    assert _expect_params(["o", "i", b"k", [1], [2]]).rest == [b"k", [1], [2], None]
    assert _expect_params(["o", "i", b"k", [1], [2], 3]).rest == [b"k", [1], [2], 3]
    with pytest.raises(ProtocolError):
        _expect_params(["o", "i", b"k", [1], [2], None])
