"""A UDP time server on rsock.UdpServer: answers ``TIME`` with the current time and echoes anything else.

``on_datagram(data, address)`` runs for each datagram that arrives, and whatever it returns goes back
to the sender as one datagram; returning None sends nothing. Receiving happens in Rust, in batches
(recvmmsg), and Python runs only the handler. The time is sent as ISO 8601 text in UTC, e.g.
``2025-01-31T12:34:56.789012+00:00``, which ``datetime.fromisoformat()`` reads back.

Run it with ``python examples/udp_time_server.py`` (options: ``--host``, ``--port``, where 0 picks a free
port, and ``--max-clients N`` to exit after answering N datagrams), then ask it the time with
``python examples/udp_time_client.py``. Stop it with Ctrl-C.
"""

import argparse
from datetime import UTC, datetime

import rsock


def main():
    parser = argparse.ArgumentParser(description="UDP time server on rsock.UdpServer")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=65432, help="port to listen on, 0 for any (default: %(default)s)")
    parser.add_argument("--max-clients", type=int, metavar="N", help="exit after answering N datagrams")
    args = parser.parse_args()

    answered = 0

    def on_datagram(data, address):
        nonlocal answered
        host, port = address
        if data.strip().upper() == b"TIME":
            reply = datetime.now(UTC).isoformat().encode()
            print(f"time asked by {host}:{port}", flush=True)
        else:
            reply = data
            print(f"echoing {len(data)} bytes to {host}:{port}", flush=True)
        answered += 1
        if answered == args.max_clients:
            server.stop()  # the reply below still goes out: stop() only ends the receiving
        return reply

    server = rsock.UdpServer((args.host, args.port), on_datagram)
    host, port = server.address
    print(f"listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("interrupted, shutting down")
    stats = server.stats
    print(f"datagrams in: {stats['datagrams_in']}, out: {stats['datagrams_out']}, errors: {stats['errors']}")


if __name__ == "__main__":
    main()
