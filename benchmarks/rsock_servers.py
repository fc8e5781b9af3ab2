"""rsock's high-level servers in the roles the peer harness (../shared/bench) measures.

    python benchmarks/rsock_servers.py tcp-echo --port P [--host H] [--framing line]
    python benchmarks/rsock_servers.py udp-echo --port P [--host H]   (the harness's UDP protocol)

Each serves until killed or for --max-seconds, so a forgotten process ends by itself.
"""

import argparse
import os
import threading

import rsock


class _Counter:
    """The harness's UDP protocol: 0x00 datagrams are counted and not answered, 0x01 ones are control
    messages (RESET, STATS), everything else is echoed."""

    __slots__ = ("nbytes", "packets")

    def __init__(self):
        self.packets = 0
        self.nbytes = 0

    def on_datagram(self, data, addr):
        if data:
            first = data[0]
            if first == 0:
                self.packets += 1
                self.nbytes += len(data)
                return None
            if first == 1:
                word = data[1:]
                if word == b"RESET":
                    self.packets = 0
                    self.nbytes = 0
                    return b"\x01OK"
                if word == b"STATS":
                    return b"\x01%d %d" % (self.packets, self.nbytes)
                return None
        return data


def udp_echo(args):
    server = rsock.UdpServer((args.host, args.port), _Counter().on_datagram)
    server.serve_forever()


def tcp_echo(args):
    server = rsock.TcpServer((args.host, args.port), lambda conn, data: data, framing=args.framing)
    server.serve_forever()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["tcp-echo", "udp-echo"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--framing", default=None)
    parser.add_argument("--max-seconds", type=float, default=1800)
    args = parser.parse_args()
    threading.Timer(args.max_seconds, os._exit, (0,)).start()
    {"tcp-echo": tcp_echo, "udp-echo": udp_echo}[args.role](args)


if __name__ == "__main__":
    main()
