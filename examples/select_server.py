"""A TCP echo server that serves many clients from one thread, with select.select().

select() takes a list of sockets and returns those that are ready, so a single loop can wait on the
listening socket (ready = a client is waiting to be accepted) and on every client (ready = data, or
end-of-file, to read) and only ever call accept() or recv() when it will not block. Run it with
``python examples/select_server.py`` (options: ``--host``, ``--port``, where 0 picks a free port, and
``--max-clients N`` to stop accepting after N clients and exit once they are all served), then start
several ``python examples/tcp_echo_client.py "hello"`` at the same time. Stop it with Ctrl-C.
"""

import argparse
import select

import rsock as socket  # the only change from the stdlib version: `import socket`


def main():
    parser = argparse.ArgumentParser(description="TCP echo server, one thread and select()")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=65432, help="port to listen on, 0 for any (default: %(default)s)")
    parser.add_argument("--max-clients", type=int, metavar="N", help="exit after serving N clients")
    args = parser.parse_args()

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((args.host, args.port))
        server.listen()
        host, port = server.getsockname()
        print(f"listening on {host}:{port}", flush=True)

        watched = [server]  # every socket we wait on; select() accepts anything with a fileno()
        addresses = {}  # client socket -> its address
        accepted = 0
        while watched:
            readable, _, _ = select.select(watched, [], [])
            for sock in readable:
                if sock is server:
                    conn, addr = server.accept()
                    print(f"connected by {addr[0]}:{addr[1]}", flush=True)
                    watched.append(conn)
                    addresses[conn] = addr
                    accepted += 1
                    if accepted == args.max_clients:
                        watched.remove(server)  # enough clients: accept no more, finish these ones
                    continue
                data = sock.recv(1024)
                if data:
                    # Echo at once. A fully non-blocking server would also select() for writability and
                    # queue what send() could not take; sendall() keeps this example short.
                    sock.sendall(data)
                else:  # the client closed its side
                    addr = addresses.pop(sock)
                    watched.remove(sock)
                    sock.close()
                    print(f"closed {addr[0]}:{addr[1]}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted, shutting down")
