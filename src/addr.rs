//! Socket addresses between Python and C: the tuples and paths the stdlib takes and returns
//! (`(host, port)` for AF_INET, `(host, port, flowinfo, scope_id)` for AF_INET6, a path for AF_UNIX,
//! `(pid, groups)` for AF_NETLINK, `(ifname, proto, pkttype, hatype, addr)` for AF_PACKET, `(cid, port)`
//! for AF_VSOCK) and
//! `socket2::SockAddr`, with the stdlib's exceptions for malformed ones.

use std::ffi::{CStr, CString};
use std::mem::{offset_of, size_of};
use std::net::IpAddr;

use libc::{
    AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_UNIX, AF_VSOCK, sockaddr_in, sockaddr_in6, sockaddr_ll, sockaddr_nl,
    sockaddr_un, sockaddr_vm,
};
use pyo3::exceptions::{PyOSError, PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use socket2::SockAddr;

use crate::buffer;
use crate::resolver::{host_bytes, resolve_host};

const SUN_PATH_LEN: usize = 108;

unsafe extern "C" {
    fn inet_ntop(
        family: libc::c_int,
        src: *const libc::c_void,
        dst: *mut libc::c_char,
        size: libc::socklen_t,
    ) -> *const libc::c_char;
    pub fn inet_pton(family: libc::c_int, src: *const libc::c_char, dst: *mut libc::c_void) -> libc::c_int;
}

/// Converts a Python address for `family` into a C address, resolving host names like CPython's
/// `getsockaddrarg`; `caller` names the method in error messages.
pub fn to_sockaddr(py: Python<'_>, family: i32, addr: &Bound<'_, PyAny>, caller: &str) -> PyResult<SockAddr> {
    match family {
        AF_INET | AF_INET6 => {
            let family_name = if family == AF_INET { "AF_INET" } else { "AF_INET6" };
            let tuple = address_tuple(addr, family_name, caller)?;
            let (host, port, flowinfo, scope_id) = parse_ip_tuple(family, tuple).map_err(|err| {
                // CPython words any overflow while parsing the tuple (the port's) as a port error.
                if err.is_instance_of::<PyOverflowError>(py) {
                    PyOverflowError::new_err(format!("{caller}(): port must be 0-65535."))
                } else {
                    err
                }
            })?;
            let ip = resolve_host(py, &host, family)?;
            let port = u16::try_from(port)
                .map_err(|_| PyOverflowError::new_err(format!("{caller}(): port must be 0-65535.")))?;
            if flowinfo > 0xfffff {
                return Err(PyOverflowError::new_err(format!(
                    "{caller}(): flowinfo must be 0-1048575."
                )));
            }
            Ok(ip_sockaddr(ip, port, flowinfo, scope_id))
        }
        AF_UNIX => unix_sockaddr(addr),
        AF_NETLINK => netlink_sockaddr(address_tuple(addr, "AF_NETLINK", caller)?),
        AF_PACKET => packet_sockaddr(py, address_tuple(addr, "AF_PACKET", caller)?, caller),
        // CPython names its own parser here, whatever the method.
        AF_VSOCK => vsock_sockaddr(address_tuple(addr, "AF_VSOCK", "getsockaddrarg")?),
        _ => Err(PyOSError::new_err(format!("{caller}(): bad family"))),
    }
}

/// The address as a tuple, which every family but AF_UNIX takes; anything else is CPython's TypeError.
fn address_tuple<'a, 'py>(
    addr: &'a Bound<'py, PyAny>,
    family_name: &str,
    caller: &str,
) -> PyResult<&'a Bound<'py, PyTuple>> {
    addr.cast::<PyTuple>().map_err(|_| {
        let caller = if caller == "getsockaddrarg" {
            "getsockaddrarg:".to_owned()
        } else {
            format!("{caller}():")
        };
        PyTypeError::new_err(format!(
            "{caller} {family_name} address must be tuple, not {}",
            type_name(addr)
        ))
    })
}

type IpTuple = (Vec<u8>, i64, u32, u32);

fn parse_ip_tuple(family: i32, tuple: &Bound<'_, PyTuple>) -> PyResult<IpTuple> {
    let len = tuple.len();
    let shape_ok = if family == AF_INET {
        len == 2
    } else {
        (2..=4).contains(&len)
    };
    if !shape_ok {
        return Err(PyTypeError::new_err(if family == AF_INET {
            "AF_INET address must be a pair (host, port)"
        } else {
            "AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])"
        }));
    }
    let host = host_bytes(&tuple.get_item(0)?)?;
    let port = i64::from(crate::args::c_int(&tuple.get_item(1)?)?);
    let flowinfo = if len > 2 {
        c_uint_masked(&tuple.get_item(2)?)?
    } else {
        0
    };
    let scope_id = if len > 3 {
        c_uint_masked(&tuple.get_item(3)?)?
    } else {
        0
    };
    Ok((host, port, flowinfo, scope_id))
}

/// An `int` argument as C's `unsigned int`, wrapped like `PyArg_Parse`'s "I" (no overflow check).
pub fn c_uint_masked(obj: &Bound<'_, PyAny>) -> PyResult<u32> {
    // An object with __index__ is asked once, as CPython asks it, for the int it stands for.
    // SAFETY: PyNumber_Index takes a borrowed object and returns a new reference, or NULL with an
    // exception set.
    let int = unsafe { Bound::from_owned_ptr_or_err(obj.py(), pyo3::ffi::PyNumber_Index(obj.as_ptr()))? };
    match int.extract::<i128>() {
        Ok(value) => Ok(value as u32),
        // Beyond i128: Python masks the int itself, whatever its size.
        Err(err) if err.is_instance_of::<pyo3::exceptions::PyOverflowError>(obj.py()) => {
            int.bitand(0xFFFF_FFFFu32)?.extract()
        }
        Err(err) => Err(err),
    }
}

/// A type's name as CPython's C code words it in error messages: its `tp_name`, module-qualified for
/// a type defined in C (`collections.OrderedDict`), the bare name for a class defined in Python.
pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    // SAFETY: a type's tp_name is a NUL-terminated string that lives as long as the type, which `obj`
    // keeps alive.
    unsafe { std::ffi::CStr::from_ptr((*pyo3::ffi::Py_TYPE(obj.as_ptr())).tp_name) }
        .to_string_lossy()
        .into_owned()
}

/// What CPython's argument parsers name in "argument 1 must be ..., not X": the type's name, except
/// None, which they call "None".
pub fn argument_type_name(obj: &Bound<'_, PyAny>) -> String {
    if obj.is_none() { "None".into() } else { type_name(obj) }
}

pub fn ip_sockaddr(ip: IpAddr, port: u16, flowinfo: u32, scope_id: u32) -> SockAddr {
    // SAFETY: each arm writes a complete sockaddr of the family it sets and reports its exact length.
    let ((), addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            match ip {
                IpAddr::V4(v4) => {
                    let sin = &mut *storage.cast::<sockaddr_in>();
                    sin.sin_family = AF_INET as libc::sa_family_t;
                    sin.sin_port = port.to_be();
                    sin.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
                    *len = size_of::<sockaddr_in>() as libc::socklen_t;
                }
                IpAddr::V6(v6) => {
                    let sin6 = &mut *storage.cast::<sockaddr_in6>();
                    sin6.sin6_family = AF_INET6 as libc::sa_family_t;
                    sin6.sin6_port = port.to_be();
                    sin6.sin6_flowinfo = flowinfo.to_be();
                    sin6.sin6_addr.s6_addr = v6.octets();
                    sin6.sin6_scope_id = scope_id;
                    *len = size_of::<sockaddr_in6>() as libc::socklen_t;
                }
            }
            Ok(())
        })
    }
    .expect("building an IP sockaddr cannot fail");
    addr
}

fn unix_sockaddr(addr: &Bound<'_, PyAny>) -> PyResult<SockAddr> {
    let encoded;
    let path_obj = if addr.is_instance_of::<PyString>() {
        encoded = fs_encode(addr)?;
        encoded.as_any()
    } else {
        addr
    };
    let path = buffer::read_bytes(path_obj)?;
    let is_abstract = path.first() == Some(&0);
    let too_long = if is_abstract {
        path.len() > SUN_PATH_LEN
    } else {
        path.len() >= SUN_PATH_LEN
    };
    if too_long {
        return Err(PyOSError::new_err("AF_UNIX path too long"));
    }
    // SAFETY: the storage is zeroed and larger than sockaddr_un; the path fits in sun_path (checked above).
    let ((), sockaddr) = unsafe {
        SockAddr::try_init(|storage, len| {
            let sun = &mut *storage.cast::<sockaddr_un>();
            sun.sun_family = AF_UNIX as libc::sa_family_t;
            for (dst, src) in sun.sun_path.iter_mut().zip(&path) {
                *dst = *src as libc::c_char;
            }
            *len = (offset_of!(sockaddr_un, sun_path) + path.len()) as libc::socklen_t;
            Ok(())
        })
    }
    .expect("building an AF_UNIX sockaddr cannot fail");
    Ok(sockaddr)
}

/// `(pid, groups)`, each taken as C's `unsigned int` without a range check, as CPython's "II" does.
fn netlink_sockaddr(tuple: &Bound<'_, PyTuple>) -> PyResult<SockAddr> {
    let (pid, groups) = uint_pair(tuple, |_| "AF_NETLINK address must be a pair (pid, groups)".into())?;
    Ok(sockaddr_of(|nl: &mut sockaddr_nl| {
        nl.nl_family = AF_NETLINK as libc::sa_family_t;
        nl.nl_pid = pid;
        nl.nl_groups = groups;
    }))
}

/// `(cid, port)`, each taken as C's `unsigned int` without a range check, as CPython's "II" does.
fn vsock_sockaddr(tuple: &Bound<'_, PyTuple>) -> PyResult<SockAddr> {
    let (cid, port) = uint_pair(tuple, |len| {
        format!("getsockaddrarg() takes exactly 2 arguments ({len} given)")
    })?;
    Ok(sockaddr_of(|vm: &mut sockaddr_vm| {
        vm.svm_family = AF_VSOCK as libc::sa_family_t;
        vm.svm_cid = cid;
        vm.svm_port = port;
    }))
}

/// A pair of C `unsigned int`s; a tuple of another length is a TypeError worded by `shape_error`.
fn uint_pair(tuple: &Bound<'_, PyTuple>, shape_error: impl FnOnce(usize) -> String) -> PyResult<(u32, u32)> {
    if tuple.len() != 2 {
        return Err(PyTypeError::new_err(shape_error(tuple.len())));
    }
    Ok((c_uint_masked(&tuple.get_item(0)?)?, c_uint_masked(&tuple.get_item(1)?)?))
}

/// A C address of type `T` and `T`'s length: zeroed, then filled in by `fill`.
fn sockaddr_of<T>(fill: impl FnOnce(&mut T)) -> SockAddr {
    // SAFETY: the storage is zeroed and larger than any sockaddr type; `fill` writes T's fields.
    let ((), sockaddr) = unsafe {
        SockAddr::try_init(|storage, len| {
            fill(&mut *storage.cast::<T>());
            *len = size_of::<T>() as libc::socklen_t;
            Ok(())
        })
    }
    .expect("building a sockaddr cannot fail");
    sockaddr
}

/// `(ifname, proto[, pkttype[, hatype[, addr]]])`, checked in CPython's order: the tuple's shape and
/// items, then the interface name, then the hardware address's length, then the protocol's range.
fn packet_sockaddr(py: Python<'_>, tuple: &Bound<'_, PyTuple>, caller: &str) -> PyResult<SockAddr> {
    let (ifname, proto, pkttype, hatype, haddr) = parse_packet_tuple(tuple).map_err(|err| {
        // CPython words any overflow while parsing the tuple as one error about the whole address.
        if err.is_instance_of::<PyOverflowError>(py) {
            PyOverflowError::new_err(format!("{caller}(): address argument out of range"))
        } else {
            err
        }
    })?;
    let ifindex = interface_index(&ifname)?;
    if haddr.len() > 8 {
        return Err(PyValueError::new_err("Hardware address must be 8 bytes or less"));
    }
    let proto =
        u16::try_from(proto).map_err(|_| PyOverflowError::new_err(format!("{caller}(): proto must be 0-65535.")))?;
    // haddr fits in sll_addr (checked above).
    Ok(sockaddr_of(|ll: &mut sockaddr_ll| {
        ll.sll_family = AF_PACKET as libc::sa_family_t;
        ll.sll_protocol = proto.to_be();
        ll.sll_ifindex = ifindex;
        // CPython stores these ints into the C fields unchecked, so they wrap the same way.
        ll.sll_pkttype = pkttype as u8;
        ll.sll_hatype = hatype as u16;
        ll.sll_halen = haddr.len() as u8;
        ll.sll_addr[..haddr.len()].copy_from_slice(&haddr);
    }))
}

type PacketTuple = (String, i32, i32, i32, Vec<u8>);

/// CPython's `PyArg_ParseTuple(addr, "si|iiy*")`: pkttype defaults to PACKET_HOST, hatype to 0, the
/// hardware address to none.
fn parse_packet_tuple(tuple: &Bound<'_, PyTuple>) -> PyResult<PacketTuple> {
    let shape_error = || PyTypeError::new_err("AF_PACKET address must be a tuple of two to five elements");
    let len = tuple.len();
    if !(2..=5).contains(&len) {
        return Err(shape_error());
    }
    let ifname = tuple.get_item(0)?;
    let ifname = ifname
        .cast::<PyString>()
        .map_err(|_| shape_error())?
        .to_str()?
        .to_owned();
    if ifname.contains('\0') {
        return Err(PyValueError::new_err("embedded null character"));
    }
    let item = |index: usize, default: i32| -> PyResult<i32> {
        if index < len {
            crate::args::c_int(&tuple.get_item(index)?)
        } else {
            Ok(default)
        }
    };
    let proto = item(1, 0)?;
    let pkttype = item(2, i32::from(libc::PACKET_HOST))?;
    let hatype = item(3, 0)?;
    let haddr = if len > 4 {
        buffer::read_bytes(&tuple.get_item(4)?)?
    } else {
        Vec::new()
    };
    Ok((ifname, proto, pkttype, hatype, haddr))
}

/// The index of the interface named `name`. CPython asks SIOCGIFINDEX with the name cut to
/// IFNAMSIZ - 1 bytes; if_nametoindex(3) asks the same but refuses longer names, so cut it here too.
fn interface_index(name: &str) -> PyResult<i32> {
    let cut = &name.as_bytes()[..name.len().min(libc::IFNAMSIZ - 1)];
    let name = CString::new(cut).expect("the name has no NUL (checked by the parser)");
    // SAFETY: name is a NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(crate::errors::os_error(crate::errors::last_errno())),
        index => Ok(index as i32),
    }
}

/// `os.fsencode(path)`: the bytes the OS sees for a str path.
pub fn fs_encode<'py>(path: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    // SAFETY: path is a str; PyUnicode_EncodeFSDefault returns a new reference or NULL with an exception set.
    unsafe {
        Bound::from_owned_ptr_or_err(path.py(), pyo3::ffi::PyUnicode_EncodeFSDefault(path.as_ptr()))
            .map(|b| b.cast_into_unchecked())
    }
}

/// The Python form of a C address, as CPython's `makesockaddr` builds it.
pub fn from_sockaddr<'py>(py: Python<'py>, addr: &SockAddr) -> PyResult<Bound<'py, PyAny>> {
    if addr.len() == 0 {
        return Ok(py.None().into_bound(py));
    }
    let storage = addr.as_ptr().cast::<u8>();
    match i32::from(addr.family()) {
        AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*storage.cast::<sockaddr_in>() };
            let ip = ip_string(AF_INET, std::ptr::addr_of!(sin.sin_addr).cast())?;
            Ok((ip, u16::from_be(sin.sin_port)).into_pyobject(py)?.into_any())
        }
        AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*storage.cast::<sockaddr_in6>() };
            let ip = ip_string(AF_INET6, std::ptr::addr_of!(sin6.sin6_addr).cast())?;
            let port = u16::from_be(sin6.sin6_port);
            Ok((ip, port, u32::from_be(sin6.sin6_flowinfo), sin6.sin6_scope_id)
                .into_pyobject(py)?
                .into_any())
        }
        AF_UNIX => {
            // SAFETY: the family says the storage holds a sockaddr_un.
            let sun = unsafe { &*storage.cast::<sockaddr_un>() };
            let path_len = (addr.len() as usize).saturating_sub(offset_of!(sockaddr_un, sun_path));
            let raw: Vec<u8> = sun
                .sun_path
                .iter()
                .take(path_len.min(SUN_PATH_LEN))
                .map(|&c| c as u8)
                .collect();
            if raw.first() == Some(&0) {
                return Ok(PyBytes::new(py, &raw).into_any());
            }
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            fs_decode(py, &raw[..end])
        }
        AF_NETLINK => {
            // SAFETY: the family says the storage holds a sockaddr_nl.
            let nl = unsafe { &*storage.cast::<sockaddr_nl>() };
            Ok((nl.nl_pid, nl.nl_groups).into_pyobject(py)?.into_any())
        }
        AF_VSOCK => {
            // SAFETY: the family says the storage holds a sockaddr_vm.
            let vm = unsafe { &*storage.cast::<sockaddr_vm>() };
            Ok((vm.svm_cid, vm.svm_port).into_pyobject(py)?.into_any())
        }
        AF_PACKET => {
            // SAFETY: the family says the storage holds a sockaddr_ll.
            let ll = unsafe { &*storage.cast::<sockaddr_ll>() };
            // sll_halen bytes of hardware address, which may run past sll_addr (InfiniBand's 20), within
            // what the kernel wrote and the storage holds.
            let start = offset_of!(sockaddr_ll, sll_addr);
            let end = (addr.len() as usize).min(size_of::<libc::sockaddr_storage>());
            let halen = usize::from(ll.sll_halen).min(end.saturating_sub(start));
            // SAFETY: start + halen is within the storage (bounded above).
            let haddr = unsafe { std::slice::from_raw_parts(storage.add(start), halen) };
            Ok((
                interface_name(py, ll.sll_ifindex)?,
                u16::from_be(ll.sll_protocol),
                ll.sll_pkttype,
                ll.sll_hatype,
                PyBytes::new(py, haddr),
            )
                .into_pyobject(py)?
                .into_any())
        }
        family => {
            // SAFETY: every sockaddr starts with the family followed by at least 14 bytes of sa_data.
            let sa = unsafe { &*storage.cast::<libc::sockaddr>() };
            let data: Vec<u8> = sa.sa_data.iter().map(|&c| c as u8).collect();
            Ok((family, PyBytes::new(py, &data)).into_pyobject(py)?.into_any())
        }
    }
}

/// The name of interface `index`, decoded as CPython decodes it (strict UTF-8); "" when there is no
/// such interface (index 0: an unbound packet socket), as CPython gives when SIOCGIFNAME fails.
fn interface_name(py: Python<'_>, index: i32) -> PyResult<Bound<'_, PyAny>> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes, as if_indextoname(3) requires.
    if unsafe { libc::if_indextoname(index as libc::c_uint, buf.as_mut_ptr()) }.is_null() {
        return Ok(PyString::new(py, "").into_any());
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf; the call returns a new reference or
    // NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyUnicode_FromString(buf.as_ptr())) }
}

fn fs_decode<'py>(py: Python<'py>, raw: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: raw is valid for its length; the call returns a new reference or NULL with an exception set.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyUnicode_DecodeFSDefaultAndSize(raw.as_ptr().cast(), raw.len() as pyo3::ffi::Py_ssize_t),
        )
    }
}

/// `inet_ntop(3)`: the printable form of a binary address, as glibc writes it.
pub fn ip_string(family: i32, addr: *const libc::c_void) -> PyResult<String> {
    let mut buf = [0 as libc::c_char; 64];
    // SAFETY: addr points to an in_addr/in6_addr matching family; buf is large enough for either.
    let ok = unsafe { !inet_ntop(family, addr, buf.as_mut_ptr(), buf.len() as libc::socklen_t).is_null() };
    if !ok {
        return Err(crate::errors::os_error(crate::errors::last_errno()));
    }
    // SAFETY: inet_ntop succeeded and wrote a NUL-terminated string into buf.
    Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

/// An IP socket address from raw storage a syscall filled (recvmmsg), if it holds one.
pub fn socket_addr_from_storage(storage: &libc::sockaddr_storage) -> Option<std::net::SocketAddr> {
    match i32::from(storage.ss_family) {
        AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(std::net::SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(std::net::SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                port,
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
