//! Name resolution: `getaddrinfo`, `getnameinfo`, `gethostbyname`, `gethostbyname_ex`, `gethostbyaddr`,
//! and the host lookup behind every address tuple. Every lookup runs with the GIL released.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ptr;

use libc::{AF_INET, AF_INET6, AF_UNSPEC, addrinfo, hostent, socklen_t};
use pyo3::exceptions::{PyOSError, PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyInt, PyList, PyString, PyTuple};
use socket2::SockAddr;

use crate::addr::{argument_type_name, from_sockaddr, ip_sockaddr, ip_string, type_name};
use crate::args::{Opt, c_int, c_int_or, python_at_least};
use crate::audit;
use crate::errors::{gai_error, h_error, os_error};

/// Room for a `hostent`'s strings, as CPython gives `gethostbyname_r`.
const HOSTENT_BUF: usize = 16384;

unsafe extern "C" {
    fn gethostbyname_r(
        name: *const c_char,
        ret: *mut hostent,
        buf: *mut c_char,
        buflen: usize,
        result: *mut *mut hostent,
        h_errnop: *mut c_int,
    ) -> c_int;
    fn gethostbyaddr_r(
        addr: *const c_void,
        len: socklen_t,
        family: c_int,
        ret: *mut hostent,
        buf: *mut c_char,
        buflen: usize,
        result: *mut *mut hostent,
        h_errnop: *mut c_int,
    ) -> c_int;
}

/// One `getaddrinfo` result, owned so it can leave the GIL-free section.
struct AddrInfo {
    family: i32,
    socktype: i32,
    protocol: i32,
    canonname: Option<String>,
    addr: SockAddr,
}

/// A failed `getaddrinfo`: its EAI code and, for EAI_SYSTEM, the errno.
struct GaiFailure(i32, i32);

impl GaiFailure {
    fn into_pyerr(self) -> PyErr {
        gai_error(self.0, self.1)
    }
}

#[derive(Clone, Copy, Default)]
struct Hints {
    family: i32,
    socktype: i32,
    protocol: i32,
    flags: i32,
}

/// `getaddrinfo(3)`; call it with the GIL released.
fn lookup(host: Option<&CStr>, service: Option<&CStr>, hints: Hints) -> Result<Vec<AddrInfo>, GaiFailure> {
    // SAFETY: an all-zero addrinfo is the documented "no hints" value; the fields we need are set below.
    let mut c_hints: addrinfo = unsafe { std::mem::zeroed() };
    c_hints.ai_family = hints.family;
    c_hints.ai_socktype = hints.socktype;
    c_hints.ai_protocol = hints.protocol;
    c_hints.ai_flags = hints.flags;
    let mut res: *mut addrinfo = ptr::null_mut();
    let host_ptr = host.map_or(ptr::null(), CStr::as_ptr);
    let service_ptr = service.map_or(ptr::null(), CStr::as_ptr);
    // SAFETY: the strings are NUL-terminated or NULL; res receives a list we free below.
    let code = unsafe { libc::getaddrinfo(host_ptr, service_ptr, &c_hints, &mut res) };
    if code != 0 {
        return Err(GaiFailure(code, crate::errors::last_errno()));
    }
    let mut out = Vec::new();
    let mut node = res;
    while !node.is_null() {
        // SAFETY: node is an element of the list getaddrinfo returned, not yet freed.
        let ai = unsafe { &*node };
        let canonname = if ai.ai_canonname.is_null() {
            None
        } else {
            // SAFETY: a non-NULL ai_canonname is a NUL-terminated string owned by the list.
            Some(
                unsafe { CStr::from_ptr(ai.ai_canonname) }
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        let len = ai
            .ai_addrlen
            .min(std::mem::size_of::<libc::sockaddr_storage>() as socklen_t);
        // SAFETY: ai_addr points to ai_addrlen valid bytes of a sockaddr; we copy at most the storage size.
        let addr = unsafe {
            SockAddr::try_init(|storage, out_len| {
                ptr::copy_nonoverlapping(ai.ai_addr.cast::<u8>(), storage.cast::<u8>(), len as usize);
                *out_len = len;
                Ok(())
            })
        }
        .map(|((), a)| a)
        .map_err(|_| GaiFailure(libc::EAI_MEMORY, 0))?;
        out.push(AddrInfo {
            family: ai.ai_family,
            socktype: ai.ai_socktype,
            protocol: ai.ai_protocol,
            canonname,
            addr,
        });
        node = ai.ai_next;
    }
    // SAFETY: res came from a successful getaddrinfo and is freed once.
    unsafe { libc::freeaddrinfo(res) };
    Ok(out)
}

/// A host argument as the bytes the resolver sees, like CPython's `idna_converter`.
pub fn host_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let bytes = if let Ok(b) = obj.cast::<PyBytes>() {
        b.as_bytes().to_vec()
    } else if let Ok(b) = obj.cast::<PyByteArray>() {
        b.to_vec()
    } else if let Ok(s) = obj.cast::<PyString>() {
        // A str that is not valid UTF-8 (a lone surrogate) cannot be a host name either.
        let text = s
            .to_cow()
            .map_err(|_| PyTypeError::new_err("encoding of hostname failed"))?;
        // CPython takes only an exact str of ASCII as it is; a str subclass goes through the idna
        // codec even when ASCII, which refuses empty labels and labels over 63 characters.
        if text.is_ascii() && obj.is_exact_instance_of::<PyString>() {
            text.as_bytes().to_vec()
        } else {
            let encoded = encode_idna(obj).map_err(|_| PyTypeError::new_err("encoding of hostname failed"))?;
            encoded.as_bytes().to_vec()
        }
    } else {
        return Err(PyTypeError::new_err(format!(
            "str, bytes or bytearray expected, not {}",
            type_name(obj)
        )));
    };
    if bytes.contains(&0) {
        return Err(PyTypeError::new_err("host name must not contain null character"));
    }
    Ok(bytes)
}

fn parse_numeric(family: i32, name: &CStr) -> Option<IpAddr> {
    let mut buf = [0u8; 16];
    // SAFETY: name is NUL-terminated and buf is large enough for an in_addr or in6_addr.
    let ok = unsafe { crate::addr::inet_pton(family, name.as_ptr(), buf.as_mut_ptr().cast()) } == 1;
    ok.then(|| match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(buf[0], buf[1], buf[2], buf[3])),
        _ => IpAddr::V6(Ipv6Addr::from(buf)),
    })
}

/// The address a host name stands for in `family`, like CPython's `setipaddr`: "" is the wildcard,
/// "<broadcast>" the broadcast address, numeric addresses are parsed without a lookup.
pub fn resolve_host(py: Python<'_>, name: &[u8], family: i32) -> PyResult<IpAddr> {
    if name.is_empty() {
        return match family {
            AF_INET => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            _ => wildcard(py, family),
        };
    }
    if name == b"<broadcast>" || name == b"255.255.255.255" {
        if family != AF_INET && family != AF_UNSPEC {
            return Err(PyOSError::new_err("address family mismatched"));
        }
        return Ok(IpAddr::V4(Ipv4Addr::BROADCAST));
    }
    let c_name = CString::new(name).map_err(|_| PyTypeError::new_err("host name must not contain null character"))?;
    if (family == AF_UNSPEC || family == AF_INET)
        && let Some(ip) = parse_numeric(AF_INET, &c_name)
    {
        return Ok(ip);
    }
    if (family == AF_UNSPEC || family == AF_INET6)
        && !name.contains(&b'%')
        && let Some(ip) = parse_numeric(AF_INET6, &c_name)
    {
        return Ok(ip);
    }
    let hints = Hints {
        family,
        ..Hints::default()
    };
    let found = py
        .detach(|| lookup(Some(&c_name), None, hints))
        .map_err(GaiFailure::into_pyerr)?;
    let first = found.first().ok_or_else(|| gai_error(libc::EAI_NONAME, 0))?;
    match first.addr.as_socket() {
        Some(sa) => Ok(sa.ip()),
        None => Err(PyOSError::new_err("unknown address family")),
    }
}

/// The wildcard address of `family` as getaddrinfo gives it; with AF_UNSPEC that is ambiguous.
fn wildcard(py: Python<'_>, family: i32) -> PyResult<IpAddr> {
    let service = CString::new("0").expect("no NUL");
    let hints = Hints {
        family,
        socktype: libc::SOCK_DGRAM,
        flags: libc::AI_PASSIVE,
        ..Hints::default()
    };
    let found = py
        .detach(|| lookup(None, Some(&service), hints))
        .map_err(GaiFailure::into_pyerr)?;
    if found.len() > 1 {
        return Err(PyOSError::new_err("wildcard resolved to multiple address"));
    }
    found
        .first()
        .and_then(|ai| ai.addr.as_socket())
        .map(|sa| sa.ip())
        .ok_or_else(|| PyOSError::new_err("unknown address family"))
}

/// `str` encoded with the idna codec as CPython's C code encodes it (`PyUnicode_AsEncodedString`): a
/// str subclass's own `encode()` is not called.
fn encode_idna<'py>(text: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    // SAFETY: `text` is a live object; both names are NUL-terminated; the result is a new reference.
    let encoded = unsafe {
        Bound::from_owned_ptr_or_err(
            text.py(),
            pyo3::ffi::PyUnicode_AsEncodedString(text.as_ptr(), c"idna".as_ptr(), std::ptr::null()),
        )?
    };
    Ok(encoded.cast_into::<PyBytes>()?)
}

fn c_string_arg(obj: Option<&Bound<'_, PyAny>>) -> Option<CString> {
    obj.map(|bytes| {
        let raw = bytes.cast::<PyBytes>().map(|b| b.as_bytes()).unwrap_or_default();
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        CString::new(&raw[..end]).expect("NUL bytes were cut off")
    })
}

#[pyfunction]
#[pyo3(signature = (host, port, family=Opt::Absent, r#type=Opt::Absent, proto=Opt::Absent, flags=Opt::Absent))]
fn getaddrinfo<'py>(
    py: Python<'py>,
    host: &Bound<'py, PyAny>,
    port: &Bound<'py, PyAny>,
    family: Opt<'py>,
    r#type: Opt<'py>,
    proto: Opt<'py>,
    flags: Opt<'py>,
) -> PyResult<Bound<'py, PyList>> {
    let host_encoded = if host.is_none() {
        None
    } else if host.is_instance_of::<PyString>() {
        Some(encode_idna(host)?.into_any())
    } else if host.is_instance_of::<PyBytes>() {
        Some(host.clone())
    } else {
        return Err(PyTypeError::new_err("getaddrinfo() argument 1 must be string or None"));
    };
    let port_text: Option<Bound<'py, PyAny>> = if port.is_exact_instance_of::<PyInt>() {
        // Before 3.12 CPython converts the port to a C long first; from 3.12 it hands any int's
        // decimal text to the C library, which judges it (gaierror EAI_SERVICE, or a wrapped port).
        if !python_at_least(py, 12) {
            port.extract::<i64>()
                .map_err(|_| PyOverflowError::new_err("Python int too large to convert to C long"))?;
        }
        Some(PyBytes::new(py, port.str()?.to_str()?.as_bytes()).into_any())
    } else if let Ok(s) = port.cast::<PyString>() {
        Some(PyBytes::new(py, s.to_str()?.as_bytes()).into_any())
    } else if port.is_instance_of::<PyBytes>() {
        Some(port.clone())
    } else if port.is_none() {
        None
    } else {
        return Err(PyOSError::new_err("Int or String expected"));
    };
    let c_host = c_string_arg(host_encoded.as_ref());
    let c_port = c_string_arg(port_text.as_ref());
    let hints = Hints {
        family: c_int_or(&family, 0)?,
        socktype: c_int_or(&r#type, 0)?,
        protocol: c_int_or(&proto, 0)?,
        flags: c_int_or(&flags, 0)?,
    };
    audit::getaddrinfo(host, port, hints.family, hints.socktype, hints.protocol)?;
    let found = py
        .detach(|| lookup(c_host.as_deref(), c_port.as_deref(), hints))
        .map_err(GaiFailure::into_pyerr)?;
    let list = PyList::empty(py);
    for ai in &found {
        let canon = ai.canonname.as_deref().unwrap_or("");
        list.append((ai.family, ai.socktype, ai.protocol, canon, from_sockaddr(py, &ai.addr)?))?;
    }
    Ok(list)
}

#[pyfunction]
#[pyo3(signature = (*args))]
fn getnameinfo<'py>(py: Python<'py>, args: &Bound<'py, PyTuple>) -> PyResult<(String, String)> {
    if args.len() != 2 {
        return Err(PyTypeError::new_err(format!(
            "getnameinfo() takes exactly 2 arguments ({} given)",
            args.len()
        )));
    }
    let sockaddr = args.get_item(0)?;
    let flags = c_int(&args.get_item(1)?)?;
    let tuple = sockaddr
        .cast::<PyTuple>()
        .map_err(|_| PyTypeError::new_err("getnameinfo() argument 1 must be a tuple"))?;
    let illegal = || PyTypeError::new_err("getnameinfo(): illegal sockaddr argument");
    if !(2..=4).contains(&tuple.len()) {
        return Err(illegal());
    }
    // A str that is not valid UTF-8 raises its UnicodeEncodeError, as CPython's "s" format does.
    let host = tuple
        .get_item(0)?
        .cast_into::<PyString>()
        .map_err(|_| illegal())?
        .to_str()?
        .to_owned();
    let port = c_int(&tuple.get_item(1)?)?;
    let unsigned = |i: usize| -> PyResult<u32> {
        if tuple.len() > i {
            crate::addr::c_uint_masked(&tuple.get_item(i)?)
        } else {
            Ok(0)
        }
    };
    let (flowinfo, scope_id) = (unsigned(2)?, unsigned(3)?);
    if flowinfo > 0xfffff {
        return Err(PyOverflowError::new_err("getnameinfo(): flowinfo must be 0-1048575."));
    }
    let c_host = CString::new(host).map_err(|_| PyValueError::new_err("embedded null character"))?;
    audit::one(c"socket.getnameinfo", &sockaddr)?;
    let c_port = CString::new(port.to_string()).expect("digits have no NUL");
    let hints = Hints {
        family: AF_UNSPEC,
        socktype: libc::SOCK_DGRAM,
        flags: libc::AI_NUMERICHOST,
        ..Hints::default()
    };
    let found = py
        .detach(|| lookup(Some(&c_host), Some(&c_port), hints))
        .map_err(GaiFailure::into_pyerr)?;
    if found.len() > 1 {
        return Err(PyOSError::new_err("sockaddr resolved to multiple addresses"));
    }
    let resolved = found[0]
        .addr
        .as_socket()
        .ok_or_else(|| PyOSError::new_err("unknown family"))?;
    let addr = match resolved {
        std::net::SocketAddr::V4(v4) => {
            if tuple.len() != 2 {
                return Err(PyOSError::new_err("IPv4 sockaddr must be 2 tuple"));
            }
            ip_sockaddr(IpAddr::V4(*v4.ip()), v4.port(), 0, 0)
        }
        std::net::SocketAddr::V6(v6) => ip_sockaddr(IpAddr::V6(*v6.ip()), v6.port(), flowinfo, scope_id),
    };
    let mut host_buf = [0 as c_char; 1025];
    let mut serv_buf = [0 as c_char; 32];
    let code = py.detach(|| {
        // SAFETY: addr is a complete sockaddr of addr.len() bytes; both buffers are valid for their lengths.
        unsafe {
            libc::getnameinfo(
                addr.as_ptr().cast(),
                addr.len(),
                host_buf.as_mut_ptr(),
                host_buf.len() as socklen_t,
                serv_buf.as_mut_ptr(),
                serv_buf.len() as socklen_t,
                flags,
            )
        }
    });
    if code != 0 {
        return Err(gai_error(code, crate::errors::last_errno()));
    }
    // SAFETY: getnameinfo succeeded and NUL-terminated both buffers.
    let text = |buf: &[c_char]| unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
    Ok((text(&host_buf), text(&serv_buf)))
}

/// A `gethostby*` host argument as CPython's "et" format with the idna codec takes it: str is
/// IDNA-encoded, bytes and bytearray pass as they are, and none may hold a NUL.
fn hostname_arg(obj: &Bound<'_, PyAny>, func: &str) -> PyResult<Vec<u8>> {
    let bytes = if obj.is_instance_of::<PyString>() {
        encode_idna(obj)?.as_bytes().to_vec()
    } else if obj.is_instance_of::<PyBytes>() || obj.is_instance_of::<PyByteArray>() {
        crate::buffer::read_bytes(obj)?
    } else {
        return Err(PyTypeError::new_err(format!(
            "{func}() argument 1 must be str, bytes or bytearray, not {}",
            argument_type_name(obj)
        )));
    };
    if bytes.contains(&0) {
        return Err(PyTypeError::new_err(format!(
            "{func}() argument 1 must be encoded string without null bytes, not {}",
            type_name(obj)
        )));
    }
    Ok(bytes)
}

#[pyfunction]
#[pyo3(signature = (hostname, /))]
fn gethostbyname(py: Python<'_>, hostname: &Bound<'_, PyAny>) -> PyResult<String> {
    let name = hostname_arg(hostname, "gethostbyname")?;
    audit::one(c"socket.gethostbyname", hostname)?;
    Ok(resolve_host(py, &name, AF_INET)?.to_string())
}

/// The `(name, aliases, addresses)` triple of a `hostent`, or herror when the lookup found nothing.
struct HostEntry(String, Vec<String>, Vec<Vec<u8>>, i32);

/// Runs a reentrant `gethostby*_r` call with its buffer and copies out what it found.
fn host_entry(
    call: impl FnOnce(*mut hostent, *mut c_char, usize, *mut *mut hostent, *mut c_int) -> c_int,
) -> Result<HostEntry, i32> {
    // SAFETY: an all-zero hostent is a valid placeholder for the call to fill in.
    let mut entry: hostent = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as c_char; HOSTENT_BUF];
    let mut result: *mut hostent = ptr::null_mut();
    let mut h_errno: c_int = 0;
    call(&mut entry, buf.as_mut_ptr(), buf.len(), &mut result, &mut h_errno);
    if result.is_null() {
        return Err(h_errno);
    }
    // SAFETY: on success result points at entry, whose strings and lists live in buf.
    unsafe {
        let h = &*result;
        let text = |p: *const c_char| CStr::from_ptr(p).to_string_lossy().into_owned();
        let mut aliases = Vec::new();
        let mut p = h.h_aliases;
        while !p.is_null() && !(*p).is_null() {
            aliases.push(text(*p));
            p = p.add(1);
        }
        let mut addrs = Vec::new();
        let mut p = h.h_addr_list;
        while !p.is_null() && !(*p).is_null() {
            addrs.push(std::slice::from_raw_parts((*p).cast::<u8>(), h.h_length as usize).to_vec());
            p = p.add(1);
        }
        Ok(HostEntry(text(h.h_name), aliases, addrs, h.h_addrtype))
    }
}

fn host_triple(entry: Result<HostEntry, i32>, family: i32) -> PyResult<(String, Vec<String>, Vec<String>)> {
    let HostEntry(name, aliases, raw_addrs, addrtype) = entry.map_err(h_error)?;
    if addrtype != family {
        return Err(os_error(libc::EAFNOSUPPORT));
    }
    let addrs = raw_addrs
        .iter()
        .map(|raw| ip_string(family, raw.as_ptr().cast()))
        .collect::<PyResult<_>>()?;
    Ok((name, aliases, addrs))
}

#[pyfunction]
#[pyo3(signature = (hostname, /))]
fn gethostbyname_ex(py: Python<'_>, hostname: &Bound<'_, PyAny>) -> PyResult<(String, Vec<String>, Vec<String>)> {
    let name = hostname_arg(hostname, "gethostbyname_ex")?;
    audit::one(c"socket.gethostbyname", hostname)?;
    resolve_host(py, &name, AF_INET)?;
    let c_name = CString::new(name).expect("host_bytes rejects NUL");
    let entry = py.detach(|| {
        host_entry(|ret, buf, len, result, h_errno| {
            // SAFETY: all pointers come from host_entry and are valid for the call.
            unsafe { gethostbyname_r(c_name.as_ptr(), ret, buf, len, result, h_errno) }
        })
    });
    host_triple(entry, AF_INET)
}

#[pyfunction]
#[pyo3(signature = (ip_address, /))]
fn gethostbyaddr(py: Python<'_>, ip_address: &Bound<'_, PyAny>) -> PyResult<(String, Vec<String>, Vec<String>)> {
    let name = hostname_arg(ip_address, "gethostbyaddr")?;
    audit::one(c"socket.gethostbyaddr", ip_address)?;
    let (family, raw): (i32, Vec<u8>) = match resolve_host(py, &name, AF_UNSPEC)? {
        IpAddr::V4(v4) => (AF_INET, v4.octets().to_vec()),
        IpAddr::V6(v6) => (AF_INET6, v6.octets().to_vec()),
    };
    let entry = py.detach(|| {
        host_entry(|ret, buf, len, result, h_errno| {
            // SAFETY: raw holds an in_addr/in6_addr of its length; the rest come from host_entry.
            unsafe {
                gethostbyaddr_r(
                    raw.as_ptr().cast(),
                    raw.len() as socklen_t,
                    family,
                    ret,
                    buf,
                    len,
                    result,
                    h_errno,
                )
            }
        })
    });
    host_triple(entry, family)
}

pub fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(getaddrinfo, m)?)?;
    m.add_function(wrap_pyfunction!(getnameinfo, m)?)?;
    m.add_function(wrap_pyfunction!(gethostbyname, m)?)?;
    m.add_function(wrap_pyfunction!(gethostbyname_ex, m)?)?;
    m.add_function(wrap_pyfunction!(gethostbyaddr, m)?)?;
    Ok(())
}

/// A `(host, port)` tuple as the one socket address a server (or a UdpClient) binds, of `family`
/// (either for AF_UNSPEC); a None or "" host is the wildcard address.
pub fn endpoint(
    py: Python<'_>,
    address: &Bound<'_, PyAny>,
    socktype: i32,
    family: i32,
) -> PyResult<std::net::SocketAddr> {
    Ok(bind_choice(&endpoints(py, address, socktype, family, true)?))
}

/// Of the addresses a name resolved to, the one to bind: the first IPv4 one, as create_server() binds a
/// name (its family is AF_INET unless told), else the first. A host whose resolver puts ::1 before
/// 127.0.0.1 for "localhost" would otherwise serve IPv6 only, out of reach of a client of 127.0.0.1.
fn bind_choice(found: &[std::net::SocketAddr]) -> std::net::SocketAddr {
    let first = found.iter().find(|a| a.is_ipv4()).or(found.first());
    *first.expect("endpoints() gives at least one address")
}

/// Every socket address `getaddrinfo` gives for a `(host, port)` tuple in `family` (AF_UNSPEC: any),
/// in its order: the ones `create_connection()` tries in turn. Never empty. A lookup to connect to (not
/// `passive`) raises the `socket.getaddrinfo` audit event, as create_connection()'s does; one to bind
/// to does not, as create_server()'s bind() does not.
pub fn endpoints(
    py: Python<'_>,
    address: &Bound<'_, PyAny>,
    socktype: i32,
    family: i32,
    passive: bool,
) -> PyResult<Vec<std::net::SocketAddr>> {
    // (host, port), or IPv6's (host, port[, flowinfo[, scope_id]]) as servers report their address; to
    // connect to, a list too, as create_connection() unpacks any pair (a JSON configuration's, say).
    let (kind, items) = match address.cast::<PyTuple>() {
        Ok(tuple) => ("tuple", Some(tuple.clone())),
        Err(_) => (
            "list",
            address
                .cast::<PyList>()
                .ok()
                .filter(|_| !passive)
                .map(|list| list.to_tuple()),
        ),
    };
    let pair = items.as_ref().filter(|t| (2..=4).contains(&t.len())).ok_or_else(|| {
        let given = match &items {
            Some(items) => format!("a {kind} of length {}", items.len()),
            None => type_name(address),
        };
        let kinds = if passive { "tuple" } else { "tuple or list" };
        PyTypeError::new_err(format!(
            "address must be a (host, port) or (host, port, flowinfo, scope_id) {kinds}, not {given}"
        ))
    })?;
    if pair.len() > 2 && family == AF_INET {
        // flowinfo and scope_id are IPv6's, as bind() on an AF_INET socket says before any look-up.
        return Err(PyTypeError::new_err("AF_INET address must be a pair (host, port)"));
    }
    let host_obj = pair.get_item(0)?;
    let host = if host_obj.is_none() {
        None
    } else {
        // To bind to, "" means every interface, as it does for socket.bind(); to connect to, it names
        // nothing (gaierror), as for create_connection().
        let name = host_bytes(&host_obj)?;
        let name = if name.is_empty() && passive {
            if family == AF_INET6 {
                b"::".to_vec()
            } else {
                b"0.0.0.0".to_vec()
            }
        } else {
            name
        };
        Some(CString::new(name).expect("host_bytes rejects NUL"))
    };
    let port = pair.get_item(1)?;
    let named_service = !passive && (port.is_instance_of::<PyString>() || port.is_instance_of::<PyBytes>());
    let service = if named_service {
        // To connect to, the port may be a service, "80" or "http", as create_connection() hands it to
        // getaddrinfo(); a server binds a number, as bind() takes one.
        let text = match port.cast::<PyString>() {
            Ok(text) => text.to_str()?.as_bytes().to_vec(),
            Err(_) => port.cast::<PyBytes>()?.as_bytes().to_vec(),
        };
        CString::new(text).map_err(|_| PyValueError::new_err("embedded null character in the port"))?
    } else {
        let number: i64 = port.extract()?;
        let number = u16::try_from(number).map_err(|_| PyOverflowError::new_err("port must be 0-65535."))?;
        CString::new(number.to_string()).expect("digits have no NUL")
    };
    if !passive {
        audit::getaddrinfo(&host_obj, &port, family, socktype, 0)?;
    }
    let numeric_service = if named_service { 0 } else { libc::AI_NUMERICSERV };
    let hints = Hints {
        family,
        socktype,
        flags: numeric_service | if passive { libc::AI_PASSIVE } else { 0 },
        ..Hints::default()
    };
    let found = py
        .detach(|| lookup(host.as_deref(), Some(&service), hints))
        .map_err(GaiFailure::into_pyerr)?;
    let mut found: Vec<std::net::SocketAddr> = found.iter().filter_map(|ai| ai.addr.as_socket()).collect();
    if found.is_empty() {
        return Err(gai_error(libc::EAI_NONAME, 0));
    }
    // What the socket module says of the same tuple given to bind() or connect() on a socket of the
    // family the host resolved to: flowinfo and scope_id are IPv6's, an IPv4 address is a pair.
    if pair.len() > 2 {
        let flowinfo = crate::addr::c_uint_masked(&pair.get_item(2)?)?;
        // Without one, the scope a name like "fe80::1%eth0" resolved to stays.
        let scope_id = match pair.len() {
            4 => Some(crate::addr::c_uint_masked(&pair.get_item(3)?)?),
            _ => None,
        };
        found.retain(|addr| addr.is_ipv6());
        if found.is_empty() {
            return Err(PyTypeError::new_err("AF_INET address must be a pair (host, port)"));
        }
        if flowinfo > 0xfffff {
            let call = if passive { "bind" } else { "connect" };
            return Err(PyOverflowError::new_err(format!(
                "{call}(): flowinfo must be 0-1048575."
            )));
        }
        for addr in &mut found {
            if let std::net::SocketAddr::V6(v6) = addr {
                // std keeps flowinfo as it sits in the sockaddr, in network order.
                v6.set_flowinfo(flowinfo.to_be());
                if let Some(scope_id) = scope_id {
                    v6.set_scope_id(scope_id);
                }
            }
        }
    }
    Ok(found)
}

/// The Python form of an IP socket address: `(host, port)` or `(host, port, flowinfo, scope_id)`.
pub fn socket_address_to_py<'py>(py: Python<'py>, addr: &std::net::SocketAddr) -> PyResult<Bound<'py, PyAny>> {
    match addr {
        std::net::SocketAddr::V4(v4) => Ok((v4.ip().to_string(), v4.port()).into_pyobject(py)?.into_any()),
        std::net::SocketAddr::V6(v6) => {
            let host = ip_string(AF_INET6, v6.ip().octets().as_ptr().cast())?;
            // std keeps flowinfo as it sits in the sockaddr (network order); Python shows host order.
            let flowinfo = u32::from_be(v6.flowinfo());
            Ok((host, v6.port(), flowinfo, v6.scope_id()).into_pyobject(py)?.into_any())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_binds_the_first_ipv4_address_a_name_resolves_to() {
        let v6: std::net::SocketAddr = "[::1]:80".parse().unwrap();
        let v4: std::net::SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(bind_choice(&[v6, v4]), v4);
        assert_eq!(bind_choice(&[v4, v6]), v4);
        assert_eq!(bind_choice(&[v6]), v6);
    }
}
