"""Starting a sync server each way a user can, for tests of what starting checks."""

import threading

STARTS = ["start", "serve_forever", "with"]


def start(server, how):
    """Starts `server` by `how` (one of STARTS). A serve_forever() that does serve is stopped after 5 s, so that a
    test expecting the start to be refused fails rather than hangs."""
    if how == "with":
        with server:
            return
    bound = threading.Timer(5.0, server.stop)
    bound.start()
    try:
        getattr(server, how)()
    finally:
        bound.cancel()
