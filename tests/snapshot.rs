// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A paused VM saved to a directory and restored into a new machine goes on where it
//! was; a snapshot that is corrupted, truncated, of another version, or of another
//! machine is refused before anything is restored.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use kvmkit::devices::ShutdownReason;
use kvmkit::guest_asm::{asm::*, CpuMode, GuestProgram};
use kvmkit::{
    BootedMachine, ControlError, MachineBuilder, Milestone, Platform, Snapshot, SnapshotError,
    VmOutcome,
};
use vm_memory::{Bytes, GuestAddress};

use common::{machine, machine_built, wait_until};

const COUNTER: u64 = 0x30_0000;

/// Counts in RAM, and keeps the count in COM1's scratch register too.
fn counting_guest() -> GuestProgram {
    GuestProgram::assemble(CpuMode::Long, 0x10_0000, |a| {
        let mut top = a.create_label();
        a.mov(rsi, COUNTER)?;
        a.set_label(&mut top)?;
        a.inc(qword_ptr(rsi))?;
        a.mov(dx, 0x3ffu32)?;
        a.mov(al, byte_ptr(rsi))?;
        a.out(dx, al)?;
        a.jmp(top)
    })
    .unwrap()
}

fn count(memory: &kvmkit::virtio::GuestMemory) -> u64 {
    memory.read_obj(GuestAddress(COUNTER)).unwrap()
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvmkit-snapshot-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `booted` on `platform` on a thread of its own; the count once it moved past
/// `from`, then ends the VM.
fn run_until_counted_past(booted: BootedMachine, platform: Platform, from: u64) -> (bool, u64) {
    let memory = Arc::clone(booted.machine().ram().shared_memory());
    let exit = Arc::clone(platform.exit());
    let vm = thread::spawn(move || booted.run_on(platform).unwrap());
    let went_on = wait_until(|| count(&memory) > from + 1000);
    let reached = count(&memory);
    exit.request(ShutdownReason::PowerOff);
    assert_eq!(vm.join().unwrap(), VmOutcome::PowerOff);
    (went_on, reached)
}

/// Boots the counting guest, lets it count, pauses it and saves it into `dir`: the
/// count at the pause.
fn saved(dir: &Path) -> u64 {
    saved_from(dir, MachineBuilder::new())
}

/// As [`saved`], the machine built by `builder`.
fn saved_from(dir: &Path, builder: MachineBuilder) -> u64 {
    let (machine, mut platform) = machine_built(builder);
    let control = platform.control().unwrap();
    let exit = Arc::clone(platform.exit());
    let memory = Arc::clone(machine.ram().shared_memory());
    let booted = machine.boot(&counting_guest()).unwrap();
    let vm = thread::spawn(move || booted.run_on(platform).unwrap());
    assert!(
        wait_until(|| count(&memory) > 1000),
        "the guest never counted"
    );

    let while_running = control.snapshot(dir, serde_json::json!({}));
    control.pause().unwrap();
    let at_pause = count(&memory);
    let report = control
        .snapshot(dir, serde_json::json!({"vmm": "test", "vcpus": 1}))
        .unwrap();
    let mut ram_at_pause = vec![0u8; 16 << 20];
    memory
        .read_slice(&mut ram_at_pause, GuestAddress(0))
        .unwrap();
    exit.request(ShutdownReason::PowerOff);
    vm.join().unwrap();

    assert!(
        matches!(&while_running, Err(ControlError::Snapshot(e)) if matches!(**e, SnapshotError::NotPaused)),
        "{while_running:?}"
    );
    assert_eq!(report.memory_size, 16 << 20);
    assert!(
        std::fs::read(dir.join("memory")).unwrap() == ram_at_pause,
        "the memory file is not guest RAM as it was"
    );
    assert!(
        report.memory_written < report.memory_size / 4,
        "the memory file is not sparse: {report:?}"
    );
    at_pause
}

#[test]
fn a_paused_vm_saved_and_restored_into_a_new_machine_goes_on_counting() {
    let dir = scratch_dir("restore");
    let at_pause = saved(&dir);

    let snapshot = Snapshot::read_from(&dir).unwrap();
    let (machine, platform) = machine(1);
    let booted = machine.restore(&snapshot, &dir).unwrap();
    let restored_count = count(booted.machine().ram().memory());
    let timeline = Arc::clone(booted.machine().timeline());
    platform.restore_devices(&snapshot).unwrap();
    let generation_notified = platform.generic_events().pending();
    let mut scratch = [0u8];
    kvmkit::devices::BusDevice::read(&**platform.serial(), 7, &mut scratch);
    let (went_on, reached) = run_until_counted_past(booted, platform, at_pause);
    let timeline = timeline.report();

    assert_eq!(snapshot.config()["vmm"], "test");
    assert_eq!(
        generation_notified,
        kvmkit::devices::GedEvent::VmGeneration.bit(),
        "the guest is not told of its new generation"
    );
    assert_eq!(
        restored_count, at_pause,
        "RAM came back as it was at the pause"
    );
    // The guest writes the count to RAM, then to the register: paused between the
    // two, the register still holds the count before.
    let expected = [at_pause, at_pause - 1].map(|n| n.to_le_bytes()[0]);
    assert!(
        expected.contains(&scratch[0]),
        "COM1's scratch register came back as {}, not {expected:?}",
        scratch[0]
    );
    assert!(
        went_on,
        "the restored guest did not go on (reached {reached})"
    );
    let milestones: Vec<Milestone> = timeline.reached.iter().map(|(m, _)| *m).collect();
    assert_eq!(
        milestones,
        [
            Milestone::MemoryMapped,
            Milestone::StateRestored,
            Milestone::FirstRun
        ],
        "the restore's timeline: {timeline}"
    );
}

#[test]
fn corrupted_truncated_foreign_or_mismatched_snapshots_are_refused_before_anything_runs() {
    let dir = scratch_dir("refused");
    saved(&dir);
    let state = std::fs::read(dir.join("state.json")).unwrap();
    let variant = |name: &str, bytes: &[u8]| {
        let variant = scratch_dir(name);
        std::fs::copy(dir.join("memory"), variant.join("memory")).unwrap();
        std::fs::write(variant.join("state.json"), bytes).unwrap();
        variant
    };
    let mut flipped = state.clone();
    let last = flipped.len() - 10;
    flipped[last] ^= 0x20;
    let truncated = &state[..state.len() / 2];
    let newline = state.iter().position(|&b| b == b'\n').unwrap();
    let mut future = b"kvmkit-snapshot 99 0000000000000000".to_vec();
    future.extend_from_slice(&state[newline..]);

    let corrupted = Snapshot::read_from(&variant("flipped", &flipped));
    let cut = Snapshot::read_from(&variant("truncated", truncated));
    let newer = Snapshot::read_from(&variant("future", &future));
    let foreign = Snapshot::read_from(&variant("foreign", b"{\"not\": \"a snapshot\"}"));
    let missing = Snapshot::read_from(&dir.join("nowhere"));
    let snapshot = Snapshot::read_from(&dir).unwrap();
    let (two_vcpus, _) = machine(2);
    let mismatched = two_vcpus.restore(&snapshot, &dir);

    assert!(
        matches!(corrupted, Err(SnapshotError::Checksum { .. })),
        "{corrupted:?}"
    );
    assert!(
        matches!(cut, Err(SnapshotError::Checksum { .. })),
        "{cut:?}"
    );
    assert!(
        matches!(
            newer,
            Err(SnapshotError::Version {
                found: 99,
                supported: 1
            })
        ),
        "{newer:?}"
    );
    assert!(
        matches!(foreign, Err(SnapshotError::NotASnapshot { .. })),
        "{foreign:?}"
    );
    assert!(
        matches!(missing, Err(SnapshotError::Io { .. })),
        "{missing:?}"
    );
    assert!(
        matches!(
            mismatched,
            Err(kvmkit::Error::Snapshot(SnapshotError::Mismatch {
                what: "vCPU count",
                ..
            }))
        ),
        "{:?}",
        mismatched.err()
    );
}

#[test]
fn a_restored_vm_started_paused_runs_nothing_until_its_control_resumes_it() {
    let dir = scratch_dir("paused");
    let at_pause = saved(&dir);
    let snapshot = Snapshot::read_from(&dir).unwrap();
    let (machine, mut platform) = machine(1);
    let control = platform.control().unwrap();
    let booted = machine.restore(&snapshot, &dir).unwrap().paused();
    platform.restore_devices(&snapshot).unwrap();
    let memory = Arc::clone(booted.machine().ram().shared_memory());
    let exit = Arc::clone(platform.exit());

    let vm = thread::spawn(move || booted.run_on(platform).unwrap());
    assert!(wait_until(|| control.state() == kvmkit::VmState::Paused));
    thread::sleep(Duration::from_millis(50));
    let while_paused = count(&memory);
    control.resume().unwrap();
    let went_on = wait_until(|| count(&memory) > at_pause + 1000);
    exit.request(ShutdownReason::PowerOff);
    vm.join().unwrap();

    assert_eq!(
        while_paused, at_pause,
        "the restored guest ran before its resume"
    );
    assert!(went_on, "the resumed guest did not go on");
}

#[test]
fn each_restore_of_a_snapshot_gets_a_new_vm_generation_id_where_the_acpi_table_says() {
    use std::os::unix::fs::FileExt;
    let dir = scratch_dir("generation");
    saved(&dir);
    let mut saved_id = [0u8; 16];
    std::fs::File::open(dir.join("memory"))
        .unwrap()
        .read_exact_at(&mut saved_id, kvmkit::memory::x86::VM_GENERATION_ID.start)
        .unwrap();
    let snapshot = Snapshot::read_from(&dir).unwrap();
    let id = |booted: &BootedMachine| -> [u8; 16] {
        booted
            .machine()
            .ram()
            .memory()
            .read_obj(GuestAddress(kvmkit::memory::x86::VM_GENERATION_ID.start))
            .unwrap()
    };

    let first = id(&machine(1).0.restore(&snapshot, &dir).unwrap());
    let second = id(&machine(1).0.restore(&snapshot, &dir).unwrap());

    assert_ne!(saved_id, [0; 16], "the booted VM had no generation ID");
    assert_ne!(first, saved_id, "a restore kept the saved VM's generation");
    assert_ne!(
        second, first,
        "two restores of one snapshot share a generation"
    );
}

#[test]
fn a_vm_restored_onto_its_mapped_memory_file_goes_on_and_saves_over_that_file() {
    let dir = scratch_dir("mapped");
    let at_pause = saved(&dir);
    let snapshot = Snapshot::read_from(&dir).unwrap();
    let file_before = std::fs::read(dir.join("memory")).unwrap();
    let image = snapshot.memory_image(&dir).unwrap();
    let (mapped_machine, mut platform) = machine_built(MachineBuilder::new().memory_image(image));
    let control = platform.control().unwrap();
    let exit = Arc::clone(platform.exit());
    let booted = mapped_machine.restore(&snapshot, &dir).unwrap();
    let mapped = booted.machine().ram().image().is_some();
    platform.restore_devices(&snapshot).unwrap();
    let memory = Arc::clone(booted.machine().ram().shared_memory());

    let vm = thread::spawn(move || booted.run_on(platform).unwrap());
    let went_on = wait_until(|| count(&memory) > at_pause + 1000);
    let file_while_running = std::fs::read(dir.join("memory")).unwrap();
    control.pause().unwrap();
    let second_pause = count(&memory);
    // Written over the very files this VM's RAM maps.
    control.snapshot(&dir, serde_json::json!({})).unwrap();
    let after_saving = count(&memory);
    exit.request(ShutdownReason::PowerOff);
    vm.join().unwrap();
    let again = Snapshot::read_from(&dir).unwrap();
    let restored_again = machine(1).0.restore(&again, &dir).unwrap();

    assert!(mapped, "guest RAM was not mapped from the memory file");
    assert!(went_on, "the restored guest did not go on");
    assert!(
        file_while_running == file_before,
        "the guest's writes reached the snapshot's memory file"
    );
    assert_eq!(after_saving, second_pause, "saving changed the mapped RAM");
    assert_eq!(count(restored_again.machine().ram().memory()), second_pause);
}

#[test]
fn a_snapshot_of_hugepages_restores_into_hugepages_by_copying_and_goes_on() {
    let pool = kvmkit::memory::host::HugePagePool::read(2 << 20).unwrap();
    assert!(
        pool.available() >= 16,
        "needs 16 free 2 MiB hugepages (scripts/prepare-host.sh reserves them)"
    );
    let dir = scratch_dir("hugepages");
    let config: kvmkit::memory::MemoryConfig = "hugepages=on,hugepage_size=2M".parse().unwrap();
    // Saved from hugepages too: the writer tells touched pages by /proc/self/pagemap,
    // which must see hugetlb pages as present.
    let at_pause = saved_from(&dir, MachineBuilder::new().memory_config(config.clone()));
    let snapshot = Snapshot::read_from(&dir).unwrap();
    let image = snapshot.memory_image(&dir).unwrap();
    let (machine, platform) = machine_built(
        MachineBuilder::new()
            .memory_config(config)
            .memory_image(image),
    );

    let booted = machine.restore(&snapshot, &dir).unwrap();
    let mapped_from_file = booted.machine().ram().image().is_some();
    let restored_count = count(booted.machine().ram().memory());
    let report = booted.machine().ram().report().unwrap();
    platform.restore_devices(&snapshot).unwrap();
    let (went_on, reached) = run_until_counted_past(booted, platform, at_pause);

    assert!(
        !mapped_from_file,
        "hugepages cannot map the file: copied instead"
    );
    assert_eq!(restored_count, at_pause);
    let region = &report.regions[0];
    assert_eq!(region.kernel_page_size, 2 << 20, "{report}");
    assert!(region.hugetlb > 0, "{report}");
    assert!(
        went_on,
        "the restored guest did not go on (reached {reached})"
    );
}
