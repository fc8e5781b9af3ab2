"""What servers, clients and connections show in a notebook, and the tqdm bar of sendfile(progress=True)."""

import re
import threading

import rsock


def test_tcp_server_html_shows_address_state_and_counters():
    seen = threading.Event()
    htmls = []

    def on_message(conn, data):
        htmls.append(conn._repr_html_())
        seen.set()
        return data

    with rsock.TcpServer(on_message=on_message) as server, rsock.TcpClient(server.address, timeout=5) as client:
        assert client.request(b"<hi>") == b"<hi>"
        assert seen.wait(5)
        html = server._repr_html_()
        port = server.address[1]
        assert f"TcpServer 127.0.0.1:{port}" in html
        assert re.search(r"<th[^>]*>messages</th><td>1</td>", html)
        assert re.search(r"<th[^>]*>state</th><td>running</td>", html)
        assert "Connection 1" in htmls[0] and "open" in htmls[0]
        assert f"TcpClient 127.0.0.1:{port}" in client._repr_html_()
    assert re.search(r"<th[^>]*>state</th><td>stopped</td>", server._repr_html_())


def test_udp_server_html_counts_datagrams():
    with rsock.UdpServer(on_datagram=lambda data, addr: data) as server, rsock.UdpClient() as client:
        client.request(b"x", server.address, timeout=2)
        assert re.search(r"<th[^>]*>datagrams in</th><td>1</td>", server._repr_html_())


def test_sendfile_progress_true_draws_a_tqdm_bar(tmp_path, capsys):
    path = tmp_path / "payload.bin"
    path.write_bytes(b"z" * 3_000_000)
    received = []
    with rsock.TcpServer(on_message=lambda conn, data: received.append(len(data))) as server:
        with rsock.TcpClient(server.address, timeout=5) as client:
            assert client.sendfile(path, progress=True) == 3_000_000
    assert "payload.bin" in capsys.readouterr().err
