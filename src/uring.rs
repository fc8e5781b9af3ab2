//! Sends to many sockets in one syscall, through io_uring.
//!
//! A chat room's line goes to every peer: one send(2) each, and for a short line the syscall's own
//! entry, exit and file lookup are a tenth of the work. Worse, each send wakes a reader, and the
//! scheduler may hand the CPU to it on the way back to user space, in the middle of the fan-out.
//! Queued on an io_uring, the sends all run inside one `io_uring_enter`: one entry and exit, and no
//! return to user space for a woken reader to preempt.
//!
//! Every send carries MSG_DONTWAIT, so the kernel makes it at once or reports EAGAIN, never
//! waiting for room: `send_each` returns only when all have completed, while the caller still holds
//! the buffers. Where io_uring is missing or forbidden (old kernels, seccomp filters, the
//! `kernel.io_uring_disabled` sysctl), or where the environment variable RSOCK_IO_URING is 0,
//! `send_each` says so and the caller sends one by one.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;

use io_uring::{IoUring, opcode, types};

/// Sends queued per `io_uring_enter`; a larger fan-out goes in several.
const RING_ENTRIES: u32 = 256;

/// One socket's part of a batch: what to send on it, in order.
pub struct Send<'a> {
    pub fd: RawFd,
    pub data: &'a [IoSlice<'a>],
}

enum Ring {
    Untried,
    Unavailable,
    Ready(Box<Batcher>),
}

struct Batcher {
    ring: IoUring,
    /// The message headers of the multi-buffer sends in flight: the kernel reads them when it runs
    /// the send, so they live here, not on a stack frame that could be gone by then.
    headers: Vec<libc::msghdr>,
}

thread_local! {
    /// This thread's ring. A forked child's copy of the thread keeps the parent's, but never uses it:
    /// only the io thread's flusher batches sends, and the copy is not the child's io thread (runtime.rs).
    static RING: RefCell<Ring> = const { RefCell::new(Ring::Untried) };
}

/// Makes every send in `sends`, each on its own socket, and pushes its result onto `results` in the
/// same order: the bytes the socket took (possibly fewer than offered), or the error, WouldBlock
/// when it had no room. Returns false, having sent nothing, where io_uring cannot be used.
pub fn send_each(sends: &[Send<'_>], results: &mut Vec<io::Result<usize>>) -> bool {
    RING.with_borrow_mut(|ring| {
        if let Ring::Untried = ring {
            *ring = match Batcher::new() {
                Ok(batcher) => Ring::Ready(Box::new(batcher)),
                Err(_) => Ring::Unavailable,
            };
        }
        let Ring::Ready(batcher) = ring else {
            return false;
        };
        for chunk in sends.chunks(RING_ENTRIES as usize) {
            if batcher.send_chunk(chunk, results).is_err() {
                // The ring itself failed, not a send: sends it never made are reported as taking
                // nothing, which their callers' tasks then retry one by one, as they will every
                // later batch.
                results.resize_with(sends.len(), || Ok(0));
                *ring = Ring::Unavailable;
                break;
            }
        }
        true
    })
}

impl Batcher {
    fn new() -> io::Result<Batcher> {
        if std::env::var_os("RSOCK_IO_URING").is_some_and(|value| value == "0") {
            return Err(io::ErrorKind::Unsupported.into());
        }
        // Flags from Linux 6.0, which older kernels refuse: by then a send with MSG_DONTWAIT reliably
        // completes with EAGAIN instead of waiting for room, which `send_each` relies on not to block.
        // Only this thread submits, and it always waits for the completions itself.
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build(RING_ENTRIES)?;
        Ok(Batcher {
            ring,
            headers: Vec::with_capacity(RING_ENTRIES as usize),
        })
    }

    /// At most RING_ENTRIES sends, submitted together and waited for.
    fn send_chunk(&mut self, sends: &[Send<'_>], results: &mut Vec<io::Result<usize>>) -> io::Result<()> {
        let first = results.len();
        self.headers.clear();
        self.headers.extend(sends.iter().map(|send| {
            // SAFETY: an all-zero msghdr is a valid empty one.
            let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
            // IoSlice is ABI-compatible with iovec; sendmsg only reads through the pointer.
            header.msg_iov = send.data.as_ptr() as *mut libc::iovec;
            header.msg_iovlen = send.data.len() as _;
            header
        }));
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        {
            let mut queue = self.ring.submission();
            for (index, (send, header)) in sends.iter().zip(&self.headers).enumerate() {
                let entry = match send.data {
                    [one] => opcode::Send::new(types::Fd(send.fd), one.as_ptr(), one.len() as u32)
                        .flags(flags)
                        .build(),
                    _ => opcode::SendMsg::new(types::Fd(send.fd), header)
                        .flags(flags as u32)
                        .build(),
                };
                // SAFETY: the buffers and headers outlive the sends: this function waits below for
                // every one of them to complete before it returns.
                unsafe { queue.push(&entry.user_data(index as u64)) }.expect("a chunk is no larger than the ring");
            }
        }
        // A send without a completion never ran: it took nothing.
        results.extend(sends.iter().map(|_| Ok(0)));
        let mut completed = 0;
        let mut outcome = Ok(());
        while completed < sends.len() && outcome.is_ok() {
            outcome = match self.ring.submit_and_wait(sends.len() - completed) {
                Err(err) if err.kind() != io::ErrorKind::Interrupted => Err(err),
                _ => Ok(()),
            };
            for entry in self.ring.completion() {
                let result = entry.result();
                results[first + entry.user_data() as usize] = if result >= 0 {
                    Ok(result as usize)
                } else {
                    Err(io::Error::from_raw_os_error(-result))
                };
                completed += 1;
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    /// `count` connected pairs: (the end sent on, nonblocking; the end read from).
    fn pairs(count: usize) -> Vec<(TcpStream, TcpStream)> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        (0..count)
            .map(|_| {
                let reader = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                let (sender, _) = listener.accept().unwrap();
                sender.set_nonblocking(true).unwrap();
                (sender, reader)
            })
            .collect()
    }

    /// `send_each`'s results for sending `data[i]` on `senders[i]`, or None where this machine does not
    /// allow io_uring (then nothing was sent, which is checked).
    fn send_all(senders: &[&TcpStream], data: &[&[IoSlice<'_>]]) -> Option<Vec<io::Result<usize>>> {
        let sends: Vec<Send<'_>> = senders
            .iter()
            .zip(data)
            .map(|(sender, data)| Send {
                fd: sender.as_raw_fd(),
                data,
            })
            .collect();
        let mut results = Vec::new();
        let batched = send_each(&sends, &mut results);
        assert_eq!(results.len(), if batched { sends.len() } else { 0 });
        batched.then_some(results)
    }

    fn read_exactly(reader: &mut TcpStream, len: usize) -> Vec<u8> {
        let mut data = vec![0; len];
        reader.read_exact(&mut data).unwrap();
        data
    }

    #[test]
    fn each_socket_gets_its_own_buffers_in_order() {
        let mut pairs = pairs(3);
        let several = [IoSlice::new(b"one "), IoSlice::new(b"two "), IoSlice::new(b"three")];
        let data: [&[IoSlice<'_>]; 3] = [&[IoSlice::new(b"first")], &several, &[IoSlice::new(b"third")]];
        let senders: Vec<&TcpStream> = pairs.iter().map(|(sender, _)| sender).collect();
        let Some(results) = send_all(&senders, &data) else {
            return;
        };
        let sent: Vec<usize> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(sent, [5, 13, 5]);
        assert_eq!(read_exactly(&mut pairs[0].1, 5), b"first");
        assert_eq!(read_exactly(&mut pairs[1].1, 13), b"one two three");
        assert_eq!(read_exactly(&mut pairs[2].1, 5), b"third");
    }

    #[test]
    fn a_full_socket_reports_would_block_at_once_and_the_others_still_send() {
        let mut pairs = pairs(2);
        let block = vec![7u8; 1 << 20];
        while (&pairs[0].0).write(&block).is_ok() {}
        let data = [IoSlice::new(&block[..100])];
        let Some(results) = send_all(&[&pairs[0].0, &pairs[1].0], &[&data, &data]) else {
            return;
        };
        assert_eq!(results[0].as_ref().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(*results[1].as_ref().unwrap(), 100);
        assert_eq!(read_exactly(&mut pairs[1].1, 100), &block[..100]);
    }

    #[test]
    fn a_reset_connection_reports_its_error() {
        let (sender, reader) = pairs(1).pop().unwrap();
        // Closed with no linger, the reader's end sends a reset.
        socket2::SockRef::from(&reader)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(reader);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let Some(results) = send_all(&[&sender], &[&[IoSlice::new(b"late")]]) else {
            return;
        };
        let code = results[0].as_ref().unwrap_err().raw_os_error();
        assert!(matches!(code, Some(libc::ECONNRESET | libc::EPIPE)), "{:?}", results[0]);
    }

    #[test]
    fn more_sockets_than_the_ring_holds_go_in_several_submissions() {
        let count = RING_ENTRIES as usize + 44;
        let mut pairs = pairs(count);
        let messages: Vec<Vec<u8>> = (0..count).map(|i| format!("message {i}").into_bytes()).collect();
        let slices: Vec<[IoSlice<'_>; 1]> = messages.iter().map(|m| [IoSlice::new(m)]).collect();
        let data: Vec<&[IoSlice<'_>]> = slices.iter().map(|s| s.as_slice()).collect();
        let senders: Vec<&TcpStream> = pairs.iter().map(|(sender, _)| sender).collect();
        let Some(results) = send_all(&senders, &data) else {
            return;
        };
        for (((_, reader), message), result) in pairs.iter_mut().zip(&messages).zip(results) {
            assert_eq!(result.unwrap(), message.len());
            assert_eq!(&read_exactly(reader, message.len()), message);
        }
    }
}
