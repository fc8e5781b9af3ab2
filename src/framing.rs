//! Message framing for the high-level types, as tokio-util decoders: `"line"` (newline-terminated),
//! `"length"` (4-byte big-endian length prefix) or any delimiter bytes. Every frame is bounded by
//! `max_frame_size`, so a peer cannot make a reader buffer without limit. A decoder takes bytes out
//! of the buffer only with a whole frame, so bytes left at the end of a stream mean it ended
//! mid-message.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use tokio_util::codec::Decoder;

use crate::buffer::read_bytes;

/// A message longer than a 4-byte length prefix can announce (4 GiB): a bad argument, so ValueError,
/// wherever it is sent from.
#[derive(Debug)]
pub struct TooLong;

impl From<TooLong> for PyErr {
    fn from(_: TooLong) -> PyErr {
        PyValueError::new_err("message too long for a 4-byte length prefix")
    }
}

/// How a byte stream is cut into messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Every chunk the OS hands over is a message.
    Raw,
    /// Messages end with `\n`; a `\r` before it is dropped too.
    Line,
    /// Each message is preceded by its length as a 4-byte big-endian integer.
    Length,
    /// Messages end with these bytes.
    Delimiter(Vec<u8>),
}

impl Framing {
    /// Parses the `framing=` argument: None, "line", "length" or a non-empty bytes delimiter.
    pub fn from_py(value: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let Some(value) = value.filter(|v| !v.is_none()) else {
            return Ok(Framing::Raw);
        };
        if let Ok(name) = value.cast::<PyString>() {
            return match name.to_str()? {
                "line" => Ok(Framing::Line),
                "length" => Ok(Framing::Length),
                other => Err(PyValueError::new_err(format!(
                    "framing must be None, 'line', 'length' or a bytes delimiter, not {other:?}"
                ))),
            };
        }
        if value.is_instance_of::<PyBytes>() || value.is_instance_of::<pyo3::types::PyByteArray>() {
            let delimiter = read_bytes(value)?;
            if delimiter.is_empty() {
                return Err(PyValueError::new_err("a framing delimiter must not be empty"));
            }
            return Ok(Framing::Delimiter(delimiter));
        }
        Err(PyTypeError::new_err(format!(
            "framing must be None, 'line', 'length' or bytes, not {}",
            crate::addr::type_name(value)
        )))
    }

    /// A decoder for one stream, or None when every chunk is a message.
    pub fn decoder(&self, max_frame_size: usize) -> Option<FrameDecoder> {
        match self {
            Framing::Raw => None,
            Framing::Line => Some(FrameDecoder::Delimited(DelimiterCodec::new(
                b"\n".to_vec(),
                true,
                max_frame_size,
            ))),
            Framing::Delimiter(d) => Some(FrameDecoder::Delimited(DelimiterCodec::new(
                d.clone(),
                false,
                max_frame_size,
            ))),
            Framing::Length => Some(FrameDecoder::Length(LengthCodec { max_frame_size })),
        }
    }

    /// The bytes that carry `message` on the wire, appended to `out`. A message too long for its
    /// framing is refused before anything is reserved for it.
    pub fn encode(&self, message: &[u8], out: &mut BytesMut) -> Result<(), TooLong> {
        let prefix = match self {
            Framing::Length => Some(u32::try_from(message.len()).map_err(|_| TooLong)?),
            _ => None,
        };
        let suffix: &[u8] = match self {
            Framing::Raw | Framing::Length => b"",
            Framing::Line => b"\n",
            Framing::Delimiter(d) => d,
        };
        out.reserve(prefix.map_or(0, |_| 4) + message.len() + suffix.len());
        if let Some(len) = prefix {
            out.put_u32(len);
        }
        out.extend_from_slice(message);
        out.extend_from_slice(suffix);
        Ok(())
    }

    /// `message` framed, as one buffer.
    pub fn encoded(&self, message: &[u8]) -> Result<Bytes, TooLong> {
        let mut out = BytesMut::new();
        self.encode(message, &mut out)?;
        Ok(out.freeze())
    }

    /// The Python value of the `framing` attribute.
    pub fn to_py<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match self {
            Framing::Raw => py.None().into_bound(py),
            Framing::Line => PyString::new(py, "line").into_any(),
            Framing::Length => PyString::new(py, "length").into_any(),
            Framing::Delimiter(d) => PyBytes::new(py, d).into_any(),
        }
    }
}

/// A stream's decoder: one of the framings' codecs.
pub enum FrameDecoder {
    Delimited(DelimiterCodec),
    Length(LengthCodec),
}

impl FrameDecoder {
    /// The next whole message in `buf`, if there is one; an error means the stream broke the framing
    /// (a frame over the size limit) and must be closed.
    pub fn next_frame(&mut self, buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        match self {
            FrameDecoder::Delimited(codec) => codec.decode(buf),
            FrameDecoder::Length(codec) => codec.decode(buf),
        }
    }
}

/// Takes the first `n` bytes of a stream's buffer for a raw read (recv, readexactly, ...), telling
/// the decoder that cuts the same buffer into messages: what it had searched is no longer there.
pub fn take_front(buf: &mut BytesMut, decoder: &mut Option<FrameDecoder>, n: usize) -> BytesMut {
    if let Some(FrameDecoder::Delimited(codec)) = decoder {
        codec.searched = 0;
    }
    buf.split_to(n)
}

/// Cuts a stream at a delimiter of one or more bytes, remembering how far it has searched so a long
/// frame arriving in pieces is scanned once.
pub struct DelimiterCodec {
    delimiter: Vec<u8>,
    strip_cr: bool,
    max_frame_size: usize,
    searched: usize,
}

impl DelimiterCodec {
    fn new(delimiter: Vec<u8>, strip_cr: bool, max_frame_size: usize) -> Self {
        DelimiterCodec {
            delimiter,
            strip_cr,
            max_frame_size,
            searched: 0,
        }
    }
}

impl Decoder for DelimiterCodec {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        let dlen = self.delimiter.len();
        // Resume where the last search stopped, backing up so a delimiter split across reads is found
        // (within the buffer: its owner may have emptied it since, after an error).
        let start = self.searched.min(buf.len()).saturating_sub(dlen - 1);
        let found = if dlen == 1 {
            buf[start..].iter().position(|&b| b == self.delimiter[0])
        } else {
            buf[start..].windows(dlen).position(|w| w == self.delimiter.as_slice())
        };
        match found {
            Some(offset) => {
                let end = start + offset;
                self.searched = 0;
                // A `\r` dropped before the delimiter is part of the terminator, not of the frame.
                let len = if self.strip_cr && end > 0 && buf[end - 1] == b'\r' {
                    end - 1
                } else {
                    end
                };
                if len > self.max_frame_size {
                    return Err(frame_too_large(self.max_frame_size));
                }
                let mut frame = buf.split_to(end + dlen);
                frame.truncate(len);
                Ok(Some(frame))
            }
            // Too long only once even a frame of the largest size and all but the last byte of its
            // delimiter (or, for lines, a trailing `\r` that may be the start of `\r\n`) could not
            // account for what is buffered.
            None if buf.len().saturating_sub(self.max_frame_size)
                > dlen - 1 + usize::from(self.strip_cr && buf.last() == Some(&b'\r')) =>
            {
                self.searched = 0;
                Err(frame_too_large(self.max_frame_size))
            }
            None => {
                self.searched = buf.len();
                Ok(None)
            }
        }
    }
}

/// The most a length header makes room for before the frame's bytes come.
const RESERVE_AHEAD: usize = 4 << 20;

/// Cuts a stream into frames each preceded by its length, 4 bytes big-endian. The header stays in the
/// buffer until its whole frame has arrived (a header announcing more than `max_frame_size` is
/// refused at once).
pub struct LengthCodec {
    max_frame_size: usize,
}

impl Decoder for LengthCodec {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        let Some(header) = buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header) as usize;
        if len > self.max_frame_size {
            return Err(frame_too_large(self.max_frame_size));
        }
        if buf.len() < 4 + len {
            // Room for the rest at once, rather than growing by each read; for a frame past
            // RESERVE_AHEAD, room as its bytes come: a header alone (under a max_frame_size raised
            // to gigabytes) must not make the process allocate, or abort when it cannot.
            buf.reserve((4 + len - buf.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        buf.advance(4);
        Ok(Some(buf.split_to(len)))
    }
}

fn frame_too_large(limit: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("frame larger than max_frame_size ({limit} bytes)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(framing: &Framing, chunks: &[&[u8]], max: usize) -> io::Result<Vec<Vec<u8>>> {
        let mut decoder = framing.decoder(max).unwrap();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(frame) = decoder.next_frame(&mut buf)? {
                out.push(frame.to_vec());
            }
        }
        Ok(out)
    }

    #[test]
    fn lines_split_across_reads_and_crlf() {
        let got = frames(&Framing::Line, &[b"ab", b"c\r\nde", b"f\n\n"], 100).unwrap();
        assert_eq!(got, vec![b"abc".to_vec(), b"def".to_vec(), b"".to_vec()]);
    }

    #[test]
    fn raw_read_between_searches_restarts_the_search() {
        let mut decoder = Framing::Line.decoder(100);
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        assert!(decoder.as_mut().unwrap().next_frame(&mut buf).unwrap().is_none());
        assert_eq!(&take_front(&mut buf, &mut decoder, 4)[..], b"abcd");
        buf.extend_from_slice(b"x\n");
        let frame = decoder.as_mut().unwrap().next_frame(&mut buf).unwrap();
        assert_eq!(frame.as_deref(), Some(&b"efx"[..]));
    }

    #[test]
    fn multi_byte_delimiter_split_across_reads() {
        let framing = Framing::Delimiter(b"END".to_vec());
        let got = frames(&framing, &[b"oneE", b"N", b"Dtwo", b"EN", b"D"], 100).unwrap();
        assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn length_prefix_round_trip() {
        let framing = Framing::Length;
        let wire = [framing.encoded(b"hello").unwrap(), framing.encoded(b"").unwrap()].concat();
        let got = frames(&framing, &[&wire[..3], &wire[3..]], 100).unwrap();
        assert_eq!(got, vec![b"hello".to_vec(), b"".to_vec()]);
    }

    #[test]
    fn a_frame_of_the_largest_size_passes_however_its_delimiter_is_split() {
        let framing = Framing::Delimiter(b"END".to_vec());
        let got = frames(&framing, &[b"0123456789EN", b"D"], 10).unwrap();
        assert_eq!(got, vec![b"0123456789".to_vec()]);
        assert!(frames(&framing, &[b"0123456789xEN"], 10).is_err());
    }

    #[test]
    fn a_line_of_the_largest_size_passes_with_crlf_however_it_is_split() {
        for chunks in [&[&b"abcd\r\n"[..]][..], &[b"abcd\r", b"\n"], &[b"abcd", b"\r", b"\n"]] {
            assert_eq!(frames(&Framing::Line, chunks, 4).unwrap(), vec![b"abcd".to_vec()]);
        }
        assert!(frames(&Framing::Line, &[b"abcde\r\n"], 4).is_err());
        assert!(frames(&Framing::Line, &[b"abcde"], 4).is_err());
        assert!(frames(&Framing::Line, &[b"abcd\rx"], 4).is_err());
    }

    #[test]
    fn a_length_header_stays_buffered_until_its_frame_is_whole() {
        let mut decoder = Framing::Length.decoder(100).unwrap();
        let mut buf = BytesMut::from(&[0, 0, 0, 5][..]);
        assert!(decoder.next_frame(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), 4);
    }

    #[test]
    fn a_buffer_emptied_after_a_search_or_an_error_is_searched_from_its_start() {
        let mut decoder = Framing::Line.decoder(8).unwrap();
        let mut buf = BytesMut::from(&b"abcd"[..]);
        assert!(decoder.next_frame(&mut buf).unwrap().is_none());
        buf.clear();
        assert!(decoder.next_frame(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"0123456789");
        assert!(decoder.next_frame(&mut buf).is_err());
        buf.clear();
        buf.extend_from_slice(b"ok\n");
        assert_eq!(decoder.next_frame(&mut buf).unwrap().as_deref(), Some(&b"ok"[..]));
    }

    #[test]
    fn oversized_frames_are_rejected_before_they_arrive() {
        assert!(frames(&Framing::Line, &[&[b'x'; 11]], 10).is_err());
        let huge_header = 0xFFFF_FFFFu32.to_be_bytes();
        assert!(frames(&Framing::Length, &[&huge_header], 1024).is_err());
    }
}
