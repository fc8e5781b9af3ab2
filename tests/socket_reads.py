"""Reading from a socket in tests: whole byte counts, to the end of the stream, or nothing at all.

Each takes any object with the socket's recv() and timeout methods: a stdlib or rsock socket, or a connection an
example hands out."""

import pytest


def recv_exactly(sock, size):
    """Exactly `size` bytes from `sock`: TCP need not deliver them in one piece. Fails on an EOF before them."""
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(1 << 16, size - len(data)))
        assert chunk, f"EOF after {len(data)} of {size} bytes: {bytes(data[-64:])!r} last"
        data += chunk
    return bytes(data)


def recv_until_eof(sock):
    """Everything `sock` receives until its peer ends the stream."""
    data = bytearray()
    while chunk := sock.recv(1 << 16):
        data += chunk
    return bytes(data)


def recv_until_closed(sock, limit=64 << 20):
    """Everything `sock` receives until its peer closes the connection, a reset counting as the close (a server
    that closes with unread input resets); it stops after about `limit` bytes, should the peer never stop."""
    data = bytearray()
    while len(data) <= limit:
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def assert_nothing_waiting(sock):
    """No byte or datagram is waiting on `sock` (checked without blocking; its timeout is restored)."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        with pytest.raises(BlockingIOError):
            sock.recv(65536)
    finally:
        sock.settimeout(timeout)
