"""The echo server again, with rsock.TcpServer: the whole server is one handler.

TcpServer accepts, reads and writes every connection in Rust, all at once, and calls Python only to run
the handlers. ``on_message(conn, data)`` gets the bytes each read brings, and whatever it returns is sent
back, so an echo server is ``on_message=lambda conn, data: data``. Compare ``tcp_echo_server.py`` (one
client at a time) and ``threaded_server.py`` / ``select_server.py`` (many clients, more code).

Run it with ``python examples/echo_server.py`` (options: ``--host``, ``--port``, where 0 picks a free port,
and ``--max-clients N`` to exit once N clients have come and gone), then talk to it with
``python examples/tcp_echo_client.py "hello"``, as many at once as you like. Stop it with Ctrl-C; it
prints the server's counters (``server.stats``) on the way out.
"""

import argparse

import rsock


def main():
    parser = argparse.ArgumentParser(description="TCP echo server on rsock.TcpServer")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=65432, help="port to listen on, 0 for any (default: %(default)s)")
    parser.add_argument("--max-clients", type=int, metavar="N", help="exit after serving N clients")
    args = parser.parse_args()

    served = 0

    def on_disconnect(conn, exc):
        # Runs when a connection ends; exc is None for a clean close, else why it ended.
        nonlocal served
        served += 1
        if served == args.max_clients:
            server.stop()  # serve_forever() returns once the server has stopped

    # Without framing, each read is a message: the echo goes back exactly as the bytes arrived.
    server = rsock.TcpServer((args.host, args.port), on_message=lambda conn, data: data, on_disconnect=on_disconnect)
    host, port = server.address  # the real port, even when we asked for port 0
    print(f"listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()  # Ctrl-C stops the server cleanly, then raises KeyboardInterrupt here
    except KeyboardInterrupt:
        print("interrupted, shutting down")
    stats = server.stats
    print(
        f"connections: {stats['accepted']}, messages: {stats['messages']}, bytes in: {stats['bytes_in']}, "
        f"bytes out: {stats['bytes_out']}, errors: {stats['errors']}"
    )


if __name__ == "__main__":
    main()
