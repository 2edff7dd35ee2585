// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Opening the KVM device: the errors a user sees when it is not there.

use kvmkit_vcpu::{Error, Hypervisor};

#[test]
fn missing_device_names_the_path_and_the_fix() {
    let path = "/nonexistent/kvmkit-test/kvm";

    let error = Hypervisor::open_at(path).unwrap_err();

    assert!(matches!(&error, Error::DeviceMissing { path: p } if p.to_str() == Some(path)));
    let message = error.to_string();
    assert!(message.contains(path), "{message}");
    assert!(message.contains("modprobe kvm_intel"), "{message}");
}

#[test]
fn char_devices_that_are_not_kvm_are_named_as_such() {
    for path in ["/dev/null", "/dev/zero"] {
        let error = Hypervisor::open_at(path).unwrap_err();

        assert!(
            matches!(error, Error::NotKvmDevice { .. }),
            "{path}: {error}"
        );
        let message = error.to_string();
        assert!(message.contains("is not a KVM device"), "{message}");
        assert!(!message.contains("API version"), "{message}");
    }
}

#[test]
fn a_regular_file_or_a_directory_is_not_a_kvm_device() {
    let file = std::env::temp_dir().join(format!("kvmkit-not-kvm-{}", std::process::id()));
    std::fs::write(&file, b"").unwrap();

    let regular = Hypervisor::open_at(&file).unwrap_err();
    let directory = Hypervisor::open_at("/tmp").unwrap_err();
    std::fs::remove_file(&file).unwrap();

    assert!(matches!(regular, Error::NotKvmDevice { .. }), "{regular}");
    assert!(
        regular.to_string().contains("not a character device"),
        "{regular}"
    );
    assert!(
        matches!(directory, Error::NotKvmDevice { .. }),
        "{directory}"
    );
}

#[test]
fn an_empty_path_says_it_is_empty() {
    let error = Hypervisor::open_at("").unwrap_err();

    assert!(matches!(error, Error::EmptyPath), "{error}");
    assert!(error.to_string().contains("empty"), "{error}");
}

#[test]
fn real_device_opens_and_reports_its_limits() {
    let hypervisor = Hypervisor::open().expect("these tests need /dev/kvm");

    assert_eq!(hypervisor.path().to_str(), Some(Hypervisor::DEFAULT_PATH));
    assert!(hypervisor.max_vcpus() >= 1);
    assert!(hypervisor.supported_cpuid().unwrap().as_slice().len() > 1);
}

#[test]
fn vcpu_id_beyond_the_kvm_limit_is_refused() {
    let hypervisor = Hypervisor::open().unwrap();
    let vm = kvmkit_vcpu::Vm::new(&hypervisor).unwrap();
    let too_big = u32::try_from(hypervisor.max_vcpus()).unwrap();

    let error = vm.create_vcpu(too_big).unwrap_err();

    assert!(
        matches!(error, Error::VcpuId { id, .. } if id == too_big),
        "{error}"
    );
}

#[test]
fn pit_without_irqchip_is_refused_with_the_fix() {
    let hypervisor = Hypervisor::open().unwrap();
    let vm = kvmkit_vcpu::Vm::new(&hypervisor).unwrap();

    let error = vm.create_pit().unwrap_err();

    assert!(matches!(error, Error::NoIrqchip(_)));
    assert!(error.to_string().contains("create_irqchip"));
}

#[test]
fn irqchip_and_pit_are_created_in_the_kernel() {
    let hypervisor = Hypervisor::open().unwrap();
    let vm = kvmkit_vcpu::Vm::new(&hypervisor).unwrap();
    let plain_vm = kvmkit_vcpu::Vm::new(&hypervisor).unwrap();
    let without = plain_vm.create_vcpu(0).unwrap();

    vm.create_irqchip().unwrap();
    vm.create_pit().unwrap();
    let event = kvmkit_vcpu::EventFd::new(0).unwrap();
    vm.register_irqfd(&event, 4).unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();

    // KVM has a local APIC to hand out only for a vCPU created with the irqchip.
    assert!(vcpu.fd().get_lapic().is_ok());
    assert!(without.fd().get_lapic().is_err());
    vm.unregister_irqfd(&event, 4).unwrap();
}

#[test]
fn supported_cpuid_offers_the_tsc_deadline_timer_exactly_when_kvm_emulates_it() {
    let hypervisor = kvmkit_vcpu::Hypervisor::open().expect("these tests need /dev/kvm");
    let emulated = hypervisor
        .kvm()
        .check_extension(kvm_ioctls::Cap::TscDeadlineTimer);

    let cpuid = hypervisor.supported_cpuid().unwrap();

    let leaf1 = cpuid
        .as_slice()
        .iter()
        .find(|entry| entry.function == 1)
        .expect("leaf 1");
    assert_eq!(leaf1.ecx & (1 << 24) != 0, emulated);
}
