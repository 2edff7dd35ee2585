// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Per-vCPU exit counters.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// The reasons exits are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExitReason {
    /// Port read handed to userspace.
    PioRead,
    /// Port write handed to userspace.
    PioWrite,
    /// MMIO read handed to userspace.
    MmioRead,
    /// MMIO write handed to userspace.
    MmioWrite,
    /// `hlt` in userspace.
    Hlt,
    /// Triple fault.
    Shutdown,
    /// Power event.
    SystemEvent,
    /// Hypercall in userspace.
    Hypercall,
    /// Kick or signal.
    Interrupted,
    /// Anything else, including errors.
    Other,
}

impl ExitReason {
    /// Every reason, in display order.
    pub const ALL: [ExitReason; 10] = [
        ExitReason::PioRead,
        ExitReason::PioWrite,
        ExitReason::MmioRead,
        ExitReason::MmioWrite,
        ExitReason::Hlt,
        ExitReason::Shutdown,
        ExitReason::SystemEvent,
        ExitReason::Hypercall,
        ExitReason::Interrupted,
        ExitReason::Other,
    ];

    /// A short lowercase name, as printed.
    pub fn name(self) -> &'static str {
        match self {
            ExitReason::PioRead => "pio_read",
            ExitReason::PioWrite => "pio_write",
            ExitReason::MmioRead => "mmio_read",
            ExitReason::MmioWrite => "mmio_write",
            ExitReason::Hlt => "hlt",
            ExitReason::Shutdown => "shutdown",
            ExitReason::SystemEvent => "system_event",
            ExitReason::Hypercall => "hypercall",
            ExitReason::Interrupted => "interrupted",
            ExitReason::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Live exit counters of one vCPU, and when it first entered the guest.
///
/// Only the vCPU's own thread writes them, so an increment is a plain load and store
/// (no locked instruction on the exit path); any thread may read them at any time.
#[derive(Debug, Default)]
pub struct ExitStats {
    counts: [AtomicU64; ExitReason::ALL.len()],
    first_run: OnceLock<Instant>,
}

impl ExitStats {
    /// Notes that the vCPU is about to enter the guest (kept the first time only).
    #[inline]
    pub(crate) fn note_first_run(&self) {
        self.first_run.get_or_init(Instant::now);
    }

    /// When the vCPU first entered the guest ([`Vcpu::run`](crate::Vcpu::run)), if it
    /// has.
    pub fn first_run_at(&self) -> Option<Instant> {
        self.first_run.get().copied()
    }

    /// Counts one exit. Must only be called from the thread that runs the vCPU.
    #[inline]
    pub(crate) fn record(&self, reason: ExitReason) {
        let counter = &self.counts[reason.index()];
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// A copy of the counters as they are now.
    pub fn snapshot(&self) -> ExitCounts {
        let mut counts = [0; ExitReason::ALL.len()];
        for (out, counter) in counts.iter_mut().zip(&self.counts) {
            *out = counter.load(Ordering::Relaxed);
        }
        ExitCounts { counts }
    }
}

/// Exit counts of one vCPU at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExitCounts {
    counts: [u64; ExitReason::ALL.len()],
}

impl ExitCounts {
    /// Exits counted for `reason`.
    pub fn get(&self, reason: ExitReason) -> u64 {
        self.counts[reason.index()]
    }

    /// All exits counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl fmt::Display for ExitCounts {
    /// Prints the non-zero counters as `name=count` pairs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for reason in ExitReason::ALL {
            let count = self.get(reason);
            if count > 0 {
                if !first {
                    f.write_str(" ")?;
                }
                write!(f, "{}={}", reason.name(), count)?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_exits_show_up_in_the_snapshot_by_reason() {
        let stats = ExitStats::default();

        stats.record(ExitReason::PioWrite);
        stats.record(ExitReason::PioWrite);
        stats.record(ExitReason::Hlt);
        let counts = stats.snapshot();

        assert_eq!(counts.get(ExitReason::PioWrite), 2);
        assert_eq!(counts.get(ExitReason::Hlt), 1);
        assert_eq!(counts.get(ExitReason::MmioRead), 0);
        assert_eq!(counts.total(), 3);
        assert_eq!(counts.to_string(), "pio_write=2 hlt=1");
    }

    #[test]
    fn empty_counts_display_as_none() {
        assert_eq!(ExitCounts::default().to_string(), "none");
    }
}
