"""What servers, clients and connections show in a notebook, and the tqdm bar of sendfile(progress=True)."""

import asyncio
import gc
import re
import threading
import warnings

import rsock
import rsock.aio


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


class EchoServer(rsock.TcpServer):
    pass


class TimeServer(rsock.UdpServer):
    pass


class Client(rsock.TcpClient):
    pass


class Probe(rsock.UdpClient):
    pass


class AioClient(rsock.aio.TcpClient):
    pass


class AioServer(rsock.aio.TcpServer):
    pass


def test_a_subclass_repr_and_html_name_the_subclass():
    with EchoServer(on_message=lambda conn, data: data) as server, TimeServer(on_datagram=lambda d, a: d) as udp:
        with Client.connect(server.address, timeout=5) as client, Probe() as probe:
            port, udp_port = server.address[1], udp.address[1]
            assert re.fullmatch(rf"<EchoServer 127\.0\.0\.1:{port} running, \d connections, 0 messages>", repr(server))
            assert repr(udp) == f"<TimeServer 127.0.0.1:{udp_port} running, 0 datagrams>"
            assert repr(client) == f"<Client 127.0.0.1:{port} open>"
            assert repr(probe) == "<Probe open>"
            assert f"<b>EchoServer 127.0.0.1:{port}</b>" in server._repr_html_()
            assert f"<b>TimeServer 127.0.0.1:{udp_port}</b>" in udp._repr_html_()
            assert f"<b>Client 127.0.0.1:{port}</b>" in client._repr_html_()

            async def aio_reprs():
                async with await AioClient.connect(server.address) as aio_client:
                    async with AioServer(on_message=lambda conn, data: data) as aio_server:
                        return repr(aio_client), repr(aio_server)

            client_repr, server_repr = asyncio.run(aio_reprs())
            assert client_repr == f"<{__name__}.AioClient {server.address} open>"
            assert server_repr.startswith(f"<{__name__}.AioServer <TcpServer 127.0.0.1:")
    assert repr(client) == f"<Client 127.0.0.1:{port} closed>"


def test_the_base_classes_keep_their_names_and_a_collected_subclass_warns_as_its_base():
    with rsock.TcpServer(on_message=lambda conn, data: data) as server, rsock.UdpClient() as probe:
        assert repr(server).startswith("<TcpServer 127.0.0.1:")
        assert repr(probe) == "<UdpClient open>"
    # The finalizer has no class object at hand: its warning names the native class.
    server = EchoServer(on_message=lambda conn, data: data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del server
        gc.collect()
    assert [str(w.message).split(":")[0] for w in caught] == ["unclosed <TcpServer 127.0.0.1"]


def test_sendfile_progress_true_draws_a_tqdm_bar(tmp_path, capsys):
    path = tmp_path / "payload.bin"
    path.write_bytes(b"z" * 3_000_000)
    received = []
    with rsock.TcpServer(on_message=lambda conn, data: received.append(len(data))) as server:
        with rsock.TcpClient(server.address, timeout=5) as client:
            assert client.sendfile(path, progress=True) == 3_000_000
    assert "payload.bin" in capsys.readouterr().err
