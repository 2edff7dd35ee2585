// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The signals that end a VMM, read on the I/O thread instead of killing it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::sync::Arc;

use crate::event_loop::READABLE;
use crate::{EventLoop, Flow, RawTerminal, ShutdownReason};

impl EventLoop {
    /// Ends the VM with [`ShutdownReason::Signal`] when `signals` delivers SIGINT,
    /// SIGTERM, SIGHUP or SIGQUIT; on SIGTSTP (Ctrl-Z) suspends the VMM with
    /// `terminal` restored, if there is one.
    pub fn add_termination_signals(
        &mut self,
        signals: Arc<TerminationSignals>,
        terminal: Option<Arc<RawTerminal<'static>>>,
    ) -> io::Result<()> {
        let shutdown = Arc::clone(self.shutdown());
        let watched = signals.as_fd().try_clone_to_owned()?;
        self.add_owned(
            watched,
            READABLE,
            None,
            Box::new(move || {
                while let Some(signo) = signals.read() {
                    if signo == libc::SIGTSTP {
                        match &terminal {
                            Some(terminal) => {
                                let _ = terminal.suspend();
                            }
                            // SAFETY: raise only stops this process until it is continued.
                            None => unsafe {
                                libc::raise(libc::SIGSTOP);
                            },
                        }
                    } else {
                        shutdown.request(ShutdownReason::Signal(signo));
                    }
                }
                Flow::Continue
            }),
        )
    }
}

/// The signals [`TerminationSignals`] takes over: the four that end a VMM and Ctrl-Z.
pub const TERMINATION_SIGNALS: [i32; 5] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGTSTP,
];

/// SIGINT, SIGTERM, SIGHUP, SIGQUIT and SIGTSTP, blocked in the calling thread (and
/// every thread it starts afterwards, such as vCPU threads) and read from a signalfd
/// by the event loop instead, so that each ends the VM in order (or, for SIGTSTP,
/// suspends it) with the terminal restored. Dropping it discards what is still
/// pending, so a second Ctrl-C during the shutdown does not kill the process later,
/// and unblocks them again in the calling thread.
#[derive(Debug)]
pub struct TerminationSignals {
    fd: RawFd,
    old_mask: libc::sigset_t,
}

impl TerminationSignals {
    /// Blocks the [`TERMINATION_SIGNALS`] in this thread and opens a signalfd for them.
    /// Call it before starting vCPU threads so that they inherit the block.
    pub fn block() -> io::Result<Self> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset below.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` and `old_mask` are valid sigset_t values; the signal numbers
        // are valid.
        let ret = unsafe {
            libc::sigemptyset(&mut set);
            for signal in TERMINATION_SIGNALS {
                libc::sigaddset(&mut set, signal);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old_mask)
        };
        if ret != 0 {
            return Err(io::Error::from_raw_os_error(ret));
        }
        // SAFETY: `set` is a valid signal set; -1 asks for a new descriptor.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            let error = io::Error::last_os_error();
            // SAFETY: restores the mask saved above.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
            return Err(error);
        }
        Ok(TerminationSignals { fd, old_mask })
    }

    /// The pending signal's number, if one is pending.
    pub fn read(&self) -> Option<i32> {
        // SAFETY: signalfd_siginfo is plain data.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `size` bytes into `info`.
        let read = unsafe {
            libc::read(
                self.fd,
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        (read == size as isize).then_some(info.ssi_signo as i32)
    }
}

impl AsFd for TerminationSignals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the signalfd stays open until this value is dropped.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

impl Drop for TerminationSignals {
    fn drop(&mut self) {
        // Signals that arrived after the last read (a second Ctrl-C while the VM shut
        // down) would be delivered with their default action, killing the process,
        // as soon as the mask is restored: they were handled already, drop them.
        while self.read().is_some() {}
        // SAFETY: closes the signalfd opened in `block` and restores the saved mask.
        unsafe {
            libc::close(self.fd);
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LoopEnd, VmShutdown};

    fn raise_in_this_thread(signal: i32) {
        // SAFETY: sends `signal` to this thread, which has it blocked.
        let sent = unsafe { libc::pthread_kill(libc::pthread_self(), signal) };
        assert_eq!(sent, 0);
    }

    #[test]
    fn a_second_signal_pending_when_the_guard_drops_is_discarded_not_delivered() {
        let signals = TerminationSignals::block().unwrap();
        raise_in_this_thread(libc::SIGQUIT);
        let first = signals.read();
        // The second Ctrl-\ arrives while the VM shuts down: with the default action
        // restored it would kill this test process.
        raise_in_this_thread(libc::SIGQUIT);

        drop(signals);

        assert_eq!(first, Some(libc::SIGQUIT));
    }

    #[test]
    fn sighup_and_sigquit_end_the_vm_in_order() {
        let signals = Arc::new(TerminationSignals::block().unwrap());
        let shutdown = Arc::new(VmShutdown::new().unwrap());
        let mut event_loop = EventLoop::new(shutdown).unwrap();
        event_loop.add_termination_signals(signals, None).unwrap();

        raise_in_this_thread(libc::SIGHUP);
        let end = event_loop.run().unwrap();

        assert_eq!(
            end,
            LoopEnd::Requested(ShutdownReason::Signal(libc::SIGHUP))
        );
    }
}
