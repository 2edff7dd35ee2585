// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! When a VM got where, as it started: the VMM's own steps (memory mapped, the kernel
//! loaded or a snapshot's state put back), the vCPUs' first entry into the guest, the
//! guest's first console byte and the moment the guest itself says its boot is
//! complete (Firecracker's boot timer), all measured from one origin.
//!
//! A [`Machine`](crate::Machine) keeps a [`Timeline`]: it marks its own steps, and
//! [`BootedMachine::run_on`](crate::BootedMachine::run_on) points it at the vCPUs'
//! counters, the platform's consoles and its boot timer, which note their first event
//! on their own threads at the cost of one atomic load. Give the builder a timeline
//! whose origin is the process's start ([`MachineBuilder::timeline`](crate::MachineBuilder::timeline))
//! to see what comes before the VM is built, and [`mark`](Timeline::mark) steps of
//! your own.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use kvmkit::timeline::{Milestone, Timeline};
//!
//! let timeline = Timeline::starting_at(Instant::now() - Duration::from_millis(5));
//! timeline.mark(Milestone::OptionsParsed);
//! let report = timeline.report();
//! assert!(report.get(Milestone::OptionsParsed).unwrap() >= Duration::from_millis(5));
//! assert_eq!(report.get(Milestone::FirstRun), None);
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kvmkit_devices::{BootTimer, ConsoleOutput};
use kvmkit_vcpu::ExitStats;

/// A point a VM's start gets to, in the order a boot usually reaches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Milestone {
    /// The VMM's options were parsed (marked by the VMM).
    OptionsParsed,
    /// A snapshot's state file was read and verified (marked by the VMM).
    SnapshotRead,
    /// Guest RAM was mapped and the VM and its vCPUs created.
    MemoryMapped,
    /// The kernel (or program) was loaded and the vCPUs set up to enter it.
    KernelLoaded,
    /// A snapshot's memory, VM and vCPU state were put back.
    StateRestored,
    /// The first vCPU entered the guest (`KVM_RUN`).
    FirstRun,
    /// The guest wrote its first byte to a console (COM1 or virtio-console).
    FirstConsoleByte,
    /// The guest said its boot is complete on the boot timer (its init ran, say).
    BootComplete,
}

impl Milestone {
    /// A short name, as printed.
    pub fn name(self) -> &'static str {
        match self {
            Milestone::OptionsParsed => "options-parsed",
            Milestone::SnapshotRead => "snapshot-read",
            Milestone::MemoryMapped => "memory-mapped",
            Milestone::KernelLoaded => "kernel-loaded",
            Milestone::StateRestored => "state-restored",
            Milestone::FirstRun => "first-kvm-run",
            Milestone::FirstConsoleByte => "first-console-byte",
            Milestone::BootComplete => "guest-boot-complete",
        }
    }
}

/// The milestones one VM's start reached, and when. Shared (`Arc`) between the VMM and
/// the machine; any thread may mark or report.
#[derive(Debug)]
pub struct Timeline {
    origin: Instant,
    inner: Mutex<Sources>,
}

/// What the timeline was told, and where it looks for the rest.
#[derive(Debug, Default)]
struct Sources {
    /// The VMM's steps, the first time each was reached.
    marks: Vec<(Milestone, Instant)>,
    vcpus: Vec<Arc<ExitStats>>,
    consoles: Vec<Arc<ConsoleOutput>>,
    boot_timer: Option<Arc<BootTimer>>,
}

impl Timeline {
    /// A timeline whose origin is now.
    pub fn new() -> Arc<Self> {
        Self::starting_at(Instant::now())
    }

    /// A timeline whose origin is `origin` (the process's start, say).
    pub fn starting_at(origin: Instant) -> Arc<Self> {
        Arc::new(Timeline {
            origin,
            inner: Mutex::new(Sources::default()),
        })
    }

    /// The instant every milestone is measured from.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    fn lock(&self) -> MutexGuard<'_, Sources> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that `milestone` was reached now. Only the first time counts: a reboot in
    /// place loads the kernel again without moving the boot's milestones.
    pub fn mark(&self, milestone: Milestone) {
        let now = Instant::now();
        let mut sources = self.lock();
        if !sources.marks.iter().any(|(m, _)| *m == milestone) {
            sources.marks.push((milestone, now));
        }
    }

    /// Takes [`Milestone::FirstRun`] from these vCPUs' counters.
    pub(crate) fn watch_vcpus(&self, vcpus: impl IntoIterator<Item = Arc<ExitStats>>) {
        self.lock().vcpus.extend(vcpus);
    }

    /// Takes [`Milestone::FirstConsoleByte`] from these consoles too.
    pub(crate) fn watch_consoles(&self, consoles: impl IntoIterator<Item = Arc<ConsoleOutput>>) {
        self.lock().consoles.extend(consoles);
    }

    /// Takes [`Milestone::BootComplete`] from `timer`.
    pub(crate) fn watch_boot_timer(&self, timer: Arc<BootTimer>) {
        self.lock().boot_timer = Some(timer);
    }

    /// The milestones reached so far, in the order they were reached.
    pub fn report(&self) -> TimelineReport {
        let sources = self.lock();
        let mut reached = sources.marks.clone();
        let derived = [
            (
                Milestone::FirstRun,
                sources.vcpus.iter().filter_map(|v| v.first_run_at()).min(),
            ),
            (
                Milestone::FirstConsoleByte,
                sources
                    .consoles
                    .iter()
                    .filter_map(|c| c.first_byte_at())
                    .min(),
            ),
            (
                Milestone::BootComplete,
                sources
                    .boot_timer
                    .as_ref()
                    .and_then(|t| t.boot_completed_at()),
            ),
        ];
        reached.extend(
            derived
                .into_iter()
                .filter_map(|(milestone, at)| Some((milestone, at?))),
        );
        reached.sort_by_key(|&(milestone, at)| (at, milestone));
        TimelineReport {
            reached: reached
                .into_iter()
                .map(|(milestone, at)| (milestone, at.saturating_duration_since(self.origin)))
                .collect(),
        }
    }
}

/// The milestones a timeline had reached when it was read, each as the time from its
/// origin, in the order they were reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineReport {
    /// Each milestone reached and its time from the origin.
    pub reached: Vec<(Milestone, Duration)>,
}

impl TimelineReport {
    /// When `milestone` was reached, from the origin; `None` if it was not.
    pub fn get(&self, milestone: Milestone) -> Option<Duration> {
        self.reached
            .iter()
            .find(|(m, _)| *m == milestone)
            .map(|&(_, at)| at)
    }
}

impl fmt::Display for TimelineReport {
    /// `name=+seconds` for each milestone reached, in order, to 100 µs:
    /// `memory-mapped=+0.0042s first-kvm-run=+0.0120s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reached.is_empty() {
            return f.write_str("none");
        }
        let entries: Vec<String> = self
            .reached
            .iter()
            .map(|(milestone, at)| format!("{}=+{:.4}s", milestone.name(), at.as_secs_f64()))
            .collect();
        f.write_str(&entries.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmkit_devices::{BusDevice, SerialOutput, BOOT_COMPLETE};

    #[test]
    fn a_mark_keeps_the_first_time_and_the_report_lists_milestones_in_order() {
        // Arrange
        let timeline = Timeline::new();
        timeline.mark(Milestone::KernelLoaded);
        timeline.mark(Milestone::MemoryMapped);
        let first = timeline.report().get(Milestone::KernelLoaded);

        // Act
        timeline.mark(Milestone::KernelLoaded);
        let report = timeline.report();

        // Assert
        assert_eq!(report.get(Milestone::KernelLoaded), first);
        let order: Vec<Milestone> = report.reached.iter().map(|(m, _)| *m).collect();
        assert_eq!(order, [Milestone::KernelLoaded, Milestone::MemoryMapped]);
    }

    #[test]
    fn the_console_and_boot_timer_milestones_come_from_the_devices() {
        // Arrange
        let timeline = Timeline::new();
        let serial = Arc::new(ConsoleOutput::new(SerialOutput::Sink).unwrap());
        let hvc = Arc::new(ConsoleOutput::new(SerialOutput::Sink).unwrap());
        let timer = Arc::new(BootTimer::new());
        timeline.watch_consoles([Arc::clone(&serial), Arc::clone(&hvc)]);
        timeline.watch_boot_timer(Arc::clone(&timer));
        assert_eq!(timeline.report().reached, []);

        // Act
        hvc.push(b"x");
        serial.push(b"y");
        timer.write(0, &[BOOT_COMPLETE]);
        let report = timeline.report();

        // Assert
        let console = report.get(Milestone::FirstConsoleByte).unwrap();
        let expected = hvc.first_byte_at().unwrap() - timeline.origin();
        assert_eq!(console, expected, "the earlier of the two consoles");
        assert!(report.get(Milestone::BootComplete).unwrap() >= console);
        assert_eq!(report.get(Milestone::FirstRun), None);
    }

    #[test]
    fn the_report_prints_each_milestone_with_its_time() {
        let report = TimelineReport {
            reached: vec![
                (Milestone::MemoryMapped, Duration::from_micros(4_200)),
                (Milestone::BootComplete, Duration::from_millis(1_250)),
            ],
        };

        assert_eq!(
            report.to_string(),
            "memory-mapped=+0.0042s guest-boot-complete=+1.2500s"
        );
        assert_eq!(
            TimelineReport {
                reached: Vec::new()
            }
            .to_string(),
            "none"
        );
    }
}
