"""A UDP echo client: sends one datagram to the UDP echo server and prints the reply.

Start ``python examples/udp_echo_server.py`` first, then run ``python examples/udp_echo_client.py "hello"``
(options: ``--host``, ``--port``, ``--timeout``). UDP does not promise delivery, so the client sets a
timeout: if no reply comes in time, recvfrom() raises socket.timeout instead of waiting forever.
"""

import argparse
import sys

import rsock as socket  # the only change from the stdlib version: `import socket`


def main():
    parser = argparse.ArgumentParser(description="UDP echo client")
    parser.add_argument("--host", default="127.0.0.1", help="server address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=65432, help="server port (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=5.0, help="reply timeout in seconds (default: %(default)s)")
    parser.add_argument("message", nargs="?", default="Hello, world", help="text to send (default: %(default)s)")
    args = parser.parse_args()

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(args.timeout)
        # No connect() needed: sendto() names the destination of each datagram.
        sock.sendto(args.message.encode(), (args.host, args.port))
        try:
            data, addr = sock.recvfrom(65535)
        except socket.timeout:
            sys.exit(f"no reply within {args.timeout}s")

    print(f"received {data!r} from {addr[0]}:{addr[1]}")


if __name__ == "__main__":
    main()
