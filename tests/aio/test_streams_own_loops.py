"""rsock.aio's streams next to asyncio's where a test runs event loops of its own (asyncio.Runner, one of each kind
by the `loop_factory` fixture): what happens as a loop closes, and what the garbage collector does to connections and
servers that were dropped. Each test runs over both stream implementations (`mod`: asyncio or rsock.aio)."""

import asyncio
import gc
import socket
import subprocess
import sys
import warnings

import pytest

from tests.aio.conftest import HOST, KIT_MODULES, TIMEOUT, bounded

stream_modules = pytest.mark.parametrize("mod", list(KIT_MODULES.values()), ids=list(KIT_MODULES))


@stream_modules
def test_a_writer_dropped_after_its_loop_closed_only_warns(loop_factory, mod):
    """asyncio's StreamWriter.__del__ closes nothing once the loop is closed (nothing could finish the close): it
    warns "loop is closed", and the socket is left to its own finalizer."""
    listener = socket.create_server((HOST, 0))
    # Recorded from the start: uvloop warns of its own transport left open as the loop closes (and hangs in close()
    # when that warning is an error, as this project's pytest settings make it).
    with warnings.catch_warnings(record=True) as caught, listener:
        warnings.simplefilter("always")
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            reader, writer = runner.run(bounded(mod.open_connection(*listener.getsockname())))
        caught.clear()
        del reader, writer
        gc.collect()
    assert "loop is closed" in [str(w.message) for w in caught if w.category is ResourceWarning]


@stream_modules
def test_a_server_collected_with_a_connection_left_open_reports_nothing(loop_factory, mod):
    """A server closed and dropped while a connection its handler never closed is left (its peer gone): the two are
    collected in one pass (the server is in a reference cycle with its handler's owner). rsock's connection, closed
    by the collector, used to call back into its Server after the collector had emptied it: an AttributeError for the
    loop's exception handler, and on uvloop one that escaped asyncio.Runner.run() (raised building the callback's
    repr)."""
    reported = []

    class App:
        def __init__(self):
            self.accepted = asyncio.Event()
            self.server = None

        def on_client(self, reader, writer):
            self.accepted.set()

    async def scenario():
        asyncio.get_running_loop().set_exception_handler(lambda _, context: reported.append(context))
        # Recorded from the start: from Python 3.13 the handler's dropped writer warns at once.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            app = App()
            app.server = await bounded(mod.start_server(app.on_client, HOST, 0))
            peer = socket.create_connection(app.server.sockets[0].getsockname())
            await bounded(app.accepted.wait())
            peer.close()
            app.server.close()
            del app
            # Until the connection is collected (it warns as it goes): once its end of file is read, nothing but
            # the collector holds it.
            async with asyncio.timeout(TIMEOUT):
                while not any("unclosed" in str(w.message) for w in caught):
                    await asyncio.sleep(0.005)
                    gc.collect()
            for _ in range(3):
                await asyncio.sleep(0)  # whatever the collection scheduled runs

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scenario())
    assert reported == []


# A fresh interpreter, where no asyncio exception has been raised through rsock yet.
ASYNCIO_GONE_BEFORE_THE_FIRST_INCOMPLETE_READ = """
import asyncio, socket, sys
from rsock import aio

async def main():
    listener = socket.create_server(("127.0.0.1", 0))
    reader, writer = await aio.open_connection(*listener.getsockname())
    conn, _ = listener.accept()
    conn.sendall(b"part")
    conn.close()
    sys.modules["asyncio"] = None  # as late in interpreter exit, when a transport left open is finalized
    try:
        await reader.readexactly(10)
    except asyncio.IncompleteReadError as exc:
        print("IncompleteReadError", exc.partial)
    finally:
        sys.modules["asyncio"] = asyncio
    writer.close()

asyncio.run(main())
"""


def test_asyncio_exceptions_are_raised_even_once_asyncio_cannot_be_imported():
    """rsock.aio imports the asyncio exceptions it raises while serving a loop, not at their first use: a first use
    as the interpreter exits (a pending read ended by its transport's finalization) found asyncio gone, and the
    failed import was a Rust panic."""
    result = subprocess.run(
        [sys.executable, "-c", ASYNCIO_GONE_BEFORE_THE_FIRST_INCOMPLETE_READ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.stdout, result.stderr) == ("IncompleteReadError b'part'\n", "")
