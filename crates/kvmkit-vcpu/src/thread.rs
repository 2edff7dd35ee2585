// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! One OS thread per vCPU, with kick, pause, resume and stop.
//!
//! A vCPU inside `KVM_RUN` is in the kernel (or in the guest) and cannot look at a flag.
//! To make it come back, the controlling thread sets its request, then sends the vCPU
//! thread the [kick signal](kick_signal). The signal handler sets `immediate_exit` in
//! that vCPU's `kvm_run` page: if the vCPU was inside `KVM_RUN`, the signal already made
//! it return `EINTR`; if it was between two runs, the next `KVM_RUN` returns at once.
//! Either way the vCPU thread sees [`VcpuExit::Interrupted`] and then the request,
//! with no polling and no lost wake-up.

use std::cell::Cell;
use std::os::unix::thread::JoinHandleExt;
use std::ptr;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{unblock_signal, SIGRTMIN};

use crate::{Error, ExitCounts, ExitStats, IoHandler, Vcpu, VcpuExit};

thread_local! {
    /// The `immediate_exit` byte of the vCPU this thread runs, for the kick handler.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(ptr::null_mut()) };
}

/// The real-time signal that kicks vCPU threads out of `KVM_RUN`: `SIGRTMIN`.
///
/// kvmkit installs a handler for it the first time a vCPU thread starts; a VMM must not
/// use this signal for anything else.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // `try_with` does not panic during thread teardown; the TLS slot is const-initialised,
    // so reading it allocates nothing and is async-signal-safe.
    let _ = IMMEDIATE_EXIT.try_with(|slot| {
        let byte = slot.get();
        if !byte.is_null() {
            // SAFETY: a non-null slot points into the kvm_run page of the vCPU this thread
            // runs; `ImmediateExitSlot` clears the slot before that vCPU is dropped.
            unsafe { ptr::write_volatile(byte, 1) };
        }
    });
}

/// Installs [`handle_kick`] for the kick signal, unless a handler kvmkit did not
/// install is there already: replacing it silently would break whoever installed it.
fn install_kick_handler(vcpu: u32) -> Result<(), Error> {
    let signal = kick_signal();
    let ours = handle_kick as *const () as libc::sighandler_t;
    // SAFETY: sigaction is plain data; all-zero is a valid value to be overwritten.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `current`.
    if unsafe { libc::sigaction(signal, ptr::null(), &mut current) } != 0 {
        return Err(kick_handler_error(vcpu));
    }
    match current.sa_sigaction {
        handler if handler == ours => return Ok(()),
        libc::SIG_DFL | libc::SIG_IGN => {}
        _ => return Err(Error::KickSignalTaken { signal }),
    }
    // SAFETY: as above.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = ours;
    action.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `action.sa_mask` is a valid sigset_t to empty; `action` is a complete
    // sigaction whose handler is async-signal-safe (it only writes one byte).
    let ret = unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, ptr::null_mut())
    };
    if ret != 0 {
        return Err(kick_handler_error(vcpu));
    }
    Ok(())
}

fn kick_handler_error(vcpu: u32) -> Error {
    Error::Thread {
        vcpu,
        what: "cannot install the kick signal handler".into(),
        source: std::io::Error::last_os_error(),
    }
}

/// Points this thread's kick slot at a vCPU's `immediate_exit` byte while it lives.
struct ImmediateExitSlot;

impl ImmediateExitSlot {
    fn register(vcpu: &mut Vcpu) -> Self {
        let byte = vcpu.immediate_exit_byte();
        IMMEDIATE_EXIT.with(|slot| slot.set(byte));
        ImmediateExitSlot
    }
}

impl Drop for ImmediateExitSlot {
    fn drop(&mut self) {
        IMMEDIATE_EXIT.with(|slot| slot.set(ptr::null_mut()));
    }
}

/// What a vCPU thread runs on itself before its first `KVM_RUN`, after everything else
/// it sets up: where a VMM confines the thread (a seccomp filter, say).
#[derive(Clone)]
pub struct StartHook(Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>);

impl StartHook {
    /// A hook running `hook`; an error fails the thread's start.
    pub fn new(hook: impl Fn() -> std::io::Result<()> + Send + Sync + 'static) -> Self {
        StartHook(Arc::new(hook))
    }
}

impl std::fmt::Debug for StartHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartHook").finish_non_exhaustive()
    }
}

/// How a vCPU thread is started.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct VcpuThreadConfig {
    /// Pin the thread to this host CPU.
    pub pin_to_cpu: Option<usize>,
    /// Written (1) when the thread ends, so an event loop learns of it without
    /// polling.
    pub exit_event: Option<Arc<EventFd>>,
    /// Run on the thread last, before its first `KVM_RUN`.
    pub on_start: Option<StartHook>,
    /// Start paused: the thread parks before its first `KVM_RUN` until
    /// [`VcpuHandle::resume`] (a restored VM waits so for its resume).
    pub start_paused: bool,
}

impl VcpuThreadConfig {
    /// This configuration, starting paused.
    pub fn paused(mut self) -> Self {
        self.start_paused = true;
        self
    }

    /// This configuration, pinned to host CPU `cpu`.
    pub fn pinned_to(mut self, cpu: usize) -> Self {
        self.pin_to_cpu = Some(cpu);
        self
    }

    /// This configuration, signalling `event` when the thread ends.
    pub fn notifying(mut self, event: Arc<EventFd>) -> Self {
        self.exit_event = Some(event);
        self
    }

    /// This configuration, running `hook` on the thread before its first `KVM_RUN`.
    pub fn on_start(mut self, hook: StartHook) -> Self {
        self.on_start = Some(hook);
        self
    }
}

/// How a vCPU thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VcpuOutcome {
    /// The guest made an exit the thread does not continue after (`hlt` without an
    /// in-kernel APIC, shutdown, a power event, an I/O handler's stop, a hypercall...).
    Exited(VcpuExit),
    /// [`VcpuHandle::stop`] was called.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Run,
    Pause,
    Stop,
}

/// Work a paused vCPU thread does on its vCPU for another thread (reading its state).
type Job = Box<dyn FnOnce(&mut Vcpu) + Send>;

struct ControlState {
    request: Request,
    parked: bool,
    finished: bool,
    job: Option<Job>,
}

impl std::fmt::Debug for ControlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlState")
            .field("request", &self.request)
            .field("parked", &self.parked)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// The request from the controlling thread and the acknowledgement of the vCPU thread.
#[derive(Debug)]
struct Control {
    state: Mutex<ControlState>,
    changed: Condvar,
}

impl Control {
    fn new() -> Self {
        Control {
            state: Mutex::new(ControlState {
                request: Request::Run,
                parked: false,
                finished: false,
                job: None,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// On the vCPU thread: parks while paused, doing the jobs it is given on `vcpu`
    /// meanwhile; returns false once a stop is requested.
    fn may_run(&self, vcpu: &mut Vcpu) -> bool {
        let mut state = self.lock();
        while state.request == Request::Pause {
            if !state.parked {
                state.parked = true;
                self.changed.notify_all();
            }
            if let Some(job) = state.job.take() {
                drop(state);
                job(vcpu);
                state = self.lock();
                continue;
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.parked {
            state.parked = false;
            self.changed.notify_all();
        }
        state.request == Request::Run
    }

    fn request(&self, request: Request) {
        let mut state = self.lock();
        if state.request != Request::Stop {
            state.request = request;
        }
        self.changed.notify_all();
    }

    fn wait_parked(&self) {
        let mut state = self.lock();
        while state.request == Request::Pause && !state.parked && !state.finished {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn finish(&self, exit_event: Option<&EventFd>) {
        let mut state = self.lock();
        state.finished = true;
        // A job it will not do: dropping it tells whoever waits for it.
        drop(state.job.take());
        drop(state);
        self.changed.notify_all();
        if let Some(event) = exit_event {
            // Only a counter overflow can fail, and the reader wakes up anyway.
            let _ = event.write(1);
        }
    }
}

/// Marks the vCPU thread finished and writes its exit event when dropped: on a normal
/// return, on an early error, and while a panic in an I/O handler or device unwinds,
/// so that `pause` never waits for a thread that is gone and the event loop always
/// learns that the vCPU ended.
struct FinishGuard<'a> {
    control: &'a Control,
    exit_event: Option<&'a EventFd>,
}

impl Drop for FinishGuard<'_> {
    fn drop(&mut self) {
        self.control.finish(self.exit_event);
    }
}

/// Starts vCPU threads.
#[derive(Debug)]
pub struct VcpuThread;

impl VcpuThread {
    /// Moves `vcpu` to a new thread named `vcpu<id>` that runs it, handing I/O to
    /// `handler`, until an exit it does not continue after or a stop request.
    ///
    /// Returns once the thread is running and pinned (if asked), or with the reason it
    /// could not start.
    pub fn spawn<H>(
        vcpu: Vcpu,
        handler: Arc<H>,
        config: VcpuThreadConfig,
    ) -> Result<VcpuHandle, Error>
    where
        H: IoHandler + Send + Sync + 'static + ?Sized,
    {
        let id = vcpu.id();
        install_kick_handler(id)?;
        let control = Arc::new(Control::new());
        if config.start_paused {
            control.request(Request::Pause);
        }
        let stats = Arc::clone(vcpu.stats());
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread_control = Arc::clone(&control);
        let thread = thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || vcpu_thread_main(vcpu, &*handler, &thread_control, &config, ready_tx))
            .map_err(|source| Error::Thread {
                vcpu: id,
                what: "cannot spawn the thread".into(),
                source,
            })?;
        let handle = VcpuHandle {
            id,
            control,
            stats,
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err((what, source))) => Err(Error::Thread {
                vcpu: id,
                what,
                source,
            }),
            Err(_) => Err(Error::ThreadPanicked {
                vcpu: id,
                message: "the thread ended before it was ready".into(),
            }),
        }
    }
}

fn vcpu_thread_main<H: IoHandler + ?Sized>(
    mut vcpu: Vcpu,
    handler: &H,
    control: &Control,
    config: &VcpuThreadConfig,
    ready: mpsc::Sender<Result<(), SetupError>>,
) -> Result<VcpuOutcome, Error> {
    let _finish = FinishGuard {
        control,
        exit_event: config.exit_event.as_deref(),
    };
    let setup = prepare_thread(config);
    let failed = setup.is_err();
    // The receiver waits for exactly this message; it cannot have gone away.
    let _ = ready.send(setup);
    if failed {
        // `spawn` returns the error sent above and never hands out this thread's
        // result, so there is nothing more to report here.
        return Ok(VcpuOutcome::Stopped);
    }
    let _slot = ImmediateExitSlot::register(&mut vcpu);
    run_until_done(&mut vcpu, handler, control)
}

/// What failed while preparing a vCPU thread, and why.
type SetupError = (String, std::io::Error);

fn prepare_thread(config: &VcpuThreadConfig) -> Result<(), SetupError> {
    unblock_signal(kick_signal()).map_err(|e| {
        (
            "cannot unblock the kick signal".to_string(),
            std::io::Error::other(format!("{e:?}")),
        )
    })?;
    if let Some(cpu) = config.pin_to_cpu {
        pin_current_thread(cpu)?;
    }
    if let Some(StartHook(hook)) = &config.on_start {
        hook().map_err(|e| ("the start hook failed".to_string(), e))?;
    }
    Ok(())
}

fn run_until_done<H: IoHandler + ?Sized>(
    vcpu: &mut Vcpu,
    handler: &H,
    control: &Control,
) -> Result<VcpuOutcome, Error> {
    while control.may_run(vcpu) {
        match vcpu.run(handler)? {
            VcpuExit::Interrupted => continue,
            exit => return Ok(VcpuOutcome::Exited(exit)),
        }
    }
    Ok(VcpuOutcome::Stopped)
}

fn pin_current_thread(cpu: usize) -> Result<(), SetupError> {
    let online = thread::available_parallelism().map_or(1, |n| n.get());
    let what = format!("cannot pin to host cpu {cpu} (this host has {online} CPUs)");
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err((what, std::io::Error::from_raw_os_error(libc::EINVAL)));
    }
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE was checked above, so CPU_SET stays inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is this thread.
    let ret = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if ret != 0 {
        return Err((what, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Controls a running vCPU thread. Dropping the handle stops the vCPU and joins it.
#[derive(Debug)]
pub struct VcpuHandle {
    id: u32,
    control: Arc<Control>,
    stats: Arc<ExitStats>,
    thread: Option<JoinHandle<Result<VcpuOutcome, Error>>>,
}

impl VcpuHandle {
    /// The vCPU id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Forces the vCPU out of `KVM_RUN` once; it notes the kick and goes on running.
    pub fn kick(&self) {
        if let Some(thread) = &self.thread {
            // SAFETY: the thread has not been joined (its JoinHandle is still here), so
            // its pthread_t is valid; the kick signal has a handler installed.
            unsafe { libc::pthread_kill(thread.as_pthread_t(), kick_signal()) };
        }
    }

    /// Stops the vCPU outside `KVM_RUN` and returns once it is parked (or has ended):
    /// after this, the guest executes no instruction on this vCPU until
    /// [`resume`](Self::resume).
    pub fn pause(&self) {
        self.control.request(Request::Pause);
        self.kick();
        self.control.wait_parked();
    }

    /// Reads the state of the paused vCPU (on its own thread, which does this while
    /// parked); [`Error::NotPaused`] if it is not paused (or has ended).
    pub fn save_state(&self) -> Result<crate::x86::VcpuState, Error> {
        let (sender, receiver) = mpsc::channel();
        self.run_parked(Box::new(move |vcpu: &mut Vcpu| {
            let _ = sender.send(vcpu.save_state());
        }))?;
        receiver
            .recv()
            .map_err(|_| Error::NotPaused { vcpu: self.id })?
    }

    /// Puts `state` into the paused vCPU (on its own thread, which does this while
    /// parked); [`Error::NotPaused`] if it is not paused (or has ended). It runs from
    /// there once resumed.
    pub fn restore_state(&self, state: &crate::x86::VcpuState) -> Result<(), Error> {
        let state = state.clone();
        let (sender, receiver) = mpsc::channel();
        self.run_parked(Box::new(move |vcpu: &mut Vcpu| {
            let _ = sender.send(vcpu.restore_state(&state));
        }))?;
        receiver
            .recv()
            .map_err(|_| Error::NotPaused { vcpu: self.id })?
    }

    /// Has the parked vCPU's thread run `job`.
    fn run_parked(&self, job: Job) -> Result<(), Error> {
        let mut state = self.control.lock();
        if state.request != Request::Pause || !state.parked || state.finished {
            return Err(Error::NotPaused { vcpu: self.id });
        }
        state.job = Some(job);
        self.control.changed.notify_all();
        Ok(())
    }

    /// Lets a paused vCPU run again.
    pub fn resume(&self) {
        self.control.request(Request::Run);
    }

    /// Asks the vCPU to stop; [`join`](Self::join) then returns
    /// [`VcpuOutcome::Stopped`] unless the guest had already exited.
    pub fn stop(&self) {
        self.control.request(Request::Stop);
        self.kick();
    }

    /// Whether the vCPU thread has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// The vCPU's exit counters now.
    pub fn exit_counts(&self) -> ExitCounts {
        self.stats.snapshot()
    }

    /// The vCPU's live exit counters, readable after the thread has ended.
    pub fn stats(&self) -> Arc<ExitStats> {
        Arc::clone(&self.stats)
    }

    /// Waits for the vCPU thread to end and returns how it ended.
    pub fn join(mut self) -> Result<VcpuOutcome, Error> {
        self.join_thread()
    }

    fn join_thread(&mut self) -> Result<VcpuOutcome, Error> {
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|payload| Error::ThreadPanicked {
                vcpu: self.id,
                message: panic_message(payload.as_ref()),
            })?,
            None => Ok(VcpuOutcome::Stopped),
        }
    }
}

/// The text a panic was raised with, when it was a string.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

impl Drop for VcpuHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
            let _ = self.join_thread();
        }
    }
}
