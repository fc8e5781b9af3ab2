"""sendmsg(), recvmsg(), recvmsg_into() and the fd-passing helpers built on them, over both modules."""

import array
import mmap
import os
import subprocess
import sys

import pytest


def test_send_fds_passes_working_descriptors(sockmod):
    a, b = sockmod.socketpair()
    read_end, write_end = os.pipe()
    with a, b:
        assert sockmod.send_fds(a, [b"fd"], [write_end]) == 2
        msg, fds, flags, address = sockmod.recv_fds(b, 16, 4)
        assert (msg, len(fds), flags, address) == (b"fd", 1, 0, None)
        os.write(fds[0], b"through the passed fd")
        assert os.read(read_end, 64) == b"through the passed fd"
        for fd in (*fds, read_end, write_end):
            os.close(fd)


def test_sendmsg_gathers_buffers_and_recvmsg_into_scatters(sockmod):
    a, b = sockmod.socketpair()
    with a, b:
        assert a.sendmsg([b"abc", bytearray(b"de"), memoryview(b"fgh")]) == 8
        first, second = bytearray(3), bytearray(10)
        nbytes, ancdata, flags, address = b.recvmsg_into([first, second])
        assert (nbytes, ancdata, flags, address) == (8, [], 0, None)
        assert (bytes(first), bytes(second[:5])) == (b"abc", b"defgh")


def test_recvmsg_into_buffers_that_overlap_are_filled_in_turn(sockmod):
    """Views of one bytearray may be given together; each is filled in order, later ones over earlier ones."""
    storage = bytearray(12)
    a, b = sockmod.socketpair()
    with a, b:
        a.sendall(b"abcdefghijklmnop")
        nbytes, _, _, _ = b.recvmsg_into([storage, memoryview(storage)[2:6], memoryview(storage)[4:]])
    assert (nbytes, bytes(storage)) == (16, b"abmnopghijkl")


def test_recvmsg_reports_truncated_control_data(sockmod):
    a, b = sockmod.socketpair()
    fds = [os.dup(0), os.dup(0)]
    with a, b:
        a.sendmsg([b"x"], [(sockmod.SOL_SOCKET, sockmod.SCM_RIGHTS, array.array("i", fds))])
        msg, ancdata, flags, _ = b.recvmsg(16, sockmod.CMSG_LEN(array.array("i").itemsize))
        assert msg == b"x"
        assert flags & sockmod.MSG_CTRUNC
        for _, _, data in ancdata:
            for fd in array.array("i", data[: len(data) - len(data) % 4]):
                os.close(fd)
    for fd in fds:
        os.close(fd)


def test_sendmsg_to_an_address_on_udp(sockmod):
    with (
        sockmod.socket(sockmod.AF_INET, sockmod.SOCK_DGRAM) as server,
        sockmod.socket(sockmod.AF_INET, sockmod.SOCK_DGRAM) as client,
    ):
        server.bind(("127.0.0.1", 0))
        client.sendmsg([b"to ", b"you"], [], 0, server.getsockname())
        server.settimeout(5)
        data, ancdata, flags, address = server.recvmsg(64)
        assert (data, ancdata, flags) == (b"to you", [], 0)
        assert address[1] == client.getsockname()[1]


class Triple:
    """A sequence by the protocol only (__len__ and __getitem__), not a registered collections.abc.Sequence."""

    def __init__(self, *items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


@pytest.mark.parametrize("shape", [tuple, list, lambda items: Triple(*items)])
def test_sendmsg_takes_any_sequence_of_three_as_an_ancillary_item(sockmod, shape):
    a, b = sockmod.socketpair()
    passed = os.dup(0)
    with a, b:
        item = shape([sockmod.SOL_SOCKET, sockmod.SCM_RIGHTS, array.array("i", [passed])])
        assert a.sendmsg([b"x"], [item]) == 1
        msg, fds, flags, _ = sockmod.recv_fds(b, 16, 1)
    os.close(passed)
    for fd in fds:
        os.close(fd)
    assert (msg, len(fds), flags) == (b"x", 1, 0)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ([1, 1], "must be sequence of length 3, not 2"),
        ((1, 1, b"", 0), "must be sequence of length 3, not 4"),
        (5, "must be 3-item sequence, not int"),
        (None, "must be 3-item sequence, not None"),
        (b"abc", "must be 3-item sequence, not bytes"),
        (iter([1, 1, b""]), "must be 3-item sequence, not list_iterator"),
    ],
)
def test_sendmsg_ancillary_item_of_another_shape_is_a_type_error(sockmod, item, message):
    a, b = sockmod.socketpair()
    with a, b, pytest.raises(TypeError) as raised:
        a.sendmsg([b"x"], [item])
    assert str(raised.value) == f"[sendmsg() ancillary data items]() argument {message}"


@pytest.mark.parametrize(
    ("call", "exc_type"),
    [
        (lambda s: s.sendmsg(5), TypeError),
        (lambda s: s.sendmsg(["text"]), TypeError),
        (lambda s: s.sendmsg([b"x"], [(1, 2)]), TypeError),
        (lambda s: s.recvmsg(-1), ValueError),
        (lambda s: s.recvmsg(1, -1), ValueError),
        (lambda s: s.recvmsg_into([b"read-only"]), TypeError),
    ],
)
def test_bad_arguments_raise_what_the_stdlib_raises(sockmod, call, exc_type):
    a, b = sockmod.socketpair()
    with a, b, pytest.raises(exc_type):
        call(a)


@pytest.mark.parametrize(
    ("args", "exc_type", "message"),
    [
        ((1.0, [], 2**31), OverflowError, "signed integer is greater than maximum"),
        (([1.0], [], "1"), TypeError, "'str' object cannot be interpreted as an integer"),
        ((1.0, [], 0, ("127.0.0.1", 70000)), OverflowError, "sendmsg(): port must be 0-65535."),
        (([b"x"], [(2**31, 1, b"")], 0, ("127.0.0.1", 70000)), OverflowError, "sendmsg(): port must be 0-65535."),
        (([1.0], [(2**31, 1, b"")], 0), TypeError, "a bytes-like object is required, not 'float'"),
    ],
    ids=[
        "flags-before-buffers",
        "flags-before-buffer-items",
        "address-before-buffers",
        "address-before-ancdata",
        "buffers-before-ancdata",
    ],
)
def test_sendmsg_checks_its_arguments_in_the_stdlibs_order(sockmod, args, exc_type, message):
    """With two bad arguments, the error is the one CPython reports: it checks flags, then the address, then the
    buffers, then the ancillary data (rsock used to check the buffers first)."""
    with sockmod.socket(sockmod.AF_INET, sockmod.SOCK_DGRAM) as sock, pytest.raises(exc_type) as raised:
        sock.sendmsg(*args)
    assert str(raised.value) == message


class RefusesToIterate:
    def __iter__(self):
        raise ValueError("no iterating me")


@pytest.mark.parametrize(
    ("call", "exc_type", "message"),
    [
        (lambda a: a.sendmsg(RefusesToIterate()), ValueError, "no iterating me"),
        (lambda a: a.sendmsg([b"x"], RefusesToIterate()), ValueError, "no iterating me"),
        (lambda a: a.recvmsg_into(RefusesToIterate()), ValueError, "no iterating me"),
        (
            lambda a: a.sendmsg(memoryview(b"abcdef").cast("B", (2, 3))),
            NotImplementedError,
            "multi-dimensional sub-views are not implemented",
        ),
        (lambda a: a.sendmsg(5), TypeError, "sendmsg() argument 1 must be an iterable"),
        (lambda a: a.sendmsg([b"x"], 5), TypeError, "sendmsg() argument 2 must be an iterable"),
        (lambda a: a.recvmsg_into(5), TypeError, "recvmsg_into() argument 1 must be an iterable"),
    ],
    ids=["sendmsg-buffers", "sendmsg-ancdata", "recvmsg_into", "2-d-memoryview", "int", "int-ancdata", "int-into"],
)
def test_an_error_from_iterating_an_argument_passes_through(sockmod, call, exc_type, message):
    """Only an object that cannot be iterated at all becomes "argument N must be an iterable" (a TypeError from
    iter(), as PySequence_Fast rewrites it); any other error its __iter__ raises is the caller's to see."""
    a, b = sockmod.socketpair()
    with a, b, pytest.raises(exc_type) as raised:
        call(a)
    assert str(raised.value) == message


@pytest.mark.parametrize("buffers", [[b"read-only"], [bytearray(4), "text"], [memoryview(b"ro")]], ids=repr)
def test_recvmsg_into_refuses_a_buffer_it_cannot_write_with_the_stdlib_message(sockmod, buffers):
    a, b = sockmod.socketpair()
    with a, b, pytest.raises(TypeError) as raised:
        a.recvmsg_into(buffers)
    assert str(raised.value) == "recvmsg_into() argument 1 must be an iterable of single-segment read-write buffers"


@pytest.mark.parametrize("ancbufsize", [-1, 2**31, 2**40])
@pytest.mark.parametrize("method", ["recvmsg", "recvmsg_into"])
def test_ancillary_buffer_length_beyond_socklen_t_is_a_value_error(sockmod, method, ancbufsize):
    a, b = sockmod.socketpair()
    b.setblocking(False)
    first = 1 if method == "recvmsg" else [bytearray(1)]
    with a, b, pytest.raises(ValueError, match=r"^invalid ancillary data buffer length$"):
        getattr(b, method)(first, ancbufsize)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.recvmsg(-1, 0, "flags"),
        lambda s: s.recvmsg(1, -1, "flags"),
        lambda s: s.recvmsg_into(5, "ancbufsize"),
    ],
)
def test_recvmsg_converts_every_argument_before_checking_any(sockmod, call):
    a, b = sockmod.socketpair()
    with a, b, pytest.raises(TypeError, match="cannot be interpreted as an integer"):
        call(b)


# An address-space limit below the largest ancillary buffer allowed (2**31 - 1 bytes) makes it unobtainable.
UNOBTAINABLE_ANCILLARY_BUFFER = """
import resource, sys
sockmod = __import__(sys.argv[1])
a, b = sockmod.socketpair()
b.setblocking(False)
with open("/proc/self/statm") as statm:
    in_use = int(statm.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (in_use + (1 << 30), resource.RLIM_INFINITY))
try:
    b.recvmsg(1, 2**31 - 1)
except MemoryError:
    print("MemoryError")
"""


def test_ancillary_buffer_that_cannot_be_allocated_is_a_memory_error(sockmod):
    result = subprocess.run(
        [sys.executable, "-c", UNOBTAINABLE_ANCILLARY_BUFFER, sockmod.__name__],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "MemoryError\n", "")


def test_an_ancillary_item_too_large_for_a_c_int_is_refused_before_it_is_copied(sockmod):
    """An anonymous mapping of 2 GiB costs no memory until touched: nothing may copy it."""
    huge = mmap.mmap(-1, 2**31)
    a, b = sockmod.socketpair()
    with a, b, huge, pytest.raises(OSError) as raised:
        a.sendmsg([b"x"], [(sockmod.SOL_SOCKET, sockmod.SCM_RIGHTS, huge)])
    assert str(raised.value) == "ancillary data item too large"


@pytest.mark.parametrize("iv_size", [2**31 - 8, 2**32 - 1, 2**32 + 8])
def test_sendmsg_afalg_refuses_an_iv_too_long_for_a_control_message_before_copying_it(iv_size):
    """A 4 GiB IV wrapped the control buffer's size computed from it: a heap overflow that killed the process with
    SIGSEGV. An anonymous mapping costs no memory until touched, so nothing may copy it. (No AF_ALG on this kernel:
    a UDP socket's descriptor taken as AF_ALG, which the socket trusts as the stdlib's does.)"""
    import rsock

    udp = rsock.socket(rsock.AF_INET, rsock.SOCK_DGRAM)
    alg = rsock.socket(rsock.AF_ALG, rsock.SOCK_SEQPACKET, 0, fileno=udp.detach())
    iv = mmap.mmap(-1, iv_size)
    with alg, iv:
        # The arguments' other errors first, as the stdlib checks them before the IV's size.
        with pytest.raises(TypeError, match=r"^Invalid or missing argument 'op'$"):
            alg.sendmsg_afalg([b"x"], iv=iv)
        with pytest.raises(TypeError, match=r"^assoclen must be positive$"):
            alg.sendmsg_afalg([b"x"], op=rsock.ALG_OP_ENCRYPT, iv=iv, assoclen=-1)
        with pytest.raises(OverflowError, match=r"^iv is too large$"):
            alg.sendmsg_afalg([b"x"], op=rsock.ALG_OP_ENCRYPT, iv=iv)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"op": 1}, {"op": -1}, {"op": "x"}, {"op": 1, "iv": "not bytes"}, {"op": 1, "assoclen": -1}],
    ids=repr,
)
def test_sendmsg_afalg_on_a_socket_of_another_family_is_refused_first(sockmod, kwargs):
    """The method exists on every socket, and on one that is not AF_ALG it raises before it reads its arguments.
    (This machine's kernel has no AF_ALG, so the control messages it sends are checked in ancillary.rs's tests.)"""
    a, b = sockmod.socketpair()
    with a, b:
        with pytest.raises(OSError) as refused:
            a.sendmsg_afalg([b"data"], **kwargs)
        assert (type(refused.value), str(refused.value)) == (OSError, "algset is only supported for AF_ALG")
