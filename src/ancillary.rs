//! Ancillary data (control messages) for `sendmsg()` / `recvmsg()`, packed from and unpacked to the
//! `[(level, type, data), ...]` lists the stdlib uses.

use pyo3::exceptions::{PyOSError, PyOverflowError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::addr::argument_type_name;
use crate::args::{Opt, c_int, iterate};
use crate::buffer::with_readable;

/// One control message: level, type and data.
pub type Message = (i32, i32, Vec<u8>);

/// Reads the `ancdata` argument: an iterable of `(level, type, data)` with `data` bytes-like.
pub fn parse(ancdata: &Bound<'_, PyAny>) -> PyResult<Vec<Message>> {
    let iter = iterate(ancdata, "sendmsg() argument 2 must be an iterable")?;
    iter.map(|item| parse_item(&item?)).collect()
}

/// One item, as CPython's `PyArg_Parse(item, "(iiy*)")` takes it: any sequence but `bytes` (a list as
/// well as a tuple) of exactly three, with its messages.
fn parse_item(item: &Bound<'_, PyAny>) -> PyResult<Message> {
    const WHAT: &str = "[sendmsg() ancillary data items]() argument";
    // SAFETY: item is a live object; PySequence_Check only inspects its type.
    if unsafe { ffi::PySequence_Check(item.as_ptr()) } == 0 || item.is_instance_of::<PyBytes>() {
        let name = argument_type_name(item);
        return Err(PyTypeError::new_err(format!(
            "{WHAT} must be 3-item sequence, not {name}"
        )));
    }
    let len = item.len()?;
    if len != 3 {
        return Err(PyTypeError::new_err(format!(
            "{WHAT} must be sequence of length 3, not {len}"
        )));
    }
    let level = c_int(&item.get_item(0)?)?;
    let kind = c_int(&item.get_item(1)?)?;
    // Checked before the copy: CPython refuses an item whose control message would not fit a C int.
    let data = with_readable(&item.get_item(2)?, |bytes| {
        if !fits(bytes.len()) {
            return Err(item_too_large());
        }
        Ok(bytes.to_vec())
    })??;
    Ok((level, kind, data))
}

/// `parse` for an optional argument.
pub fn parse_or_empty(ancdata: &Opt<'_>) -> PyResult<Vec<Message>> {
    ancdata.given().map_or(Ok(Vec::new()), parse)
}

/// The control messages of an AF_ALG sendmsg (linux/if_alg.h), as CPython's `sendmsg_afalg()` makes
/// them: the operation (ALG_OP_ENCRYPT, ALG_OP_DECRYPT), the IV (`afalg_iv`'s) and the AEAD
/// associated-data length, each number a native-endian u32.
pub fn afalg(op: u32, iv: Option<Vec<u8>>, assoclen: Option<u32>) -> Vec<Message> {
    let mut messages = vec![(libc::SOL_ALG, libc::ALG_SET_OP, op.to_ne_bytes().to_vec())];
    if let Some(iv) = iv {
        messages.push((libc::SOL_ALG, libc::ALG_SET_IV, iv));
    }
    if let Some(assoclen) = assoclen {
        messages.push((
            libc::SOL_ALG,
            libc::ALG_SET_AEAD_ASSOCLEN,
            assoclen.to_ne_bytes().to_vec(),
        ));
    }
    messages
}

/// The IV's control message data (`struct af_alg_iv`: its u32 length, then its bytes); an IV too long
/// for a control message is an OverflowError before anything is copied.
pub fn afalg_iv(iv: &[u8]) -> PyResult<Vec<u8>> {
    if !fits(iv.len().saturating_add(4)) {
        return Err(PyOverflowError::new_err("iv is too large"));
    }
    // Within a C int, as it fits.
    let mut data = (iv.len() as u32).to_ne_bytes().to_vec();
    data.extend_from_slice(iv);
    Ok(data)
}

/// The largest control buffer (and message in it), as CPython's SOCKLEN_T_LIMIT.
const LIMIT: usize = i32::MAX as usize;

/// Whether a message of `len` data bytes fits a control buffer, as CPython checks each item.
fn fits(len: usize) -> bool {
    len <= LIMIT - cmsg_space(0)
}

fn item_too_large() -> PyErr {
    PyOSError::new_err("ancillary data item too large")
}

/// CMSG_SPACE for a length that `fits`: the macro takes a u32, which a longer length would wrap.
fn cmsg_space(len: usize) -> usize {
    debug_assert!(len <= LIMIT);
    // SAFETY: CMSG_SPACE is arithmetic on a length.
    unsafe { libc::CMSG_SPACE(len as u32) as usize }
}

/// The control buffer for `messages`, each header and payload aligned as CMSG_SPACE lays them out.
pub fn pack(messages: &[Message]) -> PyResult<Vec<u8>> {
    // Checked here, where the buffer is sized and written, whoever made the messages: a length
    // CMSG_SPACE wrapped would size a buffer smaller than the copy into it.
    if !messages.iter().all(|(_, _, data)| fits(data.len())) {
        return Err(item_too_large());
    }
    let total: usize = messages.iter().map(|(_, _, data)| cmsg_space(data.len())).sum();
    if total > LIMIT {
        return Err(PyOSError::new_err("too much ancillary data"));
    }
    let mut buf = vec![0u8; total];
    let mut offset = 0;
    for (level, kind, data) in messages {
        let space = cmsg_space(data.len());
        // SAFETY: CMSG_LEN is arithmetic on a length, which fits a C int (checked above).
        let len = unsafe { libc::CMSG_LEN(data.len() as u32) };
        let header = libc::cmsghdr {
            cmsg_len: len as usize,
            cmsg_level: *level,
            cmsg_type: *kind,
        };
        // SAFETY: the buffer holds `space` bytes from `offset`, enough for the header and the data;
        // the header is written unaligned-safe and the data after CMSG_LEN(0) bytes.
        unsafe {
            let at = buf.as_mut_ptr().add(offset);
            std::ptr::write_unaligned(at.cast::<libc::cmsghdr>(), header);
            let data_at = at.add(libc::CMSG_LEN(0) as usize);
            std::ptr::copy_nonoverlapping(data.as_ptr(), data_at, data.len());
        }
        offset += space;
    }
    Ok(buf)
}

/// The `[(level, type, data), ...]` list for the first `len` bytes of a received control buffer.
pub fn unpack<'py>(py: Python<'py>, control: &[u8]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    // SAFETY: CMSG_LEN is arithmetic.
    let header_len = unsafe { libc::CMSG_LEN(0) } as usize;
    let mut offset = 0;
    while offset + header_len <= control.len() {
        // SAFETY: at least a header's worth of bytes remains from offset.
        let header: libc::cmsghdr = unsafe { std::ptr::read_unaligned(control.as_ptr().add(offset).cast()) };
        if header.cmsg_len < header_len {
            break;
        }
        // A message cut short by a small buffer (MSG_CTRUNC) gives what arrived of it.
        let end = (offset + header.cmsg_len).min(control.len());
        let data = PyBytes::new(py, &control[offset + header_len..end]);
        list.append((header.cmsg_level, header.cmsg_type, data))?;
        // SAFETY: CMSG_SPACE is arithmetic.
        offset += unsafe { libc::CMSG_SPACE((header.cmsg_len - header_len) as u32) } as usize;
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn afalg_control_messages_hold_the_operation_the_iv_and_the_associated_data_length() {
        let messages = afalg(1, Some(afalg_iv(b"0123456789abcdef").unwrap()), Some(20));
        let mut iv = 16u32.to_ne_bytes().to_vec();
        iv.extend_from_slice(b"0123456789abcdef");
        assert_eq!(
            messages,
            vec![
                (libc::SOL_ALG, libc::ALG_SET_OP, 1u32.to_ne_bytes().to_vec()),
                (libc::SOL_ALG, libc::ALG_SET_IV, iv),
                (libc::SOL_ALG, libc::ALG_SET_AEAD_ASSOCLEN, 20u32.to_ne_bytes().to_vec()),
            ]
        );
        assert_eq!(
            afalg(0, None, None),
            vec![(libc::SOL_ALG, libc::ALG_SET_OP, vec![0; 4])]
        );
    }

    /// Zeroed by calloc and never written, these buffers cost no memory.
    fn untouched(len: usize) -> Vec<u8> {
        crate::buffer::zeroed_vec(len).unwrap()
    }

    #[test]
    fn an_iv_too_long_for_a_control_message_is_refused() {
        let longest = LIMIT - cmsg_space(0) - 4;
        assert!(afalg_iv(&untouched(longest + 1)).is_err());
        // Past u32: its length would wrap in CMSG_SPACE, sizing a buffer smaller than the copy
        // (a heap overflow before this was checked).
        assert!(afalg_iv(&untouched(u32::MAX as usize + 1)).is_err());
        assert!(afalg_iv(&untouched(u32::MAX as usize - 3)).is_err());
    }

    #[test]
    fn pack_refuses_a_message_too_long_for_a_control_buffer_whoever_made_it() {
        let longest = LIMIT - cmsg_space(0);
        assert!(fits(longest) && !fits(longest + 1));
        assert!(pack(&[(0, 0, untouched(longest + 1))]).is_err());
        assert!(pack(&[(0, 0, untouched(u32::MAX as usize + 1))]).is_err());
    }
}
