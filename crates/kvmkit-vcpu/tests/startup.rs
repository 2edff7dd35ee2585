// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! How vCPUs start: with the in-kernel irqchip, application processors wait for the
//! guest's INIT and startup IPIs (as a kernel brings them up) until a CPU mode is set.

mod common;

use common::TestVm;

#[test]
fn application_processors_wait_for_startup_ipis_and_the_boot_vcpu_does_not() {
    let vm = TestVm::new(16);
    vm.vm.create_irqchip().unwrap();

    let vcpus = vm.vm.create_vcpus(3).unwrap();

    let waiting: Vec<bool> = vcpus
        .iter()
        .map(|v| v.waits_for_startup().unwrap())
        .collect();
    assert_eq!(waiting, vec![false, true, true]);
}

#[test]
fn entering_a_mode_makes_an_application_processor_runnable() {
    let vm = TestVm::new(16);
    vm.vm.create_irqchip().unwrap();
    let vcpus = vm.vm.create_vcpus(2).unwrap();

    vcpus[1]
        .enter_mode(
            vm.ram.memory(),
            kvmkit_vcpu::CpuMode::Long,
            0x10_0000,
            0x8000,
        )
        .unwrap();

    assert!(!vcpus[1].waits_for_startup().unwrap());
}
