"""A TCP echo server that serves many clients at once by giving each one its own thread.

The main thread only accepts connections; each accepted client is handed to a new thread that echoes
its data back, so a slow client does not hold up the others. Run it with
``python examples/threaded_server.py`` (options: ``--host``, ``--port``, where 0 picks a free port, and
``--max-clients N`` to stop accepting after N clients and exit once they are all served), then start
several ``python examples/tcp_echo_client.py "hello"`` at the same time. Stop it with Ctrl-C.
"""

import argparse
import logging
import sys
import threading

import rsock as socket  # the only change from the stdlib version: `import socket`


def handle_client(conn, addr):
    """Echoes everything one client sends until it closes its side; runs in its own thread."""
    with conn:
        while True:
            data = conn.recv(1024)
            if not data:
                break
            conn.sendall(data)
    logging.info("closed %s:%s", *addr)


def main():
    parser = argparse.ArgumentParser(description="TCP echo server, one thread per client")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=65432, help="port to listen on, 0 for any (default: %(default)s)")
    parser.add_argument("--max-clients", type=int, metavar="N", help="exit after serving N clients")
    args = parser.parse_args()
    # Threads that print() at the same time can interleave their output mid-line; logging writes each
    # message whole. The thread name shows which thread served which client.
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="[%(threadName)s] %(message)s")

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((args.host, args.port))
        server.listen()
        host, port = server.getsockname()
        print(f"listening on {host}:{port}", flush=True)

        threads = []
        while args.max_clients is None or len(threads) < args.max_clients:
            conn, addr = server.accept()
            logging.info("connected by %s:%s", *addr)
            # daemon=True: on Ctrl-C the server exits without waiting for clients still connected.
            thread = threading.Thread(target=handle_client, args=(conn, addr), daemon=True)
            thread.start()
            threads.append(thread)

    # --max-clients reached: stop listening (done above, by leaving the `with`), finish the clients served.
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted, shutting down")
