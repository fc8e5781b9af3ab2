"""Run an unmodified Python script with rsock standing in for the stdlib ``socket`` module.

    python benchmarks/as_rsock.py SCRIPT [ARGS...]
    python benchmarks/as_rsock.py /work/shared/bench/peers.py tcp threads --port 9000

Why this is the faithful way to run "the same code" on rsock: the benchmark compares a server with
itself, once on the stdlib and once on rsock, so not one line of the server may differ. Editing the
script to say ``import rsock as socket`` would only reach that one file; the stdlib modules it builds
on (``socketserver``, ``selectors`` users, ``ssl``...) do their own ``import socket``. Putting rsock
into ``sys.modules["socket"]`` *before* the script and those modules are imported makes every
``import socket`` in the process - the script's and the stdlib's - resolve to rsock, which is exactly
what "drop-in" claims. rsock itself is imported first (it builds on the real stdlib module for its
constants and enums, which it keeps a private reference to); at interpreter start-up nothing else has
imported ``socket`` yet, so no stale reference to the stdlib module is left behind. The script then
runs as ``__main__`` in this same process (runpy, like ``python SCRIPT``), so a harness measuring this
pid measures the server itself, not a wrapper around it.

RSOCK_SNAPSHOT=DIR (set by run_dropin.py) imports rsock from DIR, a frozen copy of the package, so that
a long run measures one build even while the working tree is being rebuilt.
"""

import os
import runpy
import sys

_own_dir = sys.path[0]  # this file's directory, which `python SCRIPT` would not have on the path
if os.environ.get("RSOCK_SNAPSHOT"):
    sys.path.insert(0, os.environ["RSOCK_SNAPSHOT"])

import rsock  # noqa: E402

sys.modules["socket"] = rsock

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path[sys.path.index(_own_dir)] = os.path.dirname(os.path.abspath(script))  # as `python SCRIPT` does
    runpy.run_path(script, run_name="__main__")
