"""A typed use of rsock's public API, checked by mypy in CI (`.ci/run`): if a stub drifts from what
users write, this stops type-checking. It is not a test module (pytest does not collect it)."""

from __future__ import annotations

import asyncio

import rsock
import rsock.aio


def on_message(conn: rsock.Connection, data: bytes) -> bytes | None:
    conn.state["seen"] = True
    return data.upper() if data else None


def on_datagram(data: bytes, address: tuple[str, int]) -> bytes:
    return data


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
            message: bytes | None = client.recv_message()
            del reply, message
        sent: int = server.broadcast(b"bye")
        del sent
        stats: dict[str, int] = server.stats
    with rsock.UdpServer(("127.0.0.1", 0), on_datagram) as udp, rsock.UdpClient() as uc:
        echo: bytes = uc.request(b"x", udp.address, timeout=1.0, retries=2)
        del echo
    return stats


async def with_asyncio() -> bytes:
    reader, writer = await rsock.aio.open_connection("127.0.0.1", 8888)
    writer.write(b"hello")
    await writer.drain()
    data = await reader.read(100)
    writer.close()
    await writer.wait_closed()
    return bytes(data)


if __name__ == "__main__":
    print(drop_in(), high_level(), asyncio.run(with_asyncio()))
