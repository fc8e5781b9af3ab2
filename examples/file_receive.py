"""Receives files sent by ``file_send.py``: an rsock.TcpServer that writes what arrives to disk.

The protocol is one line of JSON, then the file's bytes, then one line back:

1. the sender sends a header line, ``{"name": "photo.jpg", "size": 5242880}`` and a newline;
2. then exactly ``size`` bytes, the file itself, as they are (no framing, no escaping);
3. the receiver answers ``ok SIZE SHA256`` (or ``error: WHY``) and a newline; the sender then closes.

The size tells the receiver where the file ends, so one connection could carry more; here it carries
one. A server has one framing for the whole connection, and the file is raw bytes that no framing may
cut, so the server runs without framing (``framing=None``): ``on_message`` gets the bytes of each read
as they come, whole or not, and the handler does the cutting itself, keeping each connection's progress
in ``conn.state``: up to the first newline is the header, the rest is file. It hashes the bytes as it writes
them, into a temporary file renamed into place only once the whole file is in.

Run it with ``python examples/file_receive.py`` (options: ``--host``, ``--port``, where 0 picks a free
port, ``--output-dir DIR``, where files go, ``received`` by default, made if missing, and ``--max-clients N`` to exit
after N connections), then send a file with ``python examples/file_send.py PATH``. Stop it with Ctrl-C.
"""

import argparse
import hashlib
import json
import os
from pathlib import Path

import rsock

MAX_HEADER = 4096  # bytes: a header line longer than this is not one


def main():
    parser = argparse.ArgumentParser(description="receive files over TCP with rsock.TcpServer")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=65432, help="port to listen on, 0 for any (default: %(default)s)")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("received"),
        help="where to write files, made if missing (default: %(default)s)",
    )
    parser.add_argument("--max-clients", type=int, metavar="N", help="exit after serving N clients")
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)

    def start_file(conn, header_line):
        """Parses the header and opens the file it announces; returns an error message or None."""
        try:
            header = json.loads(header_line)
            name, size = header["name"], header["size"]
        except (ValueError, TypeError, KeyError):
            return "the header must be a JSON object with a name and a size"
        # Keep only the last part of the name: a sender must not write outside the output directory.
        name = Path(name).name if isinstance(name, str) else ""
        if name in ("", ".", "..") or not isinstance(size, int) or size < 0:
            return "bad name or size in the header"
        target = args.output_dir / name
        temporary = args.output_dir / f".{name}.{conn.id}.part"
        conn.state.update(
            target=target, temporary=temporary, file=temporary.open("wb"), size=size, got=0, sha=hashlib.sha256()
        )
        return None

    def finish_file(conn):
        """Closes the completed file, moves it into place and returns the reply line."""
        state = conn.state
        state["file"].close()
        os.replace(state["temporary"], state["target"])
        digest = state["sha"].hexdigest()
        host, port = conn.peer
        print(f"received {state['target']} ({state['size']} bytes) from {host}:{port}, sha256 {digest}", flush=True)
        state["done"] = True
        return f"ok {state['size']} {digest}\n".encode()

    def refuse(conn, why):
        """Tells the sender what went wrong and hangs up."""
        conn.send(f"error: {why}\n".encode())
        conn.close()  # closes once the error line has gone out

    def on_message(conn, data):
        state = conn.state
        if "file" not in state:  # still reading the header line
            buffered = state.get("header", b"") + data
            header_line, newline, data = buffered.partition(b"\n")
            if not newline:  # not all of it yet: keep what came and wait for more
                if len(buffered) > MAX_HEADER:
                    refuse(conn, "no header line")
                else:
                    state["header"] = buffered
                return None
            error = start_file(conn, header_line)
            if error:
                refuse(conn, error)
                return None
        # The rest is file content.
        if state["got"] + len(data) > state["size"]:
            refuse(conn, "more data than the header announced")
            return None
        state["file"].write(data)  # a blocking write, fine for an example: a local disk is fast
        state["sha"].update(data)
        state["got"] += len(data)
        if state["got"] == state["size"]:
            return finish_file(conn)  # what on_message returns is sent back: the sender waits for it
        return None

    served = 0

    def on_disconnect(conn, exc):
        nonlocal served
        state = conn.state
        if "file" in state and not state.get("done"):  # the sender went away before the end
            state["file"].close()
            state["temporary"].unlink()
            print(f"incomplete: {state['target'].name}, {state['got']} of {state['size']} bytes", flush=True)
        served += 1
        if served == args.max_clients:
            server.stop()

    server = rsock.TcpServer((args.host, args.port), on_message=on_message, on_disconnect=on_disconnect)
    host, port = server.address
    print(f"listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("interrupted, shutting down")


if __name__ == "__main__":
    main()
