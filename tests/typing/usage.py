"""A typed use of rsock's public API, checked by `mypy --strict tests/typing/` in CI (`.ci/run`, `make lint`): if a
stub drifts from what users write, this stops type-checking. It is not a test module (pytest does not collect it);
run as a script, it serves on loopback ports and checks that what it type-checks also runs."""

from __future__ import annotations

import asyncio
from typing import Literal, assert_type

import rsock
import rsock.aio
from rsock import Connection


# Handlers annotated with rsock.Connection, as README says they get one.
def on_message(conn: rsock.Connection, data: bytes) -> bytes | None:
    conn.state["seen"] = True
    return data.upper() if data else None


def on_connect(conn: Connection) -> None:
    peer: tuple[str, int] | tuple[str, int, int, int] = conn.peer
    host: str = conn.local[0]
    conn_id: int = conn.id
    del peer, host, conn_id


def on_disconnect(conn: Connection, exc: BaseException | None) -> None:
    closed: bool = conn.closed
    del closed


# A UdpServer's handler gets (host, port) from an IPv4 server, (host, port, flowinfo, scope_id) from an IPv6 one:
# annotated with either shape, or with both.
def on_datagram(data: bytes, address: tuple[str, int]) -> bytes:
    return data


def on_datagram_any_family(data: bytes, address: tuple[str, int] | tuple[str, int, int, int]) -> bytearray:
    return bytearray(data + address[0].encode())


def drop_in() -> bytes:
    with rsock.socket(rsock.AF_INET, rsock.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with rsock.create_connection(server.getsockname(), timeout=5) as client:
            conn, _address = server.accept()
            with conn:
                client.sendall(b"hi")
                return conn.recv(1024)


def high_level() -> dict[str, int]:
    with rsock.TcpServer(("127.0.0.1", 0), on_message, framing="line", idle_timeout=30.0) as server:
        with rsock.TcpClient(server.address, timeout=5, framing="line") as client:
            reply: bytes = client.request(b"ping")
            client.send(b"pong")
            message: bytes | None = client.recv_message()
            del reply, message
        sent: int = server.broadcast(b"bye")
        del sent
        stats: dict[str, int] = server.stats
    with rsock.UdpServer(("127.0.0.1", 0), on_datagram) as udp, rsock.UdpClient() as uc:
        echo: bytes = uc.request(b"x", udp.address, timeout=1.0, retries=2)
        del echo
    return stats


# `with` returning from inside: the context managers' __exit__ never swallows an exception (-> None), so mypy
# knows the function cannot fall off the end.
def port_of_a_server() -> int:
    with rsock.TcpServer(None, on_message) as server:
        return server.address[1]


def fileno_of_a_client(port: int) -> int:
    with rsock.TcpClient(("127.0.0.1", port)) as client:
        return client.fileno()


def port_of_a_udp_server() -> int:
    with rsock.UdpServer(None, on_datagram) as server:
        return server.address[1]


def port_of_a_udp_client() -> int:
    with rsock.UdpClient(("127.0.0.1", 0)) as client:
        return client.local[1]


def framings() -> list[str | bytes | None]:
    seen: list[str | bytes | None] = []
    for framing in ("line", "length", b"\r\n", bytearray(b"|"), None):
        with rsock.TcpServer(None, on_message, framing=framing) as server:
            with rsock.TcpClient(server.address, framing=server.framing, timeout=5) as client:
                seen.append(client.framing)
    return seen


def addresses_as_create_connection_takes_them() -> list[bytes]:
    """A TcpClient's port may be a service, and its address a list (a JSON configuration's)."""
    replies: list[bytes] = []
    with rsock.TcpServer(None, on_message, framing="line") as server:
        port = server.address[1]
        with rsock.TcpClient(("127.0.0.1", str(port)), framing="line", timeout=5) as client:
            replies.append(client.request(b"service"))
        with rsock.TcpClient(("localhost", str(port).encode()), framing="line", timeout=5) as client:
            replies.append(client.request(b"bytes service"))
        with rsock.TcpClient(["127.0.0.1", port], framing="line", timeout=5) as client:
            replies.append(client.request(b"list"))
    return replies


def ipv6() -> tuple[bytes, bytes]:
    with rsock.TcpServer(("::1", 0, 0, 0), on_message, on_connect=on_connect, on_disconnect=on_disconnect) as server:
        address = server.address
        assert len(address) == 4
        host, port, flowinfo, scope_id = address
        with rsock.TcpClient((host, port, flowinfo, scope_id), timeout=5) as client:
            client.send(b"v6")
            tcp_reply = client.recv_exactly(2)
    with rsock.TcpServer(None, on_message) as loopback_server:
        # A None host: the loopback address, as for create_connection().
        with rsock.TcpClient((None, loopback_server.address[1]), timeout=5) as loopback:
            del loopback
    with rsock.UdpServer(("::1", 0), on_datagram_any_family) as udp, rsock.UdpClient(("::1", 0, 0, 0)) as uc:
        uc.sendto(b"x", udp.address)
        data, sender = uc.recvfrom(timeout=5)
        sender_port: int = sender[1]
        del sender_port
    return tcp_reply, data


async def with_asyncio_streams() -> bytes:
    async def echo(reader: rsock.aio.StreamReader, writer: rsock.aio.StreamWriter) -> None:
        async for line in reader:
            writer.write(line)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await rsock.aio.start_server(echo, "127.0.0.1", 0)
    async with server:
        port: int = server.sockets[0].getsockname()[1]
        reader, writer = await rsock.aio.open_connection("127.0.0.1", port)
        writer.write(b"hello\n")
        writer.writelines([b"wor", bytearray(b"ld\n")])
        await writer.drain()
        line: bytes = await reader.readline()
        rest: bytes = await reader.readuntil(b"\n")
        writer.close()
        await writer.wait_closed()
        server.close()
    return line + rest


async def with_aio_servers() -> tuple[bytes | None, bytes]:
    server: rsock.aio.TcpServer

    async def on_async_connect(conn: rsock.Connection) -> None:
        conn.send(b"welcome")

    async def on_async_message(conn: rsock.Connection, data: bytes) -> bytes | None:
        await asyncio.sleep(0)
        server.broadcast(data, exclude=conn)
        return data

    async def on_async_disconnect(conn: rsock.Connection, exc: BaseException | None) -> None:
        await asyncio.sleep(0)

    async def on_async_datagram(data: bytes, address: tuple[str, int] | tuple[str, int, int, int]) -> bytes:
        return data

    server = rsock.aio.TcpServer(
        ("127.0.0.1", 0),
        on_async_message,
        on_connect=on_async_connect,
        on_disconnect=on_async_disconnect,
        framing="line",
    )
    async with server, rsock.aio.UdpServer(("127.0.0.1", 0), on_async_datagram) as udp:
        async with await rsock.aio.TcpClient.connect(server.address, framing="line", timeout=5) as client:
            greeting: bytes | None = await client.recv_message()
            await client.send(b"hi")
            reply: bytes = await client.request(b"again")
            peer: tuple[str, int] | tuple[str, int, int, int] = client.peer
            del reply, peer
        async with rsock.aio.UdpClient() as uc:
            echo: bytes = await uc.request(b"x", udp.address, timeout=1.0)
            sent: int = await uc.sendto(b"y", udp.address)
            data, sender = await uc.recvfrom(timeout=5)
            del sent, data, sender
        stats: dict[str, int] = server.stats
        del stats
    return greeting, echo


async def types_given() -> None:
    """What mypy infers, spelled out: none of it Any. (Type-checked only: not run.)"""
    IPAddress = tuple[str, int] | tuple[str, int, int, int]
    with rsock.TcpServer() as server, rsock.TcpClient(server.address) as client, rsock.UdpClient() as uc:
        assert_type(server.address, IPAddress)
        assert_type(client.peer, IPAddress)
        assert_type(client.local, IPAddress)
        assert_type(client.framing, Literal["line", "length"] | bytes | None)
        assert_type(uc.recvfrom(timeout=0), tuple[bytes, IPAddress])
    async with rsock.aio.TcpServer() as aio_server:
        assert_type(aio_server, rsock.aio.TcpServer)
        assert_type(aio_server.address, IPAddress)
        client_ = await rsock.aio.TcpClient.connect(aio_server.address)
        assert_type(client_, rsock.aio.TcpClient)
        assert_type(await client_.recv(), bytes)
        assert_type(await client_.recv_message(), bytes | None)
        await client_.close()
    reader, writer = await rsock.aio.open_connection("127.0.0.1", 80)
    assert_type(reader, rsock.aio.StreamReader)
    assert_type(writer, rsock.aio.StreamWriter)
    assert_type(await reader.read(), bytes)
    assert_type(await rsock.aio.start_server(lambda r, w: None), rsock.aio.Server)


if __name__ == "__main__":
    print(drop_in(), high_level(), port_of_a_server(), port_of_a_udp_server(), port_of_a_udp_client())
    print(framings(), addresses_as_create_connection_takes_them(), ipv6())
    print(asyncio.run(with_asyncio_streams()), asyncio.run(with_aio_servers()))
