// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Cloud Hypervisor's endpoints (`/api/v1/vmm.*`, `/api/v1/vm.*`): a request as the
//! VMM acts on it, and the answers, with Cloud Hypervisor's status codes and bodies
//! (an error is a JSON array of messages, the action first, its causes after).

use serde::Deserialize;
use serde_json::Value;

use crate::http;

/// The path every endpoint is under.
pub const API_ROOT: &str = "/api/v1/";

/// What a client asks of the VMM.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ApiRequest {
    /// `GET vmm.ping`: the VMM's version.
    VmmPing,
    /// `PUT vmm.shutdown`: end the VMM (and its VM).
    VmmShutdown,
    /// `PUT vm.create` with a `VmConfig`, as JSON.
    VmCreate(Value),
    /// `PUT vm.boot`.
    VmBoot,
    /// `PUT vm.delete`.
    VmDelete,
    /// `GET vm.info`.
    VmInfo,
    /// `GET vm.counters`.
    VmCounters,
    /// `PUT vm.pause`.
    VmPause,
    /// `PUT vm.resume`.
    VmResume,
    /// `PUT vm.shutdown`.
    VmShutdown,
    /// `PUT vm.reboot`.
    VmReboot,
    /// `PUT vm.power-button`.
    VmPowerButton,
    /// `PUT vm.snapshot` to a directory (`file:///dir`).
    VmSnapshot {
        /// Where to.
        destination_url: String,
    },
    /// `PUT vm.restore` from a directory (`file:///dir`).
    VmRestore {
        /// Where from.
        source_url: String,
        /// Run it at once (Cloud Hypervisor's `resume`; otherwise it waits paused).
        resume: bool,
        /// Read all of guest RAM in now rather than as the guest touches it.
        prefault: bool,
    },
}

impl ApiRequest {
    /// What Cloud Hypervisor says could not be done when this request fails: the
    /// first message of an error's body.
    pub fn action_failed(&self) -> &'static str {
        match self {
            ApiRequest::VmmPing => "The VMM could not answer",
            ApiRequest::VmmShutdown => "The VMM could not shutdown",
            ApiRequest::VmCreate(_) => "The VM could not be created",
            ApiRequest::VmBoot => "The VM could not boot",
            ApiRequest::VmDelete => "The VM could not be deleted",
            ApiRequest::VmInfo | ApiRequest::VmCounters => "The VM info is not available",
            ApiRequest::VmPause => "The VM could not be paused",
            ApiRequest::VmResume => "The VM could not resume",
            ApiRequest::VmShutdown => "The VM could not shutdown",
            ApiRequest::VmReboot => "The VM could not reboot",
            ApiRequest::VmPowerButton => "Error triggering power button",
            ApiRequest::VmSnapshot { .. } => "The VM could not be snapshotted",
            ApiRequest::VmRestore { .. } => "The VM could not be restored",
        }
    }
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ApiResponse {
    /// Done, nothing to say: 204.
    Done,
    /// Done, with this body: 200.
    Json(Value),
    /// Done, with an empty 200 (what `vmm.shutdown` answers).
    Empty,
    /// Not done: `status`, and the messages (the action, then why).
    Error {
        /// The status code.
        status: u16,
        /// The messages, most general first.
        messages: Vec<String>,
    },
}

/// The kinds of failure a VMM reports, with Cloud Hypervisor's status for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// There is no VM to act on: 404.
    NotCreated,
    /// The request's content is invalid: 400.
    Invalid,
    /// The VM cannot do it now, or it failed: 500.
    Failed,
}

impl ApiResponse {
    /// The error Cloud Hypervisor gives when `request` fails for `why`:
    /// `["Error from API", <the action>, <why>...]`.
    pub fn failed(request: &ApiRequest, failure: Failure, why: &[&str]) -> Self {
        let status = match failure {
            Failure::NotCreated => 404,
            Failure::Invalid => 400,
            Failure::Failed => 500,
        };
        let messages = ["Error from API", request.action_failed()]
            .into_iter()
            .chain(why.iter().copied())
            .map(String::from)
            .collect();
        ApiResponse::Error { status, messages }
    }

    /// Cloud Hypervisor's answer to a path it has no endpoint for (kvmkit's, too, for
    /// the endpoints it does not have).
    pub fn not_found() -> Self {
        ApiResponse::Error {
            status: 404,
            messages: vec!["Not Found".into()],
        }
    }

    /// Cloud Hypervisor's answer to a request of the wrong method, or without the
    /// body its endpoint needs.
    pub fn bad_request() -> Self {
        ApiResponse::Error {
            status: 400,
            messages: vec!["Bad Request".into()],
        }
    }

    /// As an HTTP response.
    pub fn to_http(&self) -> http::Response {
        let (status, body) = match self {
            ApiResponse::Done => (204, None),
            ApiResponse::Json(value) => (200, Some(value.to_string())),
            ApiResponse::Empty => (200, None),
            ApiResponse::Error { status, messages } => {
                (*status, Some(Value::from(messages.clone()).to_string()))
            }
        };
        http::Response { status, body }
    }
}

/// The request `method` `path` with `body` asks for, or the answer it gets at once:
/// 404 for a path that is no endpoint (or one kvmkit does not have), 400 for the
/// wrong method, a body an endpoint needs missing, or JSON that does not parse.
pub fn parse(method: &str, path: &str, body: &[u8]) -> Result<ApiRequest, ApiResponse> {
    let name = path
        .strip_prefix(API_ROOT)
        .ok_or_else(ApiResponse::not_found)?;
    let (get, request) = match name {
        "vmm.ping" => (true, ApiRequest::VmmPing),
        "vmm.shutdown" => (false, ApiRequest::VmmShutdown),
        "vm.create" => (false, ApiRequest::VmCreate(json(body)?)),
        "vm.boot" => (false, ApiRequest::VmBoot),
        "vm.delete" => (false, ApiRequest::VmDelete),
        "vm.info" => (true, ApiRequest::VmInfo),
        "vm.counters" => (true, ApiRequest::VmCounters),
        "vm.pause" => (false, ApiRequest::VmPause),
        "vm.resume" => (false, ApiRequest::VmResume),
        "vm.shutdown" => (false, ApiRequest::VmShutdown),
        "vm.reboot" => (false, ApiRequest::VmReboot),
        "vm.power-button" => (false, ApiRequest::VmPowerButton),
        "vm.snapshot" => {
            #[derive(Deserialize)]
            struct Snapshot {
                destination_url: String,
            }
            let snapshot: Snapshot = typed(body)?;
            (
                false,
                ApiRequest::VmSnapshot {
                    destination_url: snapshot.destination_url,
                },
            )
        }
        "vm.restore" => (false, restore_request(&json(body)?)?),
        _ => return Err(ApiResponse::not_found()),
    };
    let wanted = if get { "GET" } else { "PUT" };
    if method != wanted {
        return Err(ApiResponse::bad_request());
    }
    Ok(request)
}

/// `body` as JSON; a missing body is a bad request, one that does not parse gets
/// Cloud Hypervisor's message.
fn json(body: &[u8]) -> Result<Value, ApiResponse> {
    if body.is_empty() {
        return Err(ApiResponse::bad_request());
    }
    serde_json::from_slice(body).map_err(|e| ApiResponse::Error {
        status: 400,
        messages: vec!["Failed to deserialize JSON".into(), e.to_string()],
    })
}

/// `vm.restore`'s `RestoreConfig`: `source_url`, `resume` and `prefault`. Cloud
/// Hypervisor's other fields (new descriptors for devices, NUMA updates) are taken at
/// their defaults, which its client sends (`null`, `[]`), and refused by name
/// otherwise; `memory_restore_mode` is taken as `Copy` or `OnDemand`.
fn restore_request(config: &Value) -> Result<ApiRequest, ApiResponse> {
    let invalid = |why: String| ApiResponse::Error {
        status: 400,
        messages: vec!["Failed to deserialize JSON".into(), why],
    };
    let object = config
        .as_object()
        .ok_or_else(|| invalid("the RestoreConfig must be an object".into()))?;
    let mut source_url = None;
    let mut resume = false;
    let mut prefault = false;
    for (key, value) in object {
        let at_default = match value {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Array(items) => items.is_empty(),
            // Either way kvmkit maps the memory file and reads a page as the guest
            // touches it: nothing is copied at once (as with `OnDemand`), and the
            // snapshot may be removed once restored (as with `Copy`).
            Value::String(s) => key == "memory_restore_mode" && (s == "Copy" || s == "OnDemand"),
            _ => false,
        };
        match (key.as_str(), value) {
            ("source_url", Value::String(url)) => source_url = Some(url.clone()),
            ("resume", Value::Bool(b)) => resume = *b,
            ("prefault", Value::Bool(b)) => prefault = *b,
            ("prefault", Value::Null) => {}
            ("source_url" | "resume" | "prefault", _) => {
                return Err(invalid(format!("`{key}` has the wrong type")))
            }
            (_, _) if at_default => {}
            _ => {
                return Err(invalid(format!(
                    "`{key}` = {value} is a Cloud Hypervisor option kvmkit does not support"
                )))
            }
        }
    }
    let source_url = source_url.ok_or_else(|| invalid("missing field `source_url`".into()))?;
    Ok(ApiRequest::VmRestore {
        source_url,
        resume,
        prefault,
    })
}

/// The directory of a `file:///dir` URL (the only kind kvmkit snapshots to and
/// restores from).
pub fn file_url(url: &str) -> Option<&str> {
    url.strip_prefix("file://")
        .filter(|path| path.starts_with('/'))
}

/// `body` as the JSON of `T`.
fn typed<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiResponse> {
    serde_json::from_value(json(body)?).map_err(|e| ApiResponse::Error {
        status: 400,
        messages: vec!["Failed to deserialize JSON".into(), e.to_string()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_takes_its_method_and_refuses_the_other() {
        for (method, name, body, expected) in [
            ("GET", "vmm.ping", "", ApiRequest::VmmPing),
            ("PUT", "vm.pause", "", ApiRequest::VmPause),
            ("GET", "vm.counters", "", ApiRequest::VmCounters),
            (
                "PUT",
                "vm.snapshot",
                r#"{"destination_url":"file:///tmp/s"}"#,
                ApiRequest::VmSnapshot {
                    destination_url: "file:///tmp/s".into(),
                },
            ),
        ] {
            let path = format!("{API_ROOT}{name}");
            let other = if method == "GET" { "PUT" } else { "GET" };

            assert_eq!(parse(method, &path, body.as_bytes()), Ok(expected));
            assert_eq!(
                parse(other, &path, body.as_bytes()),
                Err(ApiResponse::bad_request())
            );
        }
    }

    #[test]
    fn unknown_paths_are_not_found_and_bad_bodies_are_bad_requests() {
        let unknown = parse("PUT", "/api/v1/vm.resize", b"{}");
        let outside = parse("GET", "/foo", b"");
        let no_body = parse("PUT", "/api/v1/vm.create", b"");
        let malformed = parse("PUT", "/api/v1/vm.create", b"{bad json");
        let wrong_shape = parse("PUT", "/api/v1/vm.snapshot", b"{\"url\":1}");

        assert_eq!(unknown, Err(ApiResponse::not_found()));
        assert_eq!(outside, Err(ApiResponse::not_found()));
        assert_eq!(no_body, Err(ApiResponse::bad_request()));
        let Err(ApiResponse::Error { status, messages }) = malformed else {
            panic!("{malformed:?}");
        };
        assert_eq!(
            (status, messages[0].as_str()),
            (400, "Failed to deserialize JSON")
        );
        assert!(matches!(
            wrong_shape,
            Err(ApiResponse::Error { status: 400, .. })
        ));
    }

    #[test]
    fn a_restore_takes_cloud_hypervisors_defaults_and_refuses_what_kvmkit_lacks() {
        let from_ch_remote = br#"{"source_url":"file:///tmp/s","prefault":false,
            "memory_restore_mode":"Copy","net_fds":null,"vfio_fds":null,"iommufd_fd":null,
            "resume":true}"#;
        let on_demand = br#"{"source_url":"file:///tmp/s","memory_restore_mode":"OnDemand",
            "prefault":true}"#;
        let new_fds = br#"{"source_url":"file:///tmp/s","net_fds":[{"id":"_net0","fds":[3]}]}"#;

        let taken = parse("PUT", "/api/v1/vm.restore", from_ch_remote);
        let taken_on_demand = parse("PUT", "/api/v1/vm.restore", on_demand);
        let refused = parse("PUT", "/api/v1/vm.restore", new_fds);
        let missing = parse("PUT", "/api/v1/vm.restore", b"{\"resume\":true}");

        assert_eq!(
            taken,
            Ok(ApiRequest::VmRestore {
                source_url: "file:///tmp/s".into(),
                resume: true,
                prefault: false,
            })
        );
        assert_eq!(
            taken_on_demand,
            Ok(ApiRequest::VmRestore {
                source_url: "file:///tmp/s".into(),
                resume: false,
                prefault: true,
            })
        );
        let Err(ApiResponse::Error { status, messages }) = refused else {
            panic!("{refused:?}");
        };
        assert_eq!(status, 400);
        assert!(messages[1].contains("net_fds"), "{messages:?}");
        assert!(matches!(
            missing,
            Err(ApiResponse::Error { status: 400, .. })
        ));
        assert_eq!(file_url("file:///tmp/s"), Some("/tmp/s"));
        assert_eq!(file_url("tcp://host/s"), None);
    }

    #[test]
    fn a_failure_reads_as_cloud_hypervisors_error_chain() {
        let response =
            ApiResponse::failed(&ApiRequest::VmPause, Failure::Failed, &["already paused"]);

        let http = response.to_http();

        assert_eq!(http.status, 500);
        assert_eq!(
            http.body.as_deref(),
            Some(r#"["Error from API","The VM could not be paused","already paused"]"#)
        );
    }
}
