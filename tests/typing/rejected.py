"""Uses of rsock's API that type checkers must reject, each line marked with the error it must give. Checked with
`mypy --strict tests/typing/` in CI: with warn_unused_ignores (part of --strict, and set below for any other run), a
stub that becomes too loose to reject a line fails the check ("Unused 'type: ignore' comment"), and one that
rejects it for another reason does too. Never run (nothing here is called), nor collected by pytest."""

# mypy: warn-unused-ignores

from __future__ import annotations

import ssl

import rsock
import rsock.aio


def on_message(conn: rsock.Connection, data: bytes) -> bytes:
    return data


def on_datagram(data: bytes, address: tuple[str, int]) -> bytes:
    return data


def needs_a_connection(data: bytes) -> bytes:
    return data


def replies_str(conn: rsock.Connection, data: bytes) -> str:
    return data.decode()


async def replies_later(conn: rsock.Connection, data: bytes) -> bytes:
    return data


async def replies_str_later(conn: rsock.Connection, data: bytes) -> str:
    return data.decode()


def takes_the_address_as_str(data: bytes, address: str) -> bytes:
    return data


def sync_api(server: rsock.TcpServer, client: rsock.TcpClient, udp: rsock.UdpClient) -> None:
    # Addresses: a (host, port) tuple (or IPv6's four-tuple), an int port.
    rsock.TcpServer("127.0.0.1:0", on_message)  # type: ignore[arg-type]
    rsock.TcpServer(("127.0.0.1", "0"), on_message)  # type: ignore[arg-type]
    rsock.TcpClient(("127.0.0.1",))  # type: ignore[arg-type]
    rsock.UdpServer([None, 0], on_datagram)  # type: ignore[arg-type]
    udp.request(b"x", "127.0.0.1:1")  # type: ignore[arg-type]
    udp.request(b"x", (None, 1))  # type: ignore[arg-type]  # a destination needs a host
    udp.sendto(b"x", ("127.0.0.1", 1.0))  # type: ignore[arg-type]
    # What they give back is an address of either shape, not Any.
    pair: tuple[str, int] = server.address  # type: ignore[assignment]
    peer_port: str = client.peer[1]  # type: ignore[assignment]
    sender: str = udp.recvfrom()[1]  # type: ignore[assignment]
    # framing: "line", "length" or a bytes delimiter.
    rsock.TcpServer(None, on_message, framing="lines")  # type: ignore[arg-type]
    rsock.TcpServer(None, on_message, framing=5)  # type: ignore[arg-type]
    rsock.TcpClient(("127.0.0.1", 1), framing=memoryview(b"|"))  # type: ignore[arg-type]
    rsock.TcpClient(("127.0.0.1", 1), framing="|")  # type: ignore[arg-type]
    # Handlers: (conn, data) -> bytes-like or None for TCP, (data, address) for UDP, not async for sync servers.
    rsock.TcpServer(None, needs_a_connection)  # type: ignore[arg-type]
    rsock.TcpServer(None, replies_str)  # type: ignore[arg-type]
    rsock.TcpServer(None, replies_later)  # type: ignore[arg-type]
    rsock.UdpServer(None, on_message)  # type: ignore[arg-type]
    rsock.UdpServer(None, takes_the_address_as_str)  # type: ignore[arg-type]
    # Data is bytes-like; a message may be None.
    client.send("text")  # type: ignore[arg-type]
    server.broadcast("text")  # type: ignore[arg-type]
    udp.request("x", ("127.0.0.1", 1))  # type: ignore[arg-type]
    udp.request(b"x", ("127.0.0.1", 1), timeout=None)  # type: ignore[arg-type]
    message: bytes = client.recv_message()  # type: ignore[assignment]
    del pair, peer_port, sender, message


async def aio_api(
    server: rsock.aio.TcpServer, client: rsock.aio.TcpClient, udp: rsock.aio.UdpClient, context: ssl.SSLContext
) -> None:
    rsock.aio.TcpServer("127.0.0.1:0", on_message)  # type: ignore[arg-type]
    rsock.aio.TcpServer(None, on_message, framing=42)  # type: ignore[arg-type]
    rsock.aio.TcpServer(None, replies_str_later)  # type: ignore[arg-type]
    rsock.aio.UdpServer(None, replies_later)  # type: ignore[arg-type]
    server.start()  # type: ignore[unused-coroutine]
    await server.stop("soon")  # type: ignore[arg-type]
    await rsock.aio.TcpClient.connect("127.0.0.1:80")  # type: ignore[arg-type]
    await rsock.aio.TcpClient.connect(("127.0.0.1", 80), framing="lines")  # type: ignore[arg-type]
    text: str = await client.request(b"x")  # type: ignore[assignment]
    await client.request("text")  # type: ignore[arg-type]
    await client.send("text")  # type: ignore[arg-type]
    message: bytes = await client.recv_message()  # type: ignore[assignment]
    await udp.request(b"x", "127.0.0.1:1")  # type: ignore[arg-type]
    await udp.sendto("x", ("127.0.0.1", 1))  # type: ignore[arg-type]
    # Streams, as asyncio's.
    reader, writer = await rsock.aio.open_connection("127.0.0.1", 1.5)  # type: ignore[call-overload]
    reader, writer = await rsock.aio.open_connection("127.0.0.1", 80)
    await reader.read("10")  # type: ignore[arg-type]
    line: str = await reader.readline()  # type: ignore[assignment]
    writer.write("text")  # type: ignore[arg-type]
    # With ssl, asyncio's own reader and writer.
    tls_reader, _ = await rsock.aio.open_connection("example.org", 443, ssl=context)
    not_ours: rsock.aio.StreamReader = tls_reader  # type: ignore[assignment]

    async def one_argument(reader: rsock.aio.StreamReader) -> None: ...

    await rsock.aio.start_server(one_argument, "127.0.0.1", 0)  # type: ignore[arg-type]
    await rsock.aio.start_server(lambda r, w: None, "127.0.0.1", port=1.5)  # type: ignore[call-overload]
    del text, message, line, not_ours
