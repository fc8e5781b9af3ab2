//! What the network reports of datagrams it could not deliver (ICMP "port unreachable" for a port
//! where nothing listens, "host unreachable" and the like), so that a client's request to a port where
//! nothing listens fails at once instead of waiting out its retries.
//!
//! The kernel tells an unconnected UDP socket of these only under IP_RECVERR (IPV6_RECVERR): it
//! queues each report with the destination of the datagram it concerns, and also sets it as the
//! socket's pending error, which the next send or receive returns whatever its own destination. A
//! client that asks for the reports therefore takes them all whenever a call fails with one (`take`),
//! acts on a refusal of the address it is asking, and goes on as a socket that never asked otherwise.
//! Asking also makes a send report a datagram the kernel dropped on a full queue (ENOBUFS), which it
//! otherwise counts as sent: the client counts it as sent too.

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::os::fd::RawFd;

use pyo3::prelude::*;
use pyo3::types::PyList;
use socket2::SockAddr;

use super::reply_source::set_flag;
use crate::addr::from_sockaddr;

/// The errors ICMP and ICMPv6 reports become on a socket (the kernel's `icmp_err_convert` and
/// `icmpv6_err_convert`). A UDP receive fails with no other error of these, so a receive that does
/// has met a report; a send can also fail with some of them for its own datagram (no route).
const REPORTED: [i32; 9] = [
    libc::ECONNREFUSED,
    libc::EHOSTUNREACH,
    libc::ENETUNREACH,
    libc::EHOSTDOWN,
    libc::ENOPROTOOPT,
    libc::EOPNOTSUPP,
    libc::EMSGSIZE,
    libc::EPROTO,
    libc::EACCES,
];

/// At most this many reports are taken at a time, so that a flood of them cannot hold a call.
const TAKE_AT_MOST: usize = 1024;

/// Whether a call that failed with `errno` may have met a report.
pub fn may_be_reported(errno: i32) -> bool {
    REPORTED.contains(&errno)
}

/// One report: the error, and where the datagram it concerns was going.
pub struct Report {
    pub errno: i32,
    pub destination: SockAddr,
}

/// Asks the kernel to report to `fd`, a UDP socket, the errors of datagrams it sends: IPv4's (which
/// an IPv6 socket meets for its IPv4-mapped destinations) and IPv6's.
pub fn ask(fd: RawFd, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        set_flag(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVERR)?;
    }
    set_flag(fd, libc::IPPROTO_IP, libc::IP_RECVERR)
}

/// Takes the reports queued on `fd` (none for a closed socket), and its pending error first: a report
/// that comes in between then leaves its pending error without its queued report, which the caller
/// meets as an error `may_be_reported` and takes again, where the other order could leave a queued
/// report with no pending error, which makes poll(2) say readable when there is nothing to read.
pub fn take(fd: RawFd) -> Vec<Report> {
    let mut reports = Vec::new();
    if fd < 0 {
        return reports;
    }
    let mut pending: libc::c_int = 0;
    let mut length = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_ERROR's value is a C int, written into `pending` within `length` bytes.
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut pending as *mut libc::c_int).cast(),
            &mut length,
        )
    };
    while reports.len() < TAKE_AT_MOST {
        match take_one(fd) {
            Some(report) => reports.extend(report),
            None => break,
        }
    }
    reports
}

/// Control-message storage for one report: its header, the extended error and the offender's address.
#[repr(C, align(8))]
struct Control([u8; 256]);

/// Reads one report off the error queue: None when it is empty (or the read fails), Some(None) for
/// an entry that is not an IP report.
fn take_one(fd: RawFd) -> Option<Option<Report>> {
    let mut control = Control([0; 256]);
    let mut errno = None;
    // SAFETY: try_init hands over zeroed address storage and its length; the message header points at
    // it and at `control` (no data: the datagram's copy is not wanted and is cut), both live for the call.
    let received = unsafe {
        SockAddr::try_init(|storage, storage_length| {
            let mut message: libc::msghdr = MaybeUninit::zeroed().assume_init();
            message.msg_name = storage.cast();
            message.msg_namelen = *storage_length;
            message.msg_control = control.0.as_mut_ptr().cast();
            message.msg_controllen = control.0.len();
            if libc::recvmsg(fd, &mut message, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) < 0 {
                return Err(io::Error::last_os_error());
            }
            *storage_length = message.msg_namelen;
            errno = extended_errno(&message);
            Ok(())
        })
    };
    let ((), destination) = received.ok()?;
    Some(errno.map(|errno| Report { errno, destination }))
}

/// The error in a report's control data (IP_RECVERR or IPV6_RECVERR).
///
/// # Safety
/// `message` is a header recvmsg(2) filled in, whose control data is still in place.
unsafe fn extended_errno(message: &libc::msghdr) -> Option<i32> {
    // SAFETY: the kernel wrote msg_controllen bytes of well-formed control messages; the CMSG_* macros
    // stay within them, and the extended error is read unaligned from its data when it is all there.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(message);
        while !cmsg.is_null() {
            let held = ((*cmsg).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
            let kind = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            if matches!(
                kind,
                (libc::IPPROTO_IP, libc::IP_RECVERR) | (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
            ) && held >= size_of::<libc::sock_extended_err>()
            {
                let error = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::sock_extended_err>());
                return i32::try_from(error.ee_errno).ok();
            }
            cmsg = libc::CMSG_NXTHDR(message, cmsg);
        }
    }
    None
}

/// `_take_delivery_errors(fd, errno)`, for rsock.aio's UdpClient, which drives its socket from Python:
/// None when a call on the UDP socket `fd` that failed with `errno` cannot have met a report, else the
/// reports queued, as `(errno, address)` pairs.
#[pyfunction]
fn _take_delivery_errors(py: Python<'_>, fd: RawFd, errno: Option<i32>) -> PyResult<Option<Bound<'_, PyList>>> {
    if !errno.is_some_and(may_be_reported) {
        return Ok(None);
    }
    let reports = py.detach(|| take(fd));
    let pairs = reports
        .iter()
        .map(|report| Ok((report.errno, from_sockaddr(py, &report.destination)?)))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, pairs).map(Some)
}

/// `_report_delivery_errors(fd, ipv6)`: asks for the reports on `fd` (see `ask`).
#[pyfunction]
fn _report_delivery_errors(fd: RawFd, ipv6: bool) -> PyResult<()> {
    ask(fd, ipv6).map_err(|err| crate::errors::io_error(&err))
}

pub fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_take_delivery_errors, m)?)?;
    m.add_function(wrap_pyfunction!(_report_delivery_errors, m)?)
}
