// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Control of a VM running on a [`Platform`]'s I/O thread, from any
//! other thread: what a VMM's control plane (an HTTP API, say) asks of it.
//!
//! A [`VmControl`] sends its request to the I/O thread and waits for the answer. The
//! I/O thread, woken by the request, leaves its event loop, carries the request out
//! with the running machine and the platform in hand (pausing the vCPUs, then the
//! devices; resuming the other way round), answers, and goes back to its loop. So
//! the request needs no lock on the vCPUs or devices, and nothing runs concurrently
//! with it on the I/O thread.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::ThreadId;

use kvmkit_devices::ShutdownReason;
use kvmkit_vcpu::EventFd;

use crate::reboot::RebootPlan;
use crate::{Platform, RunningMachine, Snapshot, SnapshotError, SnapshotReport};

/// Where a VM is, as its control plane sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmState {
    /// Not started yet: the platform's I/O thread does not run it.
    Created,
    /// Its vCPUs and devices run.
    Running,
    /// Its vCPUs and devices are paused.
    Paused,
    /// It ended.
    Shutdown,
}

/// Why a control request was not carried out.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The VM is not running: not started yet, or ended.
    #[error("the VM is not running")]
    NotRunning,
    /// A pause of a paused VM.
    #[error("the VM is already paused")]
    AlreadyPaused,
    /// A resume of a VM that is not paused.
    #[error("the VM is not paused")]
    NotPaused,
    /// The request was made on the I/O thread itself, which would wait for itself.
    #[error("a VM cannot be controlled from its own I/O thread")]
    OnIoThread,
    /// The snapshot could not be taken.
    #[error("the snapshot was not taken")]
    Snapshot(#[source] Arc<SnapshotError>),
    /// The VM cannot reboot in place: it was not booted with
    /// [`Machine::boot_rebootable_on`](crate::Machine::boot_rebootable_on) (a VM
    /// restored from a snapshot, say).
    #[error("the VM cannot reboot in place: it keeps no image to boot again")]
    CannotReboot,
    /// The reboot failed part way (its image could not be loaded again, say): the
    /// VM was ended.
    #[error("the reboot failed; the VM was ended")]
    Reboot(#[source] Arc<crate::Error>),
}

/// A request to the I/O thread.
#[derive(Debug, Clone, PartialEq)]
enum Command {
    Pause,
    Resume,
    /// Save the paused VM into this directory, with the VMM's configuration.
    Snapshot(PathBuf, serde_json::Value),
    /// Boot again in place.
    Reboot,
}

/// What a request gives back besides success.
type Answer = Result<Option<SnapshotReport>, ControlError>;

struct Request {
    command: Command,
    reply: Sender<Answer>,
}

/// A handle that pauses and resumes a VM from any thread but its I/O thread; see the
/// [module](self). Made by [`Platform::control`](crate::Platform::control); cloned
/// freely; once the VM ended, every request answers [`ControlError::NotRunning`].
#[derive(Clone)]
pub struct VmControl {
    requests: Sender<Request>,
    wake: Arc<EventFd>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for VmControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmControl")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// What the handles and the I/O thread share.
struct Shared {
    state: AtomicU8,
    io_thread: std::sync::OnceLock<ThreadId>,
}

impl Shared {
    fn set(&self, state: VmState) {
        self.state.store(state as u8, Ordering::SeqCst);
    }
}

impl VmControl {
    /// Pauses the VM: every vCPU parked, then every device's queue work stopped
    /// ([`RunningMachine::pause`], [`Platform::pause_devices`]); returns once nothing
    /// of the guest runs.
    pub fn pause(&self) -> Result<(), ControlError> {
        self.request(Command::Pause).map(drop)
    }

    /// Resumes a paused VM: devices first, then vCPUs; it goes on where it was.
    pub fn resume(&self) -> Result<(), ControlError> {
        self.request(Command::Resume).map(drop)
    }

    /// Saves the paused VM into the existing directory `dir` (see
    /// [`snapshot`](crate::snapshot)), with `config`, what the VMM needs to build the
    /// machine again; the VM stays paused.
    pub fn snapshot(
        &self,
        dir: &Path,
        config: serde_json::Value,
    ) -> Result<SnapshotReport, ControlError> {
        self.request(Command::Snapshot(dir.to_path_buf(), config))?
            .ok_or(ControlError::NotRunning)
    }

    /// Reboots the VM in place: its devices reset (as by their drivers), its
    /// image loaded again, every vCPU back at its first state; it runs from there,
    /// paused or not before.
    pub fn reboot(&self) -> Result<(), ControlError> {
        self.request(Command::Reboot).map(drop)
    }

    /// Where the VM is.
    pub fn state(&self) -> VmState {
        match self.shared.state.load(Ordering::SeqCst) {
            s if s == VmState::Running as u8 => VmState::Running,
            s if s == VmState::Paused as u8 => VmState::Paused,
            s if s == VmState::Shutdown as u8 => VmState::Shutdown,
            _ => VmState::Created,
        }
    }

    fn request(&self, command: Command) -> Answer {
        if self.shared.io_thread.get() == Some(&std::thread::current().id()) {
            return Err(ControlError::OnIoThread);
        }
        if self.state() != VmState::Running && self.state() != VmState::Paused {
            return Err(ControlError::NotRunning);
        }
        let (reply, answer) = mpsc::channel();
        self.requests
            .send(Request { command, reply })
            .map_err(|_| ControlError::NotRunning)?;
        let _ = self.wake.write(1);
        // The I/O thread answers each request it takes; one left when the VM ends is
        // dropped with the receiver, which ends this wait too.
        answer.recv().unwrap_or(Err(ControlError::NotRunning))
    }
}

fn snapshot_error(error: SnapshotError) -> ControlError {
    ControlError::Snapshot(Arc::new(error))
}

/// Saves the paused VM on `running` and `platform` into `dir`.
fn take_snapshot(
    dir: &Path,
    config: serde_json::Value,
    running: &RunningMachine,
    platform: &Platform,
) -> Result<SnapshotReport, SnapshotError> {
    let (serial, virtio) = platform.devices_state();
    let vcpus = running
        .vcpus()
        .iter()
        .map(|vcpu| vcpu.save_state())
        .collect::<Result<Vec<_>, _>>()
        .map_err(SnapshotError::Kvm)?;
    let vm = running.vm().save_state().map_err(SnapshotError::Kvm)?;
    Snapshot::new(vcpus, vm, running.ram(), serial, virtio, config).write_to(dir, running.ram())
}

/// The I/O thread's end of the control handles.
pub(crate) struct ControlEnd {
    requests: Receiver<Request>,
    wake: Arc<EventFd>,
    shared: Arc<Shared>,
}

impl ControlEnd {
    /// A pair: the handle for other threads and this end, whose `wake` the platform
    /// watches on its event loop.
    pub(crate) fn new() -> std::io::Result<(VmControl, ControlEnd)> {
        let (sender, receiver) = mpsc::channel();
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?);
        let shared = Arc::new(Shared {
            state: AtomicU8::new(VmState::Created as u8),
            io_thread: std::sync::OnceLock::new(),
        });
        let control = VmControl {
            requests: sender,
            wake: Arc::clone(&wake),
            shared: Arc::clone(&shared),
        };
        Ok((
            control,
            ControlEnd {
                requests: receiver,
                wake,
                shared,
            },
        ))
    }

    /// The event that a request was sent.
    pub(crate) fn wake(&self) -> &Arc<EventFd> {
        &self.wake
    }

    /// Marks the VM started on this (the I/O) thread: running, or paused.
    pub(crate) fn started(&self, paused: bool) {
        let _ = self.shared.io_thread.set(std::thread::current().id());
        self.shared.set(if paused {
            VmState::Paused
        } else {
            VmState::Running
        });
    }

    /// Carries out the requests waiting, on the I/O thread.
    pub(crate) fn serve(
        &self,
        running: &RunningMachine,
        platform: &Platform,
        reboot: Option<&RebootPlan>,
    ) {
        let _ = self.wake.read();
        while let Ok(Request { command, reply }) = self.requests.try_recv() {
            let _ = reply.send(self.carry_out(command, running, platform, reboot));
        }
    }

    fn carry_out(
        &self,
        command: Command,
        running: &RunningMachine,
        platform: &Platform,
        reboot: Option<&RebootPlan>,
    ) -> Answer {
        let paused = self.shared.state.load(Ordering::SeqCst) == VmState::Paused as u8;
        match (command, paused) {
            (Command::Pause, true) => Err(ControlError::AlreadyPaused),
            (Command::Resume, false) => Err(ControlError::NotPaused),
            (Command::Pause, false) => {
                running.pause();
                platform.pause_devices();
                self.shared.set(VmState::Paused);
                Ok(None)
            }
            (Command::Resume, true) => {
                platform.resume_devices();
                running.resume();
                self.shared.set(VmState::Running);
                Ok(None)
            }
            (Command::Reboot, paused) => {
                let plan = reboot.ok_or(ControlError::CannotReboot)?;
                if !paused {
                    running.pause();
                    platform.pause_devices();
                }
                if let Err(error) = plan.reboot(running, platform) {
                    // Half rebooted, the guest cannot go on.
                    platform.exit().request(ShutdownReason::VmmRequest);
                    return Err(ControlError::Reboot(Arc::new(error)));
                }
                platform.resume_devices();
                running.resume();
                self.shared.set(VmState::Running);
                Ok(None)
            }
            (Command::Snapshot(..), false) => Err(snapshot_error(SnapshotError::NotPaused)),
            (Command::Snapshot(dir, config), true) => {
                take_snapshot(&dir, config, running, platform)
                    .map(Some)
                    .map_err(snapshot_error)
            }
        }
    }

    /// Marks the VM ended: requests waiting or sent later answer `NotRunning`.
    pub(crate) fn ended(&self) {
        self.shared.set(VmState::Shutdown);
        while let Ok(Request { reply, .. }) = self.requests.try_recv() {
            let _ = reply.send(Err(ControlError::NotRunning));
        }
    }
}
