// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![deny(missing_docs)]
//! Cloud Hypervisor's REST API for a kvmkit VMM: the HTTP/1.1 exchange on a Unix
//! socket (`httparse` reads the requests), the endpoints as typed requests, the
//! answers with Cloud Hypervisor's status codes and error bodies, and the thread that
//! serves them. No KVM here: a VMM implements what each request does, in a handler.
//!
//! What Kata Containers' `clh` driver and `ch-remote` speak, so that they drive a
//! kvmkit VMM as they drive Cloud Hypervisor.
//!
//! ```
//! use kvmkit_api::{parse, ApiRequest, ApiResponse};
//!
//! assert_eq!(parse("GET", "/api/v1/vmm.ping", b""), Ok(ApiRequest::VmmPing));
//! assert_eq!(parse("GET", "/api/v1/vm.pause", b""), Err(ApiResponse::bad_request()));
//! ```

mod endpoint;
pub mod http;
mod server;

pub use endpoint::{file_url, parse, ApiRequest, ApiResponse, Failure, API_ROOT};
pub use server::{ApiServer, ServerError};
