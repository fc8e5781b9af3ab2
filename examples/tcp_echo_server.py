"""A TCP echo server: the socket tutorial's first program, with rsock in place of the socket module.

It binds a listening socket to HOST:PORT, accepts one client at a time and sends back every byte it
receives until the client closes its side. Run it with ``python examples/tcp_echo_server.py`` (options:
``--host``, ``--port``, where 0 picks a free port, and ``--max-clients N`` to exit after N clients), then
talk to it with ``python examples/tcp_echo_client.py "hello"``. Stop it with Ctrl-C.
"""

import argparse

import rsock as socket  # the only change from the stdlib version: `import socket`


def main():
    parser = argparse.ArgumentParser(description="TCP echo server")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=65432, help="port to listen on, 0 for any (default: %(default)s)")
    parser.add_argument("--max-clients", type=int, metavar="N", help="exit after serving N clients")
    args = parser.parse_args()

    # AF_INET: IPv4 addresses, given as (host, port). SOCK_STREAM: TCP.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        # Let a restarted server bind again at once, even while old connections sit in TIME_WAIT.
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((args.host, args.port))
        server.listen()
        host, port = server.getsockname()  # the real port, even when we asked for port 0
        print(f"listening on {host}:{port}", flush=True)

        served = 0
        while args.max_clients is None or served < args.max_clients:
            # accept() blocks until a client connects, then returns a new socket for that client.
            conn, addr = server.accept()
            with conn:
                print(f"connected by {addr[0]}:{addr[1]}", flush=True)
                while True:
                    data = conn.recv(1024)
                    if not data:  # b"" means the client closed its side: we are done with it
                        break
                    conn.sendall(data)  # send() may send only part of the data; sendall() sends it all
            served += 1
            print(f"closed {addr[0]}:{addr[1]}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted, shutting down")
