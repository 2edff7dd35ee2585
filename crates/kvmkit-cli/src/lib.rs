// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![deny(missing_docs)]
#![forbid(unsafe_code)]
//! The `kvmkit` runner's command line, in Cloud Hypervisor's dialect, as a library so
//! that its parsers can be tested and fuzzed; the binary is `src/main.rs`.

pub mod dialect;
pub mod options;
pub mod vm_config;
