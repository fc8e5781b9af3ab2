"""Sends a file to ``file_receive.py`` with rsock.TcpClient.sendfile(), showing a progress bar.

``sendfile(path)`` hands the file to the kernel's sendfile(2): the bytes go from the page cache to the
socket without passing through Python. ``progress=`` is called after each chunk with the number of bytes
just sent, which is what ``tqdm(...).update`` takes, so a tqdm bar plugs straight in; without tqdm
installed, a percentage line does the same job. Both draw on stderr, leaving stdout to the results.

The protocol (see ``file_receive.py``): a JSON header line with the file's name and size (``framing="line"``
makes ``send()`` add the newline), then the file's raw bytes (``sendfile()`` sends them as they are,
whatever the framing), then the receiver's one-line answer, ``ok SIZE SHA256``, read with
``recv_message()``. The sender prints the SHA-256 it computed and checks it against the receiver's.

Start ``python examples/file_receive.py`` first, then run ``python examples/file_send.py PATH`` (options:
``--host``, ``--port``, ``--timeout``). It exits with code 1 if the receiver's answer is not the expected one.
"""

import argparse
import hashlib
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import rsock


@contextmanager
def progress_bar(name, total):
    """Yields a callable for sendfile(progress=...) that draws a progress bar on stderr."""
    try:
        from tqdm import tqdm
    except ImportError:  # no tqdm: print a percentage, rewriting the line in place with \r
        sent = 0

        def show(n):
            nonlocal sent
            sent += n
            percent = 100 * sent // total if total else 100
            print(f"\r{name}: {percent}% of {total} bytes", end="", file=sys.stderr, flush=True)

        show(0)
        yield show
        print(file=sys.stderr)
    else:
        with tqdm(total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024) as bar:
            yield bar.update  # tqdm's update(n) adds n to the count, just what progress= passes


def main():
    parser = argparse.ArgumentParser(description="send a file over TCP with rsock.TcpClient.sendfile()")
    parser.add_argument("--host", default="127.0.0.1", help="receiver address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=65432, help="receiver port (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds (default: %(default)s)")
    parser.add_argument("path", type=Path, help="the file to send")
    args = parser.parse_args()

    path = args.path
    if not path.is_file():
        parser.error(f"{path} is not a file")
    size = path.stat().st_size
    with path.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()  # to compare with the receiver's

    with rsock.TcpClient((args.host, args.port), framing="line", timeout=args.timeout) as client:
        client.send(json.dumps({"name": path.name, "size": size}).encode())  # the header line
        with progress_bar(path.name, size) as progress:
            sent = client.sendfile(path, progress=progress)  # the file, as raw bytes
        reply = client.recv_message()  # the receiver's answer line (None if it hung up without one)

    print(f"sent {path.name}: {sent} bytes, sha256 {digest}")
    if reply is None:
        sys.exit("the receiver closed the connection without answering")
    print(f"receiver: {reply.decode()}")
    if reply.decode() != f"ok {size} {digest}":
        sys.exit("the receiver did not get the file intact")


if __name__ == "__main__":
    main()
