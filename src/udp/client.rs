//! `UdpClient`: datagrams from Python with the checks the bare socket leaves to the caller: a
//! datagram too large to send is refused with a clear error, one too large for the receive buffer
//! is reported rather than silently cut, and `request()` retries until a reply comes, or fails at once
//! when the network reports that its datagram could not be delivered (see delivery_errors.rs).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyOSError, PyOverflowError, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use super::delivery_errors;
use crate::addr::{from_sockaddr, to_sockaddr};
use crate::args::{Opt, byte_count};
use crate::audit;
use crate::buffer::{BytesWriter, with_readable};
use crate::errors::{io_error, os_error, strerror};
use crate::resolver::endpoint;
use crate::server_common::parse_timeout_arg;
use crate::socket::Socket;
use crate::spin::ReplySpin;
use crate::turns::Turns;

/// The largest UDP payload: 65,535 minus the IPv4 and UDP headers (IPv6 allows 20 bytes more).
const MAX_DATAGRAM_V4: usize = 65_507;
const MAX_DATAGRAM_V6: usize = 65_527;
const DEFAULT_BUFSIZE: usize = 65_536;

/// A UDP socket for sending datagrams and receiving replies.
///
/// - `address`: where to bind, `(host, port)`; None binds on the first send.
/// - `family`: AF_INET or AF_INET6. Without it, the family is the address's (a name's first IPv4
///   address, as a server binds a name), or AF_INET; with it, the address is looked up in that family,
///   as a socket of the family binds it.
///
/// A receive polls for its datagram for a while before it sleeps, while replies come fast (see
/// spin.rs).
#[pyclass(name = "UdpClient", module = "rsock._rsock", subclass, frozen)]
pub struct UdpClient {
    sock: Socket,
    family: i32,
    /// The turn at request(), from its send to its reply, so that threads sharing the client each
    /// get their own reply (each request also discards what is queued when it starts).
    requesting: Turns,
    /// Whether a receive polls before it sleeps (see spin.rs).
    spin: ReplySpin,
}

impl UdpClient {
    fn max_datagram(&self) -> usize {
        if self.family == libc::AF_INET6 {
            MAX_DATAGRAM_V6
        } else {
            MAX_DATAGRAM_V4
        }
    }

    /// Sends `data` to `target`. A send that meets the report of an earlier datagram's failure is
    /// made again (a request's own refusal ends it, see `reported`). A datagram the kernel dropped on
    /// a full queue counts as sent, as it does for a socket that did not ask for reports (see
    /// delivery_errors.rs): lost as a datagram on the way can be, and resent by a request.
    fn send(
        &self,
        py: Python<'_>,
        data: &[u8],
        target: &socket2::SockAddr,
        asking: Option<&Asking<'_, '_>>,
    ) -> PyResult<usize> {
        if data.len() > self.max_datagram() {
            return Err(PyOSError::new_err((
                libc::EMSGSIZE,
                format!(
                    "datagram of {} bytes is larger than the largest UDP datagram ({} bytes)",
                    data.len(),
                    self.max_datagram()
                ),
            )));
        }
        match self.sock.send_to(py, data, target) {
            Err(err) if errno_of(py, &err) == Some(libc::ENOBUFS) => Ok(data.len()),
            Err(err) if self.reported(py, &err, asking)? => self.sock.send_to(py, data, target),
            sent => sent,
        }
    }

    /// Whether `err`, an error of a send or receive, was the report of a datagram's failure to arrive
    /// (see delivery_errors.rs), which the call goes on past; a refusal of the address a request is
    /// asking (nothing listens there) is that request's error instead. Other reports about it (an
    /// unreachable host or network, which may pass; a smaller path MTU, which the next send heeds)
    /// leave the request to its resends, as a socket that did not ask for reports would.
    fn reported(&self, py: Python<'_>, err: &PyErr, asking: Option<&Asking<'_, '_>>) -> PyResult<bool> {
        if !errno_of(py, err).is_some_and(delivery_errors::may_be_reported) {
            return Ok(false);
        }
        for report in delivery_errors::take(self.sock.fileno_raw()) {
            if let Some(asking) = asking
                && report.errno == libc::ECONNREFUSED
                && same_endpoint(report.destination.as_socket(), asking.target)
            {
                return Err(PyOSError::new_err((
                    report.errno,
                    format!("no reply from {}: {}", asking.address.repr()?, strerror(report.errno)),
                )));
            }
        }
        Ok(true)
    }

    /// The next datagram, waiting at most `timeout` (None: as long as it takes); reports of earlier
    /// datagrams' failures met on the way are passed over, but for those a request is `asking` about.
    fn receive<'py>(
        &self,
        py: Python<'py>,
        bufsize: usize,
        timeout: Option<Duration>,
        asking: Option<&Asking<'_, '_>>,
    ) -> PyResult<(Bound<'py, PyBytes>, socket2::SockAddr)> {
        let mut writer = BytesWriter::new(py, bufsize)?;
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        let (length, sender) = loop {
            let left = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
            match self.sock.recvfrom_within(py, Some(&self.spin), writer.space(), left) {
                Err(err) if self.reported(py, &err, asking)? => {}
                received => break received?,
            }
        };
        if self.sock.is_closed() {
            // close() from another thread woke this receive (shutdown makes it return 0 bytes from
            // nowhere): what the stdlib raises for a closed socket, not an empty datagram.
            return Err(os_error(libc::EBADF));
        }
        if length > bufsize {
            return Err(PyOSError::new_err((
                libc::EMSGSIZE,
                format!("a datagram of {length} bytes arrived but the buffer holds {bufsize}; it was dropped"),
            )));
        }
        Ok((writer.finish(length)?, sender))
    }

    /// Reads and drops every datagram already queued, so that a reply that came too late for an
    /// earlier request (or answered one of its resends) is not taken for the reply to the next one.
    fn discard_queued(&self, py: Python<'_>) -> PyResult<()> {
        loop {
            // An empty buffer still takes the whole datagram off the queue. The reports of earlier
            // datagrams' failures met on the way are dropped too.
            match self.sock.recvfrom_within(py, None, &mut [], Some(Duration::ZERO)) {
                Ok(_) => {}
                Err(err) if err.is_instance_of::<PyTimeoutError>(py) => return Ok(()),
                Err(err) if self.reported(py, &err, None)? => {}
                Err(err) => return Err(err),
            }
        }
    }
}

/// The errno of `err`, an OSError (None for another exception, or one without an errno).
fn errno_of(py: Python<'_>, err: &PyErr) -> Option<i32> {
    err.value(py)
        .getattr(pyo3::intern!(py, "errno"))
        .and_then(|errno| errno.extract::<Option<i32>>())
        .ok()
        .flatten()
}

/// What a request is asking: the address it sends to, as given and as resolved.
struct Asking<'a, 'py> {
    address: &'a Bound<'py, PyAny>,
    target: Option<SocketAddr>,
}

/// Whether a reply's sender is the address asked: its IP and port. An IPv6 address asked with a flow
/// label or scope id still matches the sender the kernel reports with neither.
fn same_endpoint(sender: Option<SocketAddr>, asked: Option<SocketAddr>) -> bool {
    match (sender, asked) {
        (Some(sender), Some(asked)) => sender.ip() == asked.ip() && sender.port() == asked.port(),
        _ => false,
    }
}

#[pymethods]
impl UdpClient {
    /// A UDP socket, bound to `address` if given (else the system picks a port on first send), of
    /// `family`, else of the address's family, else AF_INET.
    #[new]
    #[pyo3(signature = (address=None, *, family=None), text_signature = "(address=None, *, family=None)")]
    fn new(py: Python<'_>, address: Option<&Bound<'_, PyAny>>, family: Option<i32>) -> PyResult<Self> {
        // A UDP client of another family (AF_UNIX) could send, but never match a reply to its request.
        if family.is_some_and(|f| f != libc::AF_INET && f != libc::AF_INET6) {
            return Err(PyValueError::new_err("family must be AF_INET or AF_INET6"));
        }
        let local: Option<SocketAddr> = address
            .filter(|a| !a.is_none())
            .map(|a| endpoint(py, a, libc::SOCK_DGRAM, family.unwrap_or(libc::AF_UNSPEC)))
            .transpose()?;
        let family = match local {
            Some(SocketAddr::V6(_)) => libc::AF_INET6,
            Some(SocketAddr::V4(_)) => libc::AF_INET,
            None => family.unwrap_or(libc::AF_INET),
        };
        audit::no_socket_new(py, family, libc::SOCK_DGRAM, 0)?;
        if let (Some(address), Some(_)) = (address, local) {
            audit::no_socket_address(py, c"socket.bind", address)?;
        }
        let sock = Socket::open(py, family, libc::SOCK_DGRAM, -1)?;
        let prepared = match local {
            Some(local) => sock.bind_to(py, &local.into()),
            None => Ok(()),
        }
        .and_then(|()| delivery_errors::ask(sock.fileno_raw(), family == libc::AF_INET6).map_err(|err| io_error(&err)));
        if let Err(err) = prepared {
            sock.close_now(py)?;
            return Err(err);
        }
        Ok(UdpClient {
            sock,
            family,
            requesting: Turns::new("a request of this UdpClient"),
            spin: ReplySpin::default(),
        })
    }

    /// Sends one datagram to `address`; returns the bytes sent.
    fn sendto(&self, py: Python<'_>, data: &Bound<'_, PyAny>, address: &Bound<'_, PyAny>) -> PyResult<usize> {
        // The data first, then the address, as socket.sendto() parses them: a payload that could never
        // be sent is a TypeError before any look-up.
        with_readable(data, |bytes| {
            let target = to_sockaddr(py, self.family, address, "sendto")?;
            audit::no_socket_address(py, c"socket.sendto", address)?;
            self.send(py, bytes, &target, None)
        })?
    }

    /// The next datagram and its sender's address, waiting up to `timeout` seconds (None: as long as it
    /// takes). A datagram larger than `bufsize` raises OSError(EMSGSIZE) instead of arriving cut.
    #[pyo3(signature = (bufsize=Opt::Absent, *, timeout=None), text_signature = "(self, /, bufsize=65536, *, timeout=None)")]
    fn recvfrom<'py>(
        &self,
        py: Python<'py>,
        bufsize: Opt<'py>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyAny>)> {
        let bufsize = byte_count(bufsize.given(), DEFAULT_BUFSIZE, "recvfrom")?;
        let timeout = parse_timeout_arg("timeout", timeout)?;
        let (data, sender) = self.receive(py, bufsize, timeout, None)?;
        Ok((data, from_sockaddr(py, &sender)?))
    }

    /// Sends `data` to `address` and returns the first datagram that comes back from there, sending
    /// again after each `timeout` seconds without one, `retries` times; then raises TimeoutError.
    /// Datagrams already queued before the first send (such as late replies to an earlier request)
    /// are discarded, so the reply returned is one that arrived after this request was sent. When the
    /// address's host reports that nothing listens on that port (ICMP port unreachable), raises
    /// ConnectionRefusedError at once. With `accept`, a function of a reply, only a reply for which it
    /// returns true is taken: the others (late replies to earlier requests, told apart by an id the
    /// messages carry) are dropped.
    #[pyo3(signature = (data, address, timeout=1.0, retries=3, *, accept=None))]
    #[allow(clippy::too_many_arguments)]
    fn request<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        address: &Bound<'py, PyAny>,
        timeout: f64,
        retries: i64,
        accept: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let accept = accept.filter(|accept| !accept.is_none());
        if let Some(accept) = accept
            && !accept.is_callable()
        {
            return Err(PyTypeError::new_err(format!(
                "accept must be callable or None, not {}",
                crate::addr::type_name(accept)
            )));
        }
        let retries = u32::try_from(retries).map_err(|_| match retries {
            ..0 => PyValueError::new_err("retries must not be negative"),
            _ => PyOverflowError::new_err("retries is too large"),
        })?;
        let wait = parse_timeout_arg("timeout", Some(&timeout.into_pyobject(py)?.into_any()))?.unwrap_or_default();
        // The data before the address, as sendto() takes them.
        let payload = with_readable(data, <[u8]>::to_vec)?;
        let target = to_sockaddr(py, self.family, address, "request")?;
        let asking = Asking {
            address,
            target: target.as_socket(),
        };
        // One event for the request and its resends, all to the same address; raised before this
        // request's turn is taken, so that a hook using the client from another thread does not wait on it.
        audit::no_socket_address(py, c"socket.sendto", address)?;
        let _turn = self.requesting.take(py, None, || self.sock.is_closed())?;
        self.discard_queued(py)?;
        for _ in 0..=retries {
            self.send(py, &payload, &target, Some(&asking))?;
            let deadline = Instant::now() + wait;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.receive(py, DEFAULT_BUFSIZE, Some(left), Some(&asking)) {
                    Ok((reply, sender)) if same_endpoint(sender.as_socket(), asking.target) => {
                        if accept.map_or(Ok(true), |accept| accept.call1((&reply,))?.is_truthy())? {
                            return Ok(reply);
                        }
                    }
                    Ok(_) => {}
                    Err(err) if err.is_instance_of::<PyTimeoutError>(py) => break,
                    Err(err) => return Err(err),
                }
            }
        }
        let attempts = match retries {
            0 => "1 attempt".to_owned(),
            n => format!("{} attempts", u64::from(n) + 1),
        };
        Err(PyTimeoutError::new_err(format!(
            "no reply from {} after {attempts}",
            address.repr()?
        )))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.sock.close_waking(py)
    }

    /// Whether close() was called.
    #[getter]
    fn closed(&self) -> bool {
        self.sock.is_closed()
    }

    /// This socket's own address.
    #[getter]
    fn local<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        from_sockaddr(py, &self.sock.local_address()?)
    }

    fn fileno(&self) -> i32 {
        self.sock.fileno_raw()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        crate::display::repr(slf.as_any(), slf.get().sock.state_name())
    }
}

impl Drop for UdpClient {
    fn drop(&mut self) {
        let description = crate::display::base_repr::<Self>(self.sock.state_name());
        self.sock.close_unclosed(&description);
    }
}

pub fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<UdpClient>()
}
