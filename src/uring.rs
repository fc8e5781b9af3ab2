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

use crate::runtime;

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
    /// The process the ring was set up in (`runtime::fork_generation`). A forked child inherits the
    /// thread's ring, but its queues are memory shared with the parent's: what the child queued, the
    /// parent would submit as its own.
    generation: u64,
}

thread_local! {
    static RING: RefCell<Ring> = const { RefCell::new(Ring::Untried) };
}

/// The most one send takes (the kernel's MAX_RW_COUNT); a longer buffer is sent in part.
const MOST_PER_SEND: usize = 0x7fff_f000;

/// Whether this thread can batch sends, setting up its ring the first time it is asked.
pub fn available() -> bool {
    RING.with_borrow_mut(|ring| usable(ring).is_some())
}

/// This thread's ring, set up if not tried yet; None where io_uring cannot be used.
fn usable(ring: &mut Ring) -> Option<&mut Batcher> {
    if let Ring::Ready(batcher) = ring
        && batcher.generation != runtime::fork_generation()
    {
        // A forked child's copy of the thread: it must not queue on the parent's ring. Dropping it
        // unmaps only this process's view and closes only its descriptor.
        *ring = Ring::Unavailable;
    }
    if let Ring::Untried = ring {
        *ring = match Batcher::new() {
            Ok(batcher) => Ring::Ready(Box::new(batcher)),
            // A process short of descriptors or memory for a while: the next batch tries again.
            Err(err) if matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)) => {
                return None;
            }
            Err(_) => Ring::Unavailable,
        };
    }
    match ring {
        Ring::Ready(batcher) => Some(batcher),
        _ => None,
    }
}

/// Makes every send in `sends`, each on its own socket, and pushes its result onto `results` in the
/// same order: the bytes the socket took (possibly fewer than offered), or the error, WouldBlock
/// when it had no room. Returns false, having sent nothing, where io_uring cannot be used.
pub fn send_each(sends: &[Send<'_>], results: &mut Vec<io::Result<usize>>) -> bool {
    RING.with_borrow_mut(|ring| {
        if usable(ring).is_none() {
            return false;
        }
        // Out of its cell while in use: should anything below fail or panic, the ring is dropped
        // and stays unavailable, so that no send it queued without submitting ever runs later.
        let Ring::Ready(mut batcher) = std::mem::replace(ring, Ring::Unavailable) else {
            unreachable!("usable() returned the ring");
        };
        let first = results.len();
        for chunk in sends.chunks(RING_ENTRIES as usize) {
            if batcher.send_chunk(chunk, results).is_err() {
                // The ring itself failed, not a send: sends it never made are reported as taking
                // nothing, which their callers' tasks then retry one by one, as they will every
                // later batch.
                results.resize_with(first + sends.len(), || Ok(0));
                return true;
            }
        }
        *ring = Ring::Ready(batcher);
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
            generation: runtime::fork_generation(),
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
                    [one] => {
                        let len = one.len().min(MOST_PER_SEND) as u32;
                        opcode::Send::new(types::Fd(send.fd), one.as_ptr(), len)
                            .flags(flags)
                            .build()
                    }
                    _ => opcode::SendMsg::new(types::Fd(send.fd), header)
                        .flags(flags as u32)
                        .build(),
                };
                // SAFETY: the buffers and headers outlive the sends: this function waits below for
                // every one of them to complete before it returns.
                if unsafe { queue.push(&entry.user_data(index as u64)) }.is_err() {
                    // Cannot happen (a chunk fits the ring, empty at the start); the caller drops
                    // the ring, so what was queued is never submitted.
                    return Err(io::ErrorKind::OutOfMemory.into());
                }
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
                let index = entry.user_data() as usize;
                if index >= sends.len() {
                    continue; // not one of these sends: nothing else is ever queued
                }
                let result = entry.result();
                results[first + index] = if result >= 0 {
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
    fn a_forked_child_leaves_the_parents_ring_alone() {
        let mut pairs = pairs(1);
        let first = [IoSlice::new(b"parent")];
        if send_all(&[&pairs[0].0], &[&first]).is_none() {
            return;
        }
        // SAFETY: the child only makes a batch and exits, without unwinding into the test harness.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut results = Vec::new();
            let child = [IoSlice::new(b"child")];
            let batched = send_each(
                &[Send {
                    fd: pairs[0].0.as_raw_fd(),
                    data: &child,
                }],
                &mut results,
            );
            // SAFETY: ends the child at once, as a forked child of a threaded process should.
            unsafe { libc::_exit(i32::from(batched)) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "the child did not exit: {status}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "the child batched on the ring it inherited"
        );
        // Nothing the child did reaches the parent's next batch.
        let second = [IoSlice::new(b" again")];
        let results = send_all(&[&pairs[0].0], &[&second]).expect("the parent's ring still works");
        assert_eq!(*results[0].as_ref().unwrap(), 6);
        let reader = &mut pairs[0].1;
        assert_eq!(read_exactly(reader, 12), b"parent again");
        reader
            .set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .unwrap();
        assert!(reader.read(&mut [0; 16]).is_err(), "more arrived than the parent sent");
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
