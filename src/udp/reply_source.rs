//! Replies from the address a datagram was sent to.
//!
//! A server bound to every address (0.0.0.0 or ::) would otherwise reply from the source address the
//! kernel's route picks, which on a host with several addresses need not be the one the client asked:
//! a client that checks who answered (a connected UDP socket, `UdpClient.request()`) never takes such a
//! reply. The kernel reports each datagram's destination (IP_PKTINFO, IPV6_RECVPKTINFO), and a reply
//! sent with that address as its IP_PKTINFO/IPV6_PKTINFO goes out from there.

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;

use socket2::SockAddr;

/// Room for one received message's control data: an IPv4 and an IPv6 pktinfo (72 bytes), with room to spare.
const CONTROL_ROOM: usize = 128;

/// Control-message storage, aligned as `cmsghdr` requires.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct Control([u8; CONTROL_ROOM]);

impl Control {
    pub const EMPTY: Control = Control([0; CONTROL_ROOM]);

    pub fn room(&mut self) -> (*mut libc::c_void, usize) {
        (self.0.as_mut_ptr().cast(), CONTROL_ROOM)
    }
}

/// The address a reply goes out from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReplySource {
    V4(Ipv4Addr),
    /// With the interface the datagram came in on, which a link-local address needs.
    V6(Ipv6Addr, u32),
}

/// Whether a socket bound to `local` takes datagrams sent to any of the host's addresses: 0.0.0.0, ::,
/// or ::ffff:0.0.0.0 (every IPv4 address, on an IPv6 socket).
pub fn every_address(local: SocketAddr) -> bool {
    local.ip().to_canonical().is_unspecified()
}

/// Asks the kernel for the destination of each datagram received on `fd`, a socket bound to every
/// address of its family. An IPv6 socket asks for IPv4's report too: for an IPv4 datagram it takes (from
/// a `::ffff:a.b.c.d` sender, the system's default for UDP on `::`), IPV6_PKTINFO gives the packet's
/// destination, a broadcast or multicast address a reply cannot come from, where IP_PKTINFO gives the
/// local address it came to.
pub fn report_destinations(fd: RawFd, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        set_flag(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)?;
    }
    set_flag(fd, libc::IPPROTO_IP, libc::IP_PKTINFO)
}

pub(super) fn set_flag(fd: RawFd, level: libc::c_int, option: libc::c_int) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the option value is a C int, passed with its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Where the datagram `message` describes was sent, from its control data: IPv4's local address when
/// there is one (an IPv4 datagram, on either family's socket), else IPv6's destination; None without
/// either, or for a multicast destination, which a reply cannot come from (the kernel then picks).
///
/// # Safety
/// `message` is a header recvmsg(2)/recvmmsg(2) filled in, whose control data is still in place.
pub unsafe fn destination(message: &libc::msghdr) -> Option<ReplySource> {
    if message.msg_control.is_null() {
        return None;
    }
    let mut ipv6 = None;
    // SAFETY: the kernel wrote msg_controllen bytes of well-formed control messages at msg_control;
    // the CMSG_* macros stay within them, and pktinfo is read unaligned from its data.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(message);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            // What a message holds past its header, so that one the kernel cut short (MSG_CTRUNC) is
            // not read beyond it.
            let held = ((*cmsg).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) if held >= size_of::<libc::in_pktinfo>() => {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                    // The local address the datagram came to: for a broadcast, the interface's own.
                    return Some(ReplySource::V4(Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr))));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if held >= size_of::<libc::in6_pktinfo>() => {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    let address = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                    ipv6 = (!address.is_multicast()).then_some(ReplySource::V6(address, info.ipi6_ifindex));
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(message, cmsg);
        }
    }
    ipv6
}

/// One sendmsg(2) of `data` to `target` from `source` (or from where the kernel picks, for None).
pub fn send(
    fd: RawFd,
    data: &[u8],
    target: SocketAddr,
    source: Option<ReplySource>,
    flags: libc::c_int,
) -> io::Result<usize> {
    let target = SockAddr::from(target);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // Made only for a source: a reply without one (a server on one address) sends no control data.
    let mut control = None;
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the call.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_name = target.as_ptr() as *mut libc::c_void;
    message.msg_namelen = target.len();
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    if let Some(source) = source {
        let (level, kind, len) = match source {
            ReplySource::V4(_) => (libc::IPPROTO_IP, libc::IP_PKTINFO, size_of::<libc::in_pktinfo>()),
            ReplySource::V6(..) => (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, size_of::<libc::in6_pktinfo>()),
        };
        let (room, _) = control.insert(Control::EMPTY).room();
        message.msg_control = room;
        // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic; the header and its data fit in `control`
        // (CONTROL_ROOM is more than CMSG_SPACE of either pktinfo), which is aligned for cmsghdr.
        unsafe {
            message.msg_controllen = libc::CMSG_SPACE(len as u32) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&message);
            (*cmsg).cmsg_level = level;
            (*cmsg).cmsg_type = kind;
            (*cmsg).cmsg_len = libc::CMSG_LEN(len as u32) as usize;
            let data = libc::CMSG_DATA(cmsg);
            match source {
                ReplySource::V4(address) => std::ptr::write_unaligned(
                    data.cast::<libc::in_pktinfo>(),
                    libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr {
                            s_addr: u32::from(address).to_be(),
                        },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    },
                ),
                ReplySource::V6(address, ifindex) => std::ptr::write_unaligned(
                    data.cast::<libc::in6_pktinfo>(),
                    libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr {
                            s6_addr: address.octets(),
                        },
                        // Only a link-local address needs the interface; others go where the route says.
                        ipi6_ifindex: if address.is_unicast_link_local() { ifindex } else { 0 },
                    },
                ),
            }
        }
    }
    // SAFETY: message points at the target address, one iovec over data, and the control data above.
    let sent = unsafe { libc::sendmsg(fd, &message, flags) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_room_holds_both_pktinfos() {
        // SAFETY: CMSG_SPACE is arithmetic.
        let needed = unsafe {
            libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32)
                + libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32)
        };
        assert!(needed as usize <= CONTROL_ROOM);
    }
}
