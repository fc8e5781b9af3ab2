"""The tutorial's first steps, over both modules."""


def test_tcp_round_trip(sockmod):
    with sockmod.socket(sockmod.AF_INET, sockmod.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with sockmod.create_connection(server.getsockname()) as client:
            conn, addr = server.accept()
            with conn:
                client.sendall(b"hello")
                assert conn.recv(1024) == b"hello"
                assert addr == client.getsockname()


def test_udp_round_trip(sockmod):
    with (
        sockmod.socket(sockmod.AF_INET, sockmod.SOCK_DGRAM) as server,
        sockmod.socket(sockmod.AF_INET, sockmod.SOCK_DGRAM) as client,
    ):
        server.bind(("127.0.0.1", 0))
        client.sendto(b"ping", server.getsockname())
        data, addr = server.recvfrom(1024)
        assert (data, addr) == (b"ping", ("127.0.0.1", client.getsockname()[1]))
