"""rsock's high-level servers in the roles the peer harness (../shared/bench) measures.

    python benchmarks/rsock_servers.py tcp-echo --port P [--host H] [--framing line]
    python benchmarks/rsock_servers.py udp-echo --port P [--host H]

Each serves until killed or for --max-seconds, so a forgotten process ends by itself.
"""

import argparse
import os
import threading

import rsock


def tcp_echo(args):
    server = rsock.TcpServer((args.host, args.port), lambda conn, data: data, framing=args.framing)
    server.serve_forever()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["tcp-echo"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--framing", default=None)
    parser.add_argument("--max-seconds", type=float, default=1800)
    args = parser.parse_args()
    threading.Timer(args.max_seconds, os._exit, (0,)).start()
    {"tcp-echo": tcp_echo}[args.role](args)


if __name__ == "__main__":
    main()
