"""What goes wrong with sockets, and how to catch it: four cases, each printing what happened.

1. A timeout: settimeout() bounds how long recv() waits; past it, socket.timeout is raised.
2. Connection refused: connect() to a port where nothing listens raises ConnectionRefusedError.
3. A non-blocking socket: recv() with no data waiting raises BlockingIOError instead of waiting.
4. An unknown host: a name that does not resolve raises socket.gaierror (the ``.invalid`` top-level
   domain is reserved and never resolves).
Everything stays on this machine (127.0.0.1, plus one name lookup). Run it with
``python examples/timeouts_and_errors.py`` (option: ``--timeout`` for case 1, in seconds).
"""

import argparse
import time

import rsock as socket  # the only change from the stdlib version: `import socket`

UNKNOWN_HOST = "no-such-host.invalid"


def timeout_case(seconds):
    """recv() from a server that never sends: the timeout ends the wait."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            client.settimeout(seconds)  # None: block forever; 0: non-blocking; > 0: wait at most that long
            start = time.monotonic()
            try:
                data = client.recv(1024)
            except socket.timeout as exc:  # socket.timeout is TimeoutError
                elapsed = time.monotonic() - start
                print(f"timeout: recv() raised {type(exc).__name__} after {elapsed:.2f}s: {exc}")
            else:
                print(f"timeout: recv() unexpectedly returned {data!r}")


def refused_case():
    """connect() to a port that is bound but not listening: the peer answers with a reset."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as placeholder:
        # Holding the port bound (without listen()) keeps it free of listeners while we try it.
        placeholder.bind(("127.0.0.1", 0))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
            try:
                client.connect(placeholder.getsockname())
            except ConnectionRefusedError as exc:  # a subclass of OSError, like every socket error
                print(f"refused: connect() raised {type(exc).__name__}: {exc}")
            else:
                print("refused: connect() unexpectedly succeeded")


def nonblocking_case():
    """recv() on a non-blocking socket with nothing to read: it fails at once instead of waiting."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            client.setblocking(False)  # the same as settimeout(0)
            try:
                data = client.recv(1024)
            except BlockingIOError as exc:  # "try again later": select() would say when
                print(f"non-blocking: recv() raised {type(exc).__name__}: {exc}")
            else:
                print(f"non-blocking: recv() unexpectedly returned {data!r}")


def unknown_host_case():
    """connect() to a host name that does not exist: the name lookup fails before any connection."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
        try:
            client.connect((UNKNOWN_HOST, 80))
        except socket.gaierror as exc:  # gai: getaddrinfo(), the name lookup
            print(f"unknown host: connect() raised {type(exc).__name__} for {UNKNOWN_HOST}: {exc}")
        else:
            print(f"unknown host: connect() to {UNKNOWN_HOST} unexpectedly succeeded")


def main():
    parser = argparse.ArgumentParser(description="socket timeouts and errors")
    parser.add_argument("--timeout", type=float, default=0.5, help="the timeout of case 1 (default: %(default)s)")
    args = parser.parse_args()

    timeout_case(args.timeout)
    refused_case()
    nonblocking_case()
    unknown_host_case()


if __name__ == "__main__":
    main()
