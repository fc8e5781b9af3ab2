"""A UDP echo server: receives datagrams with recvfrom() and sends each one back with sendto().

UDP has no connections: there is no listen() or accept(), each datagram arrives on its own together with
the address of its sender, and that address is where the reply goes. Run it with
``python examples/udp_echo_server.py`` (options: ``--host``, ``--port``, where 0 picks a free port, and
``--max-clients N`` to exit after echoing N datagrams), then send it a datagram with
``python examples/udp_echo_client.py "hello"``. Stop it with Ctrl-C.
"""

import argparse

import rsock as socket  # the only change from the stdlib version: `import socket`


def main():
    parser = argparse.ArgumentParser(description="UDP echo server")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=65432, help="port to listen on, 0 for any (default: %(default)s)")
    parser.add_argument("--max-clients", type=int, metavar="N", help="exit after echoing N datagrams")
    args = parser.parse_args()

    # SOCK_DGRAM: UDP. Binding is all a UDP server needs before it can receive.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind((args.host, args.port))
        host, port = server.getsockname()
        print(f"listening on {host}:{port}", flush=True)

        served = 0
        while args.max_clients is None or served < args.max_clients:
            # One recvfrom() returns one whole datagram (up to the buffer size) and who sent it.
            data, addr = server.recvfrom(65535)
            print(f"{len(data)} bytes from {addr[0]}:{addr[1]}", flush=True)
            server.sendto(data, addr)
            served += 1


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted, shutting down")
