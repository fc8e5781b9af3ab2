"""Soak: 1,000,000 requests and 100,000 connect/close cycles against one TcpServer, with the server's
resident memory and descriptors sampled after every round; once warmed up, neither may grow.

The server runs in this process, so rss_kib() and fd_count() measure the server; the clients run in
child processes (test_load.Clients): two keep 50 connections each busy with pipelined requests while a
third connects, makes one checked request and closes, over and over. The work is cut into rounds so
every sample is taken at the same point of the load: between rounds, once the server has closed the
cycled connections (only the 100 long-lived ones are left open).
"""

import gc
import time

import rsock
from tests.stress.conftest import fd_count, rss_kib, scale
from tests.stress.test_load import Clients, echo, figure, wait_until

ROUNDS = scale(10, 20)
# The first 20% of the rounds are warm-up: the allocator's arenas, tokio's buffers and the interpreter's
# free lists grow to the size the load needs, which is not a leak. Growth is measured from there on.
WARM_UP_ROUNDS = ROUNDS // 5
MAX_RSS_GROWTH = 0.05
PERSISTENT = 100  # long-lived connections, half in each of the two request-making children
WINDOW = 8  # requests in flight on each long-lived connection


def test_soak_memory_and_descriptors_stay_flat(no_leaks):
    requests, cycles = scale(50_000, 1_000_000), scale(5_000, 100_000)
    requests_per_child_round = requests // ROUNDS // 2
    cycles_per_round = cycles // ROUNDS
    deadline = time.monotonic() + scale(60, 1800)
    rss_start = rss_kib()
    with rsock.TcpServer(("127.0.0.1", 0), echo, framing="line") as server:
        clients = Clients(server.address, 3, "line")
        try:
            fds_idle = fd_count()
            clients.run([f"open {PERSISTENT // 2}", f"open {PERSISTENT // 2}", "open 0"], 30)
            assert wait_until(lambda: server.stats["active"] == PERSISTENT, 10), server.stats
            fds_open = fd_count()

            samples = []  # (resident KiB, descriptors) of this process after each round
            started = time.perf_counter()
            for _ in range(ROUNDS):
                commands = [f"requests {requests_per_child_round} {WINDOW}"] * 2 + [f"cycles {cycles_per_round}"]
                clients.run(commands, max(1.0, deadline - time.monotonic()))
                # Closing is asynchronous on the io thread: give the cycled connections time to go. The
                # wait looks at descriptors, not at server.stats: the server is left alone until the end,
                # as one under serve_forever() is, because a call into rsock also does housekeeping (pyo3
                # frees the Python references dropped without the GIL) that would hide growth such a
                # server has.
                wait_until(lambda: fd_count() <= fds_open, 10)
                gc.collect()
                samples.append((rss_kib(), fd_count()))
            seconds = time.perf_counter() - started

            stats = server.stats
            expected = {
                "accepted": PERSISTENT + cycles,
                "active": PERSISTENT,
                "refused": 0,
                "messages": requests + cycles,
                "errors": 0,
            }
            assert {key: stats[key] for key in expected} == expected, stats
            assert stats["bytes_in"] == stats["bytes_out"], stats

            clients.run_all("close", 30)
            assert wait_until(lambda: server.stats["active"] == 0 and fd_count() <= fds_idle, 10), (
                f"after closing: {server.stats}, {fd_count()} descriptors ({fds_idle} before opening)"
            )
        finally:
            clients.close()

    rss_series = [rss for rss, _ in samples]
    fd_series = [fds for _, fds in samples]
    rss_warm, fds_warm = samples[WARM_UP_ROUNDS - 1]
    rss_growth = max(rss_series[WARM_UP_ROUNDS:]) / rss_warm - 1
    figure("soak requests verified", f"{requests} over {PERSISTENT} connections, and {cycles} connect/close cycles")
    figure("soak duration (s)", f"{seconds:.1f} ({(requests + cycles) / seconds:,.0f} requests and cycles per second)")
    figure("soak server RSS KiB (start, after warm-up, end)", f"{rss_start}, {rss_warm}, {rss_series[-1]}")
    figure("soak server RSS growth after warm-up", f"{rss_growth:+.2%} (max {max(rss_series[WARM_UP_ROUNDS:])} KiB)")
    figure("soak server RSS KiB per round", " ".join(map(str, rss_series)))
    figure("soak server descriptors per round", " ".join(map(str, fd_series)))
    assert rss_growth < MAX_RSS_GROWTH, f"resident memory grew {rss_growth:.1%} after warm-up: {rss_series} KiB"
    assert fd_series[WARM_UP_ROUNDS:] == [fds_warm] * (ROUNDS - WARM_UP_ROUNDS), (
        f"descriptors grew after warm-up: {fd_series}"
    )
    assert fds_warm == fds_open, f"{fds_warm} descriptors after warm-up, {fds_open} with only the long-lived open"
