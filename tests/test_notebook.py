"""Runs examples/tutorial.ipynb top to bottom on a real IPython kernel and checks what its cells show.

The kernel is ipykernel started on the interpreter running pytest: the tests install a "python3" kernel
spec pointing at ``sys.executable`` into a temporary directory and put it first on ``JUPYTER_PATH``, so
neither a user's own "python3" spec nor whatever ``python`` is on PATH is used. Cells are found by the
tags they carry in the notebook (``tcp-round-trip``, ``stats``, ``cleanup``...).
"""

import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import install as install_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_core.paths import jupyter_runtime_dir
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell
from traitlets.config import Config

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "tutorial.ipynb"
CELL_TIMEOUT = 60  # seconds, for each cell and for the kernel to start

# Added to the notebook for the test only: every warning the cells raise (a ResourceWarning from rsock, say)
# shows up as stderr output, which the test refuses.
SHOW_WARNINGS = "import warnings\nwarnings.simplefilter('always')"
# Added last: collects what the cells dropped (so an unclosed socket warns now) and names the interpreter.
FINAL_CHECK = "import gc, sys\ngc.collect()\nprint('kernel python:', sys.executable)"


@pytest.fixture
def python3_kernel(tmp_path, monkeypatch):
    """Makes the "python3" kernel spec start ipykernel on this interpreter, with its IPython profile and
    Jupyter runtime files in `tmp_path`; returns the kernel name."""
    prefix = tmp_path / "prefix"
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    (tmp_path / "runtime").mkdir()  # where the kernel's channels are (see notebook_client)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    install_kernel_spec(prefix=str(prefix), kernel_name="python3")
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] == sys.executable, spec.argv
    return "python3"


def read_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def notebook_client(nb, kernel_name):
    # The kernel's channels are Unix sockets in the runtime directory. Over TCP, jupyter_client picks free ports by
    # binding port 0 and closing the socket, and another process binding port 0 before the kernel binds can take
    # one: the kernel then dies with EADDRINUSE (seen when other suites ran on the machine).
    config = Config()
    config.KernelManager.transport = "ipc"
    # An absolute path: the kernel runs in the notebook's directory.
    config.KernelManager.ip = str(Path(jupyter_runtime_dir()).resolve() / "kernel-ipc")
    return NotebookClient(
        nb,
        config=config,
        kernel_name=kernel_name,
        timeout=CELL_TIMEOUT,
        startup_timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},  # the kernel's working directory
    )


def tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def cell_tagged(nb, tag):
    (cell,) = [cell for cell in nb.cells if tag in tags(cell)]
    return cell


def stdout(cell):
    return "".join(out["text"] for out in cell.outputs if out["output_type"] == "stream" and out["name"] == "stdout")


class TableRows(HTMLParser):
    """The text of each cell of each row of the HTML tables fed to it."""

    def __init__(self):
        super().__init__()
        self.rows = []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("th", "td"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def stats_tables(cell):
    """{row name: {column: int}} from the HTML tables a cell displayed: a pandas DataFrame's or the
    notebook's own fallback table, both a header row then one row per server, named in its first cell."""
    tables = {}
    for out in cell.outputs:
        html = out.get("data", {}).get("text/html")
        if out["output_type"] not in ("display_data", "execute_result") or html is None:
            continue
        parser = TableRows()
        parser.feed(html)
        header, *rows = parser.rows
        for name, *values in rows:
            tables[name] = dict(zip(header[1:], map(int, values), strict=True))
    return tables


def test_notebook_is_committed_clean():
    nb = read_notebook()
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {cell.id} has stored outputs"
            assert cell.execution_count is None, f"cell {cell.id} has an execution count"


def test_notebook_runs(python3_kernel):
    nb = read_notebook()
    nb.cells.insert(0, new_code_cell(SHOW_WARNINGS))
    nb.cells.append(new_code_cell(FINAL_CHECK))
    notebook_client(nb, python3_kernel).execute()  # raises CellExecutionError if a cell fails

    for cell in nb.cells:
        if cell.cell_type == "code":
            unexpected = [out for out in cell.outputs if out["output_type"] == "stream" and out["name"] == "stderr"]
            assert not unexpected, f"cell {cell.id} wrote to stderr:\n{cell.source}\n{unexpected}"
    assert stdout(nb.cells[-1]) == f"kernel python: {sys.executable}\n"

    # The drop-in: the tutorial's TCP echo and a UDP sendto/recvfrom, both through `import rsock as socket`.
    assert "client: received b'Hello, world'\n" in stdout(cell_tagged(nb, "tcp-round-trip"))
    assert stdout(cell_tagged(nb, "udp-round-trip")) == "client: received b'HELLO, UDP'\n"

    # rsock.TcpServer started in one cell, a blocking TcpClient in the next, then an asyncio client.
    assert "running: True" in stdout(cell_tagged(nb, "tcp-server"))
    assert stdout(cell_tagged(nb, "tcp-client")) == (
        "b'hello' -> b'HELLO'\nb'rust' -> b'RUST'\nb'notebook' -> b'NOTEBOOK'\n"
    )
    assert stdout(cell_tagged(nb, "aio-client")) == "b'HELLO FROM ASYNCIO'\n"

    # rsock.aio.start_server left serving on the notebook's loop, open_connection in the next cell.
    assert "echo server on 127.0.0.1:" in stdout(cell_tagged(nb, "aio-start-server"))
    assert stdout(cell_tagged(nb, "aio-open-connection")) == "echoed: b'Hello, streams\\n'\n"
    assert stdout(cell_tagged(nb, "aio-tcp-server")) == "b'desserts'\n"

    assert stdout(cell_tagged(nb, "udp-server")) == "b'pong: ping 0'\nb'pong: ping 1'\nb'pong: ping 2'\n"

    stats = stats_tables(cell_tagged(nb, "stats"))
    assert set(stats) == {"TcpServer", "UdpServer"}
    tcp, udp = stats["TcpServer"], stats["UdpServer"]
    # Two clients (TcpClient and rsock.aio.TcpClient), four requests, each reply as long as its request.
    assert tcp["accepted"] == 2
    assert tcp["messages"] == 4
    assert tcp["bytes_in"] == tcp["bytes_out"] > 0
    assert tcp["errors"] == 0
    assert udp["datagrams_in"] >= 3
    assert udp["datagrams_out"] == udp["datagrams_in"]
    assert udp["errors"] == 0

    assert stdout(cell_tagged(nb, "cleanup")) == "TcpServer running: False - UdpServer running: False\n"


def test_kernel_shuts_down_with_servers_running(python3_kernel):
    """Without the cleanup cell a TcpServer, a UdpServer and an asyncio server are still serving when the
    kernel is told to shut down: it must still exit by itself, not wait to be killed."""
    nb = read_notebook()
    nb.cells = [cell for cell in nb.cells if "cleanup" not in tags(cell)]
    client = notebook_client(nb, python3_kernel)
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        assert "running: True" in stdout(cell_tagged(nb, "tcp-server"))
        kernel_process = client.km.provisioner.process
        shutdown_wait = client.km.shutdown_wait_time
        started = time.monotonic()
    # Leaving setup_kernel() sends a shutdown request and waits up to half of shutdown_wait_time before
    # escalating to SIGTERM, then SIGKILL: exit status 0 means the kernel exited on its own.
    elapsed = time.monotonic() - started
    assert kernel_process.wait(timeout=CELL_TIMEOUT) == 0
    assert elapsed < shutdown_wait / 2
