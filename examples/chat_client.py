"""A client for the chat room: what you type goes to the room, what the others say is printed.

Start ``python examples/chat_server.py`` first, then run ``python examples/chat_client.py --nick NAME``
in a few terminals and type (options: ``--host``, ``--port``). ``/nick NAME`` renames you; ``/quit`` or
end-of-input (Ctrl-D) leaves the room, Ctrl-C too.

``rsock.TcpClient`` with ``framing="line"`` sends each message as one line (it adds the newline) and
``recv_message()`` returns one whole line at a time, however TCP split the bytes. A client must listen
and talk at once, so the main thread prints what arrives while a second thread sends what you type:
TcpClient lets one thread send while another waits in ``recv_message()``.

Without a terminal, ``--send TEXT --count N`` sends TEXT N times, then leaves, printing what arrived
meanwhile: ``python examples/chat_client.py --nick bot --send "hello" --count 3``.
"""

import argparse
import sys
import threading

import rsock


def send_lines(client, lines):
    """Sends each line as a message, then /quit; the server then closes the connection."""
    try:
        for line in lines:
            client.send(line.rstrip("\r\n").encode())
        client.send(b"/quit")
    except OSError:
        pass  # the server went away: the main thread sees the connection end and says so


def main():
    parser = argparse.ArgumentParser(description="chat room client")
    parser.add_argument("--host", default="127.0.0.1", help="server address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=65432, help="server port (default: %(default)s)")
    parser.add_argument("--nick", help="the name to chat under (default: the server's guestN)")
    parser.add_argument("--send", metavar="TEXT", help="send TEXT instead of reading lines from stdin")
    parser.add_argument("--count", type=int, default=1, metavar="N", help="with --send: send it N times")
    args = parser.parse_args()

    with rsock.TcpClient((args.host, args.port), framing="line") as client:
        if args.nick:
            client.send(f"/nick {args.nick}".encode())
        lines = sys.stdin if args.send is None else [args.send] * args.count
        # daemon=True: when the server ends the chat, exit without waiting for another line from stdin.
        threading.Thread(target=send_lines, args=(client, lines), daemon=True).start()

        # recv_message() waits with the GIL released (the sending thread runs meanwhile) and returns
        # None once the server has closed the connection.
        while (message := client.recv_message()) is not None:
            print(message.decode("utf-8", errors="replace"), flush=True)
    print("* disconnected", flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass  # Ctrl-C: leave quietly; closing the connection tells the server
