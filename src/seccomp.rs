// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Seccomp filters per thread kind, on rust-vmm's seccompiler: what a vCPU thread, the
//! I/O thread and the API thread may ask of the host kernel once the guest runs.
//!
//! A thread takes its filter just before the guest can reach it: a vCPU thread before
//! its first `KVM_RUN`, the I/O thread once the vCPUs are started, before its loop, the
//! API thread before it accepts its first connection. A
//! disk's worker is started by the vCPU thread whose MMIO write activated the disk,
//! and keeps that thread's filter, which therefore allows the worker's storage calls
//! too. A system call outside a thread's list does not return: the kernel raises
//! SIGSYS, whose handler names the call on stderr and ends the process with status
//! 159 ([`SECCOMP_VIOLATION_STATUS`]). Killing, not failing the call with `EPERM`: a
//! thread that asks for what it never needs has been taken over, and must not be left
//! to probe what else it may do.
//!
//! The lists are what `strace -f -ff` shows each kind of thread doing in the runner's
//! tests and in the hardware-assisted tier (a Linux guest with every device), grouped
//! as below; a call glibc or std starts making in a new version makes the runner's
//! tests and the sandbox tier fail in CI with the call's number, not a user's VM.

use std::collections::BTreeMap;
use std::sync::Once;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// What a filter does with a system call outside its list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SeccompPolicy {
    /// No filter (the library's default: a VMM confines its own threads).
    #[default]
    Off,
    /// The call never returns: SIGSYS, a line naming it, and the process ends
    /// (Cloud Hypervisor's `--seccomp true`).
    Enforce,
    /// The call goes ahead and the kernel logs it (`--seccomp log`), to find what a
    /// list lacks.
    Log,
}

/// The kinds of thread a kvmkit VMM runs once the guest does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ThreadKind {
    /// A vCPU thread (and the disk workers it starts).
    Vcpu,
    /// The I/O thread: the event loop, devices, consoles, signals, the end-of-run
    /// report.
    Io,
    /// The API thread (`kvmkit_api::ApiServer`): accepts and answers on its Unix
    /// socket, and asks the VM through `VmControl` and the shutdown event.
    Api,
}

/// The status a process ends with when a thread makes a system call its filter does
/// not allow: 128 + SIGSYS.
pub const SECCOMP_VIOLATION_STATUS: i32 = 128 + libc::SIGSYS;

/// What every thread does: memory, futexes, signals, its own end.
const EVERY_THREAD: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_close,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_futex,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_madvise,
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_munmap,
    libc::SYS_read,
    libc::SYS_rseq,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_set_robust_list,
    libc::SYS_sigaltstack,
    libc::SYS_write,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
];

/// A vCPU thread: `KVM_RUN` and the other KVM ioctls of its exits; what its MMIO
/// writes start (a virtio device's notifiers and event sources: `eventfd2`, `fcntl`
/// duplicates; a tap's offloads; a disk's worker thread: `clone3`/`clone`, `prctl` for
/// its name); and the worker's storage calls, which it inherits.
const VCPU: &[i64] = &[
    libc::SYS_ioctl,
    libc::SYS_eventfd2,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_prctl,
    libc::SYS_getrandom,
    // A disk's worker.
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    libc::SYS_poll,
    libc::SYS_ppoll,
];

/// The I/O thread: epoll, the devices it serves (tap and socket backends, `getrandom`
/// for rng), kicking the vCPUs (`tgkill`), the terminal (`ioctl`), Ctrl-Z (`kill`), and
/// after the guest, the memory report (`/proc/self/smaps`, the hugepage pools' sysfs
/// directory and KSM's counters: `openat`, `getdents64`, `statx`, `lseek`, `mincore`;
/// the report only reads, but the filter does not yet check `openat`'s flags).
const IO: &[i64] = &[
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_getrandom,
    libc::SYS_tgkill,
    libc::SYS_kill,
    libc::SYS_ioctl,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_openat,
    libc::SYS_statx,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_lseek,
    libc::SYS_mincore,
    libc::SYS_getdents64,
    // A snapshot's files: the memory file sized and written sparse, both synced and
    // renamed into place.
    libc::SYS_ftruncate,
    libc::SYS_pwrite64,
    libc::SYS_fsync,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
];

const API: &[i64] = &[
    libc::SYS_accept4,
    // Its own socket, removed as it ends.
    libc::SYS_unlink,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_ioctl,
    libc::SYS_fcntl,
];

/// The filter of `kind` under `policy`, or `None` for [`SeccompPolicy::Off`].
pub fn filter(
    kind: ThreadKind,
    policy: SeccompPolicy,
) -> Result<Option<BpfProgram>, seccompiler::BackendError> {
    let mismatch = match policy {
        SeccompPolicy::Off => return Ok(None),
        SeccompPolicy::Enforce => SeccompAction::Trap,
        SeccompPolicy::Log => SeccompAction::Log,
    };
    let own = match kind {
        ThreadKind::Vcpu => VCPU,
        ThreadKind::Io => IO,
        ThreadKind::Api => API,
    };
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = EVERY_THREAD
        .iter()
        .chain(own)
        .map(|&call| (call, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)?;
    Ok(Some(filter.try_into()?))
}

/// Confines the calling thread with `program`, after making sure a violation is
/// reported (see the [module](self)).
pub fn apply(program: &BpfProgram) -> std::io::Result<()> {
    report_violations();
    seccompiler::apply_filter(program).map_err(std::io::Error::other)
}

/// Installs the SIGSYS handler that names a forbidden call and ends the process.
fn report_violations() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: sigaction is plain data; all-zero is a valid value, then filled in.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_violation as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        // SAFETY: installs a handler that only writes to stderr and exits, both
        // async-signal-safe, for a signal nothing else in kvmkit handles.
        unsafe { libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) };
    });
}

/// The SIGSYS handler: "kvmkit: seccomp: forbidden system call N" and `_exit`.
extern "C" fn on_violation(_signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // The system call's number: `si_syscall` of the SIGSYS layout, after si_signo,
    // si_errno, si_code, padding and si_call_addr (x86-64).
    // SAFETY: the kernel hands a valid siginfo_t for SIGSYS; the read stays inside it.
    let call = unsafe { info.cast::<u8>().add(24).cast::<i32>().read_unaligned() };
    let mut line = *b"kvmkit: seccomp: forbidden system call           \n";
    let mut digits = [0u8; 12];
    let mut n = call.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = b"kvmkit: seccomp: forbidden system call ".len();
    for (slot, digit) in line[start..].iter_mut().zip(digits[..len].iter().rev()) {
        *slot = *digit;
    }
    // SAFETY: write and _exit are async-signal-safe, and every filter allows them.
    unsafe {
        libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), line.len());
        libc::_exit(SECCOMP_VIOLATION_STATUS);
    }
}
