// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The right of one activation of a device to touch guest memory and raise its
//! interrupt, and the reset that revokes it and waits until nothing uses it.
//!
//! virtio 1.2 §2.4.1: once the driver reads a status of 0 back after a reset, the
//! device must not touch the queues or notify. The transport resets the device on the
//! vCPU thread that wrote the status, while the I/O thread may be serving the device's
//! queues. So queue work runs in *turns*: a turn holds the gate's lock and checks,
//! before each chain and before it publishes anything, that its epoch is still the
//! device's. [`Gate::revoke`] moves the device to a new epoch and then takes the lock,
//! so it returns only once the turn in flight (if any) has stopped, and no turn of the
//! old epoch can start after it.
//!
//! A pause is the same wait without the end: [`Gate::pause`] marks the gate paused and
//! takes the lock, so the turn in flight stops after the chain it is serving and no
//! turn serves anything until [`Gate::resume`]; the epoch, the queues' state and what
//! the driver posted meanwhile are kept.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A device's generation counter and the lock its queue work runs under.
#[derive(Debug, Default)]
pub struct Gate {
    generation: AtomicU64,
    paused: AtomicBool,
    turn: Mutex<()>,
}

impl Gate {
    /// The current epoch: the right to work until the next [`revoke`](Self::revoke).
    pub fn epoch(self: &Arc<Self>) -> Epoch {
        Epoch {
            gate: Arc::clone(self),
            born: self.generation.load(Ordering::Acquire),
        }
    }

    /// Ends the current epoch and waits until no work of it runs: when this returns,
    /// nothing served under an older [`Epoch`] touches guest memory or the interrupt
    /// again. Must not be called from inside a [`Turn`] (it would wait for itself).
    pub fn revoke(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        // The turn in flight, if any, holds the lock until it has seen the new
        // generation and stopped; turns that start later see it at once.
        drop(self.lock());
    }

    /// Stops queue work and waits until none runs: when this returns, no turn touches
    /// guest memory or the interrupt until [`resume`](Self::resume). The turn in flight
    /// stops after its current chain, which it completes. Must not be called from
    /// inside a [`Turn`].
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        drop(self.lock());
    }

    /// Lets queue work run again after [`pause`](Self::pause) (it starts on the
    /// queues' next notification: whoever resumes signals them).
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    /// Whether queue work is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Ends the current epoch without waiting for the turn in flight: for a device
    /// going away, whose work may be blocked where nothing can wait for it.
    pub fn end(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.turn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One activation's right to serve a device's queues: work runs in turns ([`Epoch::enter`])
/// that a reset ([`Gate::revoke`]) stops and waits for.
#[derive(Debug, Clone)]
pub struct Epoch {
    gate: Arc<Gate>,
    born: u64,
}

impl Epoch {
    /// Whether the device's queue work is paused.
    pub fn is_paused(&self) -> bool {
        self.gate.is_paused()
    }

    /// Whether the device has not been reset since this epoch began.
    pub fn is_current(&self) -> bool {
        self.gate.generation.load(Ordering::Acquire) == self.born
    }

    /// Starts a turn of work, or `None` if the device was reset since: the caller then
    /// touches neither guest memory nor the interrupt. A reset waits for the turn to
    /// end, so the caller keeps it short and checks [`Turn::is_current`] between
    /// requests.
    pub fn enter(&self) -> Option<Turn<'_>> {
        let guard = self.gate.lock();
        self.is_current().then_some(Turn {
            epoch: self,
            _guard: guard,
        })
    }
}

/// A turn of queue work under an [`Epoch`]; a reset waits for it to end.
#[derive(Debug)]
pub struct Turn<'a> {
    epoch: &'a Epoch,
    _guard: MutexGuard<'a, ()>,
}

impl Turn<'_> {
    /// Whether the device was paused: the turn serves no further chain.
    pub fn is_paused(&self) -> bool {
        self.epoch.gate.is_paused()
    }

    /// Whether the device is still in this turn's epoch: a reset asked for meanwhile
    /// makes it `false`, and the turn must stop before its next access.
    pub fn is_current(&self) -> bool {
        self.epoch.is_current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn an_epoch_ends_with_the_reset_and_a_new_one_starts() {
        let gate = Arc::new(Gate::default());
        let old = gate.epoch();

        gate.revoke();
        let new = gate.epoch();

        assert!(!old.is_current());
        assert!(old.enter().is_none());
        assert!(new.is_current());
        assert!(new.enter().is_some());
    }

    #[test]
    fn a_reset_waits_for_the_turn_in_flight_to_stop() {
        let gate = Arc::new(Gate::default());
        let epoch = gate.epoch();
        let (started, wait_started) = std::sync::mpsc::channel();
        let worker = std::thread::spawn(move || {
            let turn = epoch.enter().unwrap();
            started.send(()).unwrap();
            // Work until the reset is seen, as a queue does between chains.
            let begun = Instant::now();
            while turn.is_current() {
                std::thread::sleep(Duration::from_millis(1));
            }
            let stopped = Instant::now();
            drop(turn);
            (begun, stopped)
        });
        wait_started.recv().unwrap();
        std::thread::sleep(Duration::from_millis(50));

        gate.revoke();
        let revoked = Instant::now();
        let (_, stopped) = worker.join().unwrap();

        assert!(stopped <= revoked, "the reset returned while the turn ran");
    }
}
