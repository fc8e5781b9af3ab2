"""A TCP echo client: connects to the echo server, sends a message and prints what comes back.

Start a server first (``python examples/tcp_echo_server.py``, or the threaded or select server), then run
``python examples/tcp_echo_client.py "hello, world"`` (options: ``--host``, ``--port``). The client sends
the whole message, shuts down its sending side so the server sees end-of-file, and reads the echo until
the server closes the connection: TCP is a byte stream, so one recv() need not return the whole reply.
"""

import argparse

import rsock as socket  # the only change from the stdlib version: `import socket`


def main():
    parser = argparse.ArgumentParser(description="TCP echo client")
    parser.add_argument("--host", default="127.0.0.1", help="server address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=65432, help="server port (default: %(default)s)")
    parser.add_argument("message", nargs="?", default="Hello, world", help="text to send (default: %(default)s)")
    args = parser.parse_args()

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.connect((args.host, args.port))
        sock.sendall(args.message.encode())
        sock.shutdown(socket.SHUT_WR)  # "I have nothing more to send": the server's recv() returns b""

        chunks = []
        while True:
            data = sock.recv(1024)
            if not data:  # the server closed the connection: the echo is complete
                break
            chunks.append(data)

    print(f"received {b''.join(chunks)!r}")


if __name__ == "__main__":
    main()
