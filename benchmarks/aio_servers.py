"""rsock.aio servers in the roles the peer harness (../shared/bench) measures, written exactly as the
harness's asyncio peers are, with rsock.aio in place of asyncio's stream functions.

    python benchmarks/aio_servers.py tcp-streams --port P [--loop asyncio|uvloop]

Serves until killed or for --max-seconds.
"""

import argparse
import asyncio
import os
import threading

from rsock import aio

RECV_SIZE = 65536


async def streams_main(host, port):
    async def handle(reader, writer):
        try:
            while True:
                data = await reader.read(RECV_SIZE)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await aio.start_server(handle, host, port, backlog=1024, reuse_address=True)
    async with server:
        await asyncio.get_running_loop().create_future()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["tcp-streams"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--max-seconds", type=float, default=1800)
    args = parser.parse_args()
    timer = threading.Timer(args.max_seconds, os._exit, (0,))
    timer.daemon = True
    timer.start()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(streams_main(args.host, args.port))
    else:
        asyncio.run(streams_main(args.host, args.port))


if __name__ == "__main__":
    main()
