// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvmkit_fuzz::snapshot_state(data));
