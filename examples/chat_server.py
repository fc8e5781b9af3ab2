"""A chat room on rsock.TcpServer: every line a member sends goes to every other member.

``framing="line"`` makes the server cut each connection's byte stream into lines: ``on_message`` gets
one line at a time (without its newline) however the bytes arrived, and whatever is sent to a client,
by ``conn.send()`` or ``server.broadcast()``, gets a newline added. The three handlers are the whole
server:

- ``on_connect(conn)``: greets the newcomer and tells the others, who see ``* guest1 joined``;
- ``on_message(conn, line)``: ``/nick NAME`` renames the sender (kept in ``conn.state``, a dict for
  each connection's own data), ``/quit`` leaves, and any other line goes to everyone else as
  ``NAME: line``;
- ``on_disconnect(conn, exc)``: tells the others who left.

Handlers run one at a time, on rsock's I/O thread, so they need no locks and their prints never mix.

Run it with ``python examples/chat_server.py`` (options: ``--host``, ``--port``, where 0 picks a free
port, and ``--max-clients N`` to exit once N members have come and gone), then start a few
``python examples/chat_client.py --nick NAME`` in other terminals. Stop it with Ctrl-C.
"""

import argparse

import rsock


def main():
    parser = argparse.ArgumentParser(description="chat room on rsock.TcpServer")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=65432, help="port to listen on, 0 for any (default: %(default)s)")
    parser.add_argument("--max-clients", type=int, metavar="N", help="exit after N members have left")
    args = parser.parse_args()

    left = 0

    def on_connect(conn):
        nick = conn.state["nick"] = f"guest{conn.id}"
        host, port = conn.peer
        print(f"{nick} joined from {host}:{port}", flush=True)
        others = server.stats["active"] - 1
        conn.send(f"* welcome, {nick}! others here: {others}. /nick NAME renames you, /quit leaves".encode())
        server.broadcast(f"* {nick} joined".encode(), exclude=conn)

    def on_message(conn, data):
        nick = conn.state["nick"]
        text = data.decode("utf-8", errors="replace").strip()
        command, _, argument = text.partition(" ")
        if command == "/nick":
            new_nick = argument.strip()
            if not new_nick or " " in new_nick:
                return b"* usage: /nick NAME (one word)"
            conn.state["nick"] = new_nick
            print(f"{nick} is now {new_nick}", flush=True)
            server.broadcast(f"* {nick} is now {new_nick}".encode(), exclude=conn)
            return f"* you are now {new_nick}".encode()  # what on_message returns goes to the sender
        if command == "/quit":
            conn.close()  # on_disconnect tells the others
            return None
        if text:
            server.broadcast(f"{nick}: {text}".encode(), exclude=conn)  # to everyone but the sender
        return None  # nothing goes back to the sender

    def on_disconnect(conn, exc):
        nonlocal left
        nick = conn.state["nick"]
        reason = "" if exc is None else f" ({exc!r})"  # exc is None when the connection closed cleanly
        print(f"{nick} left{reason}", flush=True)
        server.broadcast(f"* {nick} left".encode())  # conn is no longer among the server's connections
        left += 1
        if left == args.max_clients:
            server.stop()

    server = rsock.TcpServer(
        (args.host, args.port),
        on_message=on_message,
        on_connect=on_connect,
        on_disconnect=on_disconnect,
        framing="line",
    )
    host, port = server.address
    print(f"listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("interrupted, shutting down")


if __name__ == "__main__":
    main()
