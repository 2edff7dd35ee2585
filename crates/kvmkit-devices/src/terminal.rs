// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The host terminal in raw input mode for a guest console, always restored.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Puts a terminal in raw input mode (no line editing, no echo, no signals from keys)
/// while it lives, and restores the saved settings when dropped: at the VM's end, on
/// an error return and while unwinding a panic. Ctrl-C, Ctrl-Z and Ctrl-\\ are bytes
/// for the guest (its shell interrupts its own `ping`), as in QEMU and Cloud
/// Hypervisor; the VMM ends on the escape key of
/// [`add_terminal_input`](crate::EventLoop::add_terminal_input), or on a signal sent
/// from outside. A SIGTSTP sent from outside suspends the VMM with the terminal
/// restored ([`suspend`](Self::suspend)).
#[derive(Debug)]
pub struct RawTerminal<'fd> {
    fd: BorrowedFd<'fd>,
    saved: libc::termios,
    raw: libc::termios,
}

impl<'fd> RawTerminal<'fd> {
    /// Switches `fd` to raw input mode; `Ok(None)` if it is not a terminal.
    pub fn enable(fd: BorrowedFd<'fd>) -> io::Result<Option<Self>> {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(fd.as_raw_fd()) } != 1 {
            return Ok(None);
        }
        // SAFETY: termios is plain data; tcgetattr fills it.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is a terminal and `saved` a valid out-pointer.
        if unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = saved;
        raw.c_iflag &= !(libc::ICRNL | libc::IXON | libc::INLCR | libc::IGNCR);
        raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ECHONL | libc::IEXTEN | libc::ISIG);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        let terminal = RawTerminal { fd, saved, raw };
        terminal.apply(&raw)?;
        Ok(Some(terminal))
    }

    fn apply(&self, settings: &libc::termios) -> io::Result<()> {
        // SAFETY: `self.fd` is a terminal (checked in `enable`), borrowed for the
        // guard's life, and `settings` a valid termios read from it.
        if unsafe { libc::tcsetattr(self.fd.as_raw_fd(), libc::TCSANOW, settings) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Restores the saved settings, stops the whole VMM process (as Ctrl-Z does), and
    /// once it is continued (`fg`), puts the terminal back in raw mode.
    pub fn suspend(&self) -> io::Result<()> {
        self.apply(&self.saved)?;
        // SAFETY: raise only sends SIGSTOP to this process; it returns once continued.
        unsafe { libc::raise(libc::SIGSTOP) };
        self.apply(&self.raw)
    }
}

impl Drop for RawTerminal<'_> {
    fn drop(&mut self) {
        // Nothing more can be done if the terminal refuses while tearing down.
        let _ = self.apply(&self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::fd::RawFd;

    fn borrow(fd: RawFd) -> BorrowedFd<'static> {
        // SAFETY: the tests close their descriptors only after the guards are gone.
        unsafe { BorrowedFd::borrow_raw(fd) }
    }

    /// A pseudo-terminal pair: (controller, terminal).
    fn pty() -> (RawFd, RawFd) {
        let (mut controller, mut terminal) = (0, 0);
        // SAFETY: openpty writes two descriptors to the out-pointers; the name,
        // termios and window-size arguments may be null.
        let ret = unsafe {
            libc::openpty(
                &mut controller,
                &mut terminal,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(ret, 0, "openpty: {}", io::Error::last_os_error());
        (controller, terminal)
    }

    fn settings(fd: RawFd) -> libc::termios {
        // SAFETY: termios is plain data; tcgetattr fills it for a terminal fd.
        let mut termios: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::tcgetattr(fd, &mut termios) }, 0);
        termios
    }

    #[test]
    fn raw_mode_turns_off_line_editing_echo_and_key_signals_and_is_undone_on_drop() {
        let (controller, terminal) = pty();
        let before = settings(terminal);

        let raw = RawTerminal::enable(borrow(terminal))
            .unwrap()
            .expect("a pty is a terminal");
        let during = settings(terminal);
        drop(raw);
        let after = settings(terminal);

        assert_ne!(before.c_lflag & libc::ICANON, 0);
        assert_eq!(during.c_lflag & (libc::ICANON | libc::ECHO), 0);
        assert_eq!(
            during.c_lflag & libc::ISIG,
            0,
            "Ctrl-C must reach the guest, not raise SIGINT"
        );
        assert_eq!(after.c_lflag, before.c_lflag);
        assert_eq!(after.c_iflag, before.c_iflag);
        // SAFETY: both descriptors were opened by openpty and are closed once.
        unsafe {
            libc::close(controller);
            libc::close(terminal);
        }
    }

    #[test]
    fn terminal_is_restored_when_a_panic_unwinds_past_the_guard() {
        let (controller, terminal) = pty();
        let before = settings(terminal);

        let result = std::panic::catch_unwind(|| {
            let _raw = RawTerminal::enable(borrow(terminal)).unwrap();
            panic!("a device model bug");
        });

        assert!(result.is_err());
        assert_eq!(settings(terminal).c_lflag, before.c_lflag);
        // SAFETY: as above.
        unsafe {
            libc::close(controller);
            libc::close(terminal);
        }
    }

    #[test]
    fn a_pipe_is_not_a_terminal() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe returns.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);

        let raw = RawTerminal::enable(borrow(fds[0])).unwrap();

        assert!(raw.is_none());
        // SAFETY: both descriptors were opened above and are closed once.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
