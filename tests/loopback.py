"""What the loopback interface of the machine running the tests offers."""

import socket


def ipv6_loopback_available():
    """Whether ::1 can be bound here (a machine may have IPv6 support but no loopback address)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True
