// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Waiting for one descriptor, outside an event loop: [`wait_readable`] and
//! [`wait_writable`].

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// Waits at most `timeout` (zero: not at all) for `fd` to be readable, hung up or in
/// error, so that a read of it does not block; whether it is.
///
/// ```
/// use std::time::Duration;
/// use kvmkit_devices::{event_fd, wait_readable};
/// use vmm_sys_util::eventfd::EventFd;
///
/// let event = EventFd::new(0).unwrap();
/// assert!(!wait_readable(event_fd(&event), Duration::ZERO));
/// event.write(1).unwrap();
/// assert!(wait_readable(event_fd(&event), Duration::ZERO));
/// ```
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    poll(fd, libc::POLLIN, timeout) != 0
}

/// Waits at most `timeout` for `fd` to take a write without blocking; whether it
/// does. A pipe whose reader hung up takes one at once (the write then fails).
pub fn wait_writable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    poll(fd, libc::POLLOUT, timeout) & libc::POLLOUT != 0
}

/// The events of `fd` after waiting at most `timeout` for `events`: none when the time
/// ran out (or the wait failed).
fn poll(fd: BorrowedFd<'_>, events: libc::c_short, timeout: Duration) -> libc::c_short {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd for a descriptor borrowed for the call.
    match unsafe { libc::poll(&mut pollfd, 1, millis) } {
        1 => pollfd.revents,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_loop::tests::pipe;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn a_pipe_whose_writer_hung_up_reads_as_readable() {
        let (reader, writer) = pipe();
        let before = wait_readable(reader.as_fd(), Duration::ZERO);

        drop(writer);

        assert!(!before);
        assert!(wait_readable(reader.as_fd(), Duration::ZERO));
    }

    #[test]
    fn a_full_pipe_is_not_writable_until_its_reader_drains_it() {
        let (mut reader, mut writer) = pipe();
        // SAFETY: sets a flag of a descriptor this test owns.
        unsafe { libc::fcntl(writer.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        while writer.write(&[0u8; 4096]).is_ok() {}
        let full = wait_writable(writer.as_fd(), Duration::from_millis(10));

        std::io::Read::read_exact(&mut reader, &mut [0u8; 65536]).unwrap();

        assert!(!full);
        assert!(wait_writable(writer.as_fd(), Duration::ZERO));
    }

    #[test]
    fn a_pipe_whose_reader_hung_up_is_writable_and_the_write_fails() {
        let (reader, mut writer) = pipe();

        drop(reader);

        assert!(wait_writable(writer.as_fd(), Duration::ZERO));
        // Rust's runtime ignores SIGPIPE: the write returns EPIPE.
        assert!(writer.write(b"x").is_err());
    }
}
