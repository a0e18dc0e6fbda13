"""Real clients no one here wrote, against the server: nbdinfo, nbd-client, qemu-io, nbdcopy,
qemu-img and fio (Debian's qemu-utils, libnbd-bin, fio, nbd-client)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ramster.nbd import NbdServer
from ramster.testing import corpus
from tests.nbd.conftest import ServerFactory, port_of, uri
from tests.nbd.tools import QemuIo, fio_json, need, tool

pytestmark = pytest.mark.asyncio


async def test_nbdinfo_sees_size_block_sizes_and_flags(nbd_server: NbdServer) -> None:
    ran = await tool(need("nbdinfo"), "--json", uri(nbd_server, "swap0"))
    assert ran.returncode == 0, ran.output
    (export,) = json.loads(ran.output)["exports"]
    assert export["export-name"] == "swap0"
    assert export["export-size"] == 64 << 20
    assert (
        export["block_size_minimum"],
        export["block_size_preferred"],
        export["block_size_maximum"],
    ) == (512, 4096, 32 << 20)
    for flag in ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero"):
        assert export[flag] is True, flag
    assert export["can_multi_conn"] is True
    assert export["is_read_only"] is False


async def test_the_export_list_with_nbdinfo_and_nbd_client(nbd_server: NbdServer) -> None:
    ran = await tool(need("nbdinfo"), "--list", "--json", uri(nbd_server))
    assert ran.returncode == 0, ran.output
    names = [e["export-name"] for e in json.loads(ran.output)["exports"]]
    assert names == ["swap0", "small"]
    # nbd-client -l needs no kernel module: it only negotiates NBD_OPT_LIST.
    listed = await tool(need("nbd-client"), "-l", "127.0.0.1", str(port_of(nbd_server)))
    assert listed.returncode == 0, listed.output
    assert listed.output.split()[-2:] == ["swap0", "small"]


async def test_qemu_io_patterns_sub_page_writes_discard_and_write_zeroes(
    nbd_server: NbdServer,
) -> None:
    commands = [
        "write -P 0xa5 0 1M",
        "read -P 0xa5 0 1M",
        "write -P 0x11 512 512",  # 512-byte writes inside a stored page
        "write -P 0x22 5120 1536",  # across a page boundary, unaligned to pages
        "read -P 0xa5 0 512",
        "read -P 0x11 512 512",
        "read -P 0xa5 1024 4096",
        "read -P 0x22 5120 1536",
        "read -P 0xa5 6656 1041920",
        "discard 64k 128k",
        "read -P 0 64k 128k",  # this server's TRIM leaves whole pages reading zeros
        "write -z 256k 4k",
        "write -z 300k 1536",  # sub-page zeroes: the rest of the page keeps its bytes
        "read -P 0 256k 4k",
        "read -P 0 300k 1536",
        "read -P 0xa5 301568 512",
        "read -P 0 2M 1M",  # never written
        "flush",
    ]
    args = [need("qemu-io"), "-f", "raw"]
    for command in commands:
        args += ["-c", command]
    ran = await tool(*args, uri(nbd_server, "swap0"))
    assert ran.returncode == 0, ran.output
    assert "verification failed" not in ran.output
    lines = ran.output.splitlines()
    assert sum(line.startswith("read ") for line in lines) == sum(
        c.startswith("read ") for c in commands
    )
    stats = nbd_server.statistics().exports["swap0"]
    assert stats.read_modify_writes >= 3


async def test_nbdcopy_in_and_out_then_qemu_img_compare(
    nbd_factory: ServerFactory, tmp_path: Path
) -> None:
    server = await nbd_factory("img:16MiB")
    image = tmp_path / "corpus.img"
    image.write_bytes(b"".join(corpus.generate(4096, seed=5)))
    copied = tmp_path / "copied.img"
    ran = await tool(need("nbdcopy"), str(image), uri(server, "img"))
    assert ran.returncode == 0, ran.output
    ran = await tool(need("nbdcopy"), uri(server, "img"), str(copied))
    assert ran.returncode == 0, ran.output
    ran = await tool(need("qemu-img"), "compare", "-f", "raw", "-F", "raw", str(image), str(copied))
    assert ran.returncode == 0, ran.output
    assert "Images are identical" in ran.output
    ran = await tool(
        need("qemu-img"), "compare", "-f", "raw", "-F", "raw", str(image), uri(server, "img")
    )
    assert ran.returncode == 0, ran.output


async def test_fio_randrw_with_crc32c_verification(nbd_server: NbdServer) -> None:
    ran = await tool(
        need("fio"),
        "--name=randrw",
        "--ioengine=nbd",
        f"--uri={uri(nbd_server, 'swap0')}",
        "--rw=randrw",
        "--bs=4k",
        "--iodepth=16",
        "--size=16M",
        "--verify=crc32c",
        "--verify_fatal=1",
        "--verify_state_save=0",
        "--output-format=json",
    )
    assert ran.returncode == 0, ran.output
    (job,) = fio_json(ran.output)["jobs"]
    assert job["error"] == 0
    assert job["write"]["io_bytes"] > 0 and job["read"]["io_bytes"] > 0


async def test_fio_trimwrite_with_verification(nbd_server: NbdServer) -> None:
    ran = await tool(
        need("fio"),
        "--name=trimwrite",
        "--ioengine=nbd",
        f"--uri={uri(nbd_server, 'swap0')}",
        "--rw=trimwrite",
        "--bs=64k",
        "--iodepth=8",
        "--size=16M",
        "--verify=crc32c",
        "--verify_fatal=1",
        "--verify_state_save=0",
        "--output-format=json",
    )
    assert ran.returncode == 0, ran.output
    (job,) = fio_json(ran.output)["jobs"]
    assert job["error"] == 0
    assert job["trim"]["io_bytes"] == 16 << 20
    assert job["write"]["io_bytes"] == 16 << 20
    assert job["read"]["io_bytes"] == 16 << 20  # the verification pass
    assert nbd_server.statistics().requests["trim"] == 256


async def test_two_qemu_io_connections_see_each_others_writes_after_flush(
    nbd_server: NbdServer,
) -> None:
    a = await QemuIo.open(uri(nbd_server, "swap0"))
    b = await QemuIo.open(uri(nbd_server, "swap0"))
    try:
        assert "read 4096/4096" in await b.run("read -P 0 0 4k")
        assert "wrote 4096/4096" in await a.run("write -P 0x77 0 4k")
        assert "wrote 512/512" in await a.run("write -P 0x78 8704 512")
        await a.run("flush")
        out = await b.run("read -P 0x77 0 4k")
        assert "read 4096/4096" in out and "failed" not in out, out
        out = await b.run("read -P 0x78 8704 512")
        assert "read 512/512" in out and "failed" not in out, out
        assert "wrote" in await b.run("write -P 0x79 0 512")
        await b.run("flush")
        out = await a.run("read -P 0x79 0 512")
        assert "failed" not in out, out
        out = await a.run("read -P 0x77 512 3584")
        assert "failed" not in out, out
    finally:
        await a.close()
        await b.close()
    assert nbd_server.statistics().connections_accepted == 2
