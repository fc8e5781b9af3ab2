"""Asks the UDP time server for the time, with rsock.UdpClient.request(): send, wait, resend.

UDP may lose a datagram, the request or the reply, and nothing tells the sender. ``request(data,
address, timeout=..., retries=...)`` sends the datagram and waits up to ``timeout`` seconds for a reply
from that address (datagrams from anyone else are ignored); with none, it sends again, ``retries``
more times, then raises TimeoutError. Where nothing listens at all, the server's host says so and
``request()`` raises ConnectionRefusedError at once. The client prints the server's time and how far it is from this
machine's clock, counting half the round trip for the reply's journey back.

Start ``python examples/udp_time_server.py`` first, then run ``python examples/udp_time_client.py``
(options: ``--host``, ``--port``, ``--timeout``, ``--retries``). Given a message other than ``TIME``,
``python examples/udp_time_client.py "hello"``, it prints the server's echo.
"""

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta

import rsock


def main():
    parser = argparse.ArgumentParser(description="UDP time client")
    parser.add_argument("--host", default="127.0.0.1", help="server address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=65432, help="server port (default: %(default)s)")
    parser.add_argument(
        "--timeout", type=float, default=1.0, help="seconds to wait for each reply (default: %(default)s)"
    )
    parser.add_argument("--retries", type=int, default=3, help="how many times to resend (default: %(default)s)")
    parser.add_argument("message", nargs="?", default="TIME", help="what to send (default: %(default)s)")
    args = parser.parse_args()

    with rsock.UdpClient() as client:
        sent_at = datetime.now(UTC)
        start = time.monotonic()
        try:
            reply = client.request(
                args.message.encode(), (args.host, args.port), timeout=args.timeout, retries=args.retries
            )
        except TimeoutError as exc:
            sys.exit(f"no reply: {exc}")
        except ConnectionRefusedError:
            sys.exit(f"no reply: nothing listens on port {args.port} of {args.host} (the host refused the request)")
        round_trip = time.monotonic() - start

    if args.message.strip().upper() != "TIME":
        print(f"received {reply!r}")
        return
    server_time = datetime.fromisoformat(reply.decode())
    # The server read its clock about half a round trip after we sent the request.
    offset = (server_time - (sent_at + timedelta(seconds=round_trip / 2))).total_seconds()
    print(f"server time: {server_time.isoformat()}")
    print(f"round trip {round_trip * 1000:.1f} ms, server clock {offset:+.3f} s from ours")


if __name__ == "__main__":
    main()
