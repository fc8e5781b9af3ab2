#!/usr/bin/env python3
"""User-space instructions per echo request of a streams server, counted by valgrind (callgrind).

    python benchmarks/instructions.py                          # rsock.aio, uvloop and asyncio streams
    python benchmarks/instructions.py --servers rsock-uvloop   # rsock.aio on uvloop's loop
    python benchmarks/instructions.py --servers rsock --top 40 # and where rsock's go, by function
    python benchmarks/instructions.py --servers tcpserver      # rsock.TcpServer(on_message=echo)

On this shared VM the CPU time of a server moves by ±10% between runs, more than most changes to rsock's
own code are worth; an instruction count does not move with the machine's state. Each server (the
`start_server` echo of benchmarks/aio_servers.py: read, write, drain; for `tcpserver`, the `TcpServer`
echo of benchmarks/rsock_servers.py: a handler returning what it is given) runs under callgrind twice, serving
--requests LOW and then HIGH 1 KiB requests over 10 connections in lockstep from a client outside valgrind;
the difference divided by HIGH - LOW is the cost of one request without the start-up. Kernel work is not
counted (the syscalls are the same for every server here: one recv and one send per request), and
callgrind slows a server about 50 times, so each loop iteration finds all 10 connections ready: the loop's
own cost per request is lower than at full speed. Use it to compare builds and servers, not as a time.

Needs valgrind (Debian: `apt-get install valgrind`). Loopback only; every process is bounded in time.
"""

import argparse
import collections
import os
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import time

from chat_bench import free_port  # this folder's

SERVER = r"""
import asyncio, sys
impl, port = sys.argv[1], int(sys.argv[2])
if impl == "tcpserver":
    import threading, rsock
    closed = threading.Semaphore(0)
    server = rsock.TcpServer(("127.0.0.1", port), lambda conn, data: data,
                             on_disconnect=lambda conn, exc: closed.release())
    server.start()
    print("ready", flush=True)
    for _ in range(10):
        closed.acquire()
    server.stop()
    sys.exit()
if impl.startswith("rsock"):
    import rsock.aio as streams
else:
    streams = asyncio

async def main():
    done = asyncio.Event()
    closed = 0

    async def handle(reader, writer):
        nonlocal closed
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            closed += 1
            if closed == 10:
                done.set()

    server = await streams.start_server(handle, "127.0.0.1", port)
    print("ready", flush=True)
    await done.wait()
    server.close()

if impl.endswith("uvloop"):
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""

CONNECTIONS = 10
MESSAGE = b"x" * 1024
TIMEOUT = 600  # seconds for one server under callgrind


def drive(port, total):
    """CONNECTIONS connections, each sending MESSAGE and waiting for its echo, `total` requests in all."""
    sel = selectors.DefaultSelector()
    conns = []
    for _ in range(CONNECTIONS):
        conn = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        conn.setblocking(False)
        conns.append(conn)
        sel.register(conn, selectors.EVENT_READ, [0])
    sent = done = 0
    for conn in conns:
        conn.sendall(MESSAGE)
        sent += 1
    deadline = time.monotonic() + TIMEOUT
    while done < total:
        if time.monotonic() > deadline:
            raise SystemExit("the server stopped answering")
        for key, _ in sel.select(timeout=1.0):
            pending = key.data
            pending[0] += len(key.fileobj.recv(65536))
            while pending[0] >= len(MESSAGE):
                pending[0] -= len(MESSAGE)
                done += 1
                if sent < total:
                    key.fileobj.sendall(MESSAGE)
                    sent += 1
    for conn in conns:
        conn.close()


def count(python, impl, requests, out):
    """Runs the server under callgrind for `requests` requests; returns its total instructions."""
    port = free_port()
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", python, "-c", SERVER, impl, str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        if server.stdout.readline().strip() != "ready":
            raise SystemExit(f"{impl}: the server did not start")
        drive(port, requests)
        server.wait(timeout=TIMEOUT)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    with open(out) as data:
        for line in data:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise SystemExit(f"{impl}: no totals in {out}")


def by_function(path):
    """Instructions per function (self cost) in a callgrind output file."""
    report = subprocess.run(["callgrind_annotate", "--threshold=100", path], capture_output=True, text=True).stdout
    costs = collections.Counter()
    for line in report.splitlines():
        match = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S.*)", line)
        if match and "PROGRAM TOTALS" not in line:
            name = re.sub(r" \[.*\]$", "", match[2]).split(":", 1)[-1]
            costs[name] += int(match[1].replace(",", ""))
    return costs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--servers",
        default="rsock,uvloop,asyncio",
        help="comma list of rsock, rsock-uvloop, uvloop, asyncio, tcpserver",
    )
    parser.add_argument("--requests", default="2000,6000", help="LOW,HIGH (default: %(default)s)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to run servers with")
    parser.add_argument("--top", type=int, default=0, help="also list the N functions that cost most per request")
    args = parser.parse_args()
    low, high = (int(n) for n in args.requests.split(","))
    with tempfile.TemporaryDirectory() as scratch:
        for impl in args.servers.split(","):
            outs = [os.path.join(scratch, f"{impl}.{n}.out") for n in (low, high)]
            totals = [count(args.python, impl, n, out) for n, out in zip((low, high), outs, strict=True)]
            print(f"{impl:8s} {(totals[1] - totals[0]) / (high - low):8,.0f} instructions per request", flush=True)
            if args.top:
                before, after = by_function(outs[0]), by_function(outs[1])
                extra = {name: (after[name] - before[name]) / (high - low) for name in set(before) | set(after)}
                for name, cost in sorted(extra.items(), key=lambda item: -item[1])[: args.top]:
                    print(f"    {cost:7,.0f}  {name[:110]}")


if __name__ == "__main__":
    main()
