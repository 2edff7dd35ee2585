// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Cloud Hypervisor's grammar for an option's value: `key=value` items separated by
//! commas, where a value may be quoted (`"a,b"`) or bracketed (`[0,1]`) to hold
//! commas, and an item without `=` is a key alone (`--console tty`). Each option
//! says which of Cloud Hypervisor's keys kvmkit implements, which it takes only at
//! Cloud Hypervisor's default (`iommu=off`), and which it does not support, so that
//! a command line written for Cloud Hypervisor is either run as written or refused
//! with the key kvmkit lacks, never misread.

/// The keys of one option.
#[derive(Debug, Clone, Copy)]
pub struct Keys {
    /// The keys kvmkit implements.
    pub supported: &'static [&'static str],
    /// Cloud Hypervisor's keys that kvmkit takes only with one of these values (what
    /// Cloud Hypervisor does by default, which is also what kvmkit does); `*` takes
    /// any value (an `id`, which names the device and changes nothing).
    pub defaults: &'static [(&'static str, &'static [&'static str])],
    /// The rest of Cloud Hypervisor's keys for this option.
    pub unsupported: &'static [&'static str],
}

/// One item of an option's value: its key, and its value unquoted (empty for a key
/// given alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<'t> {
    /// The key.
    pub key: &'t str,
    /// The value, without the quotes around it.
    pub value: String,
    /// Whether it was written `key=value` rather than `key` alone.
    pub has_value: bool,
}

impl Keys {
    /// The items of `text` that kvmkit implements, each key at most once; an error
    /// names a key kvmkit does not support, a value other than the default for a key
    /// it takes only at its default, an unknown key (with the known ones), a repeated
    /// key, or an unclosed quote or bracket.
    pub fn parse<'t>(&self, text: &'t str) -> Result<Vec<Item<'t>>, String> {
        let mut items: Vec<Item<'t>> = Vec::new();
        for raw in split(text)? {
            let (key, value, has_value) = match raw.split_once('=') {
                Some((key, value)) => (key, unquote(value), true),
                None => (raw, String::new(), false),
            };
            if items.iter().any(|item| item.key == key) {
                return Err(format!("`{key}` is given twice"));
            }
            if self.supported.contains(&key) {
                items.push(Item {
                    key,
                    value,
                    has_value,
                });
            } else if let Some((_, allowed)) = self.defaults.iter().find(|(k, _)| *k == key) {
                if !allowed.contains(&"*") && !allowed.contains(&value.as_str()) {
                    return Err(format!(
                        "`{key}={value}` is not supported by kvmkit (it takes {key}={} only)",
                        allowed.join(" or ")
                    ));
                }
            } else if self.unsupported.contains(&key) {
                return Err(format!(
                    "`{key}` is a Cloud Hypervisor option kvmkit does not support"
                ));
            } else {
                return Err(format!(
                    "unknown option `{key}` (kvmkit takes: {})",
                    self.supported.join(", ")
                ));
            }
        }
        Ok(items)
    }
}

/// The items of `text`: split at the commas outside quotes and brackets, empty ones
/// dropped.
fn split(text: &str) -> Result<Vec<&str>, String> {
    let mut items = Vec::new();
    let (mut quoted, mut depth, mut start) = (false, 0usize, 0);
    for (at, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '[' if !quoted => depth += 1,
            ']' if !quoted => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("`{text}` closes a bracket it never opened"))?;
            }
            ',' if !quoted && depth == 0 => {
                items.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err(format!("`{text}` has an unclosed quote"));
    }
    if depth > 0 {
        return Err(format!("`{text}` has an unclosed bracket"));
    }
    items.push(&text[start..]);
    Ok(items.into_iter().filter(|item| !item.is_empty()).collect())
}

/// `value` without the double quotes in it (Cloud Hypervisor drops them all).
fn unquote(value: &str) -> String {
    value.replace('"', "")
}

/// An `on`/`off` (or `true`/`false`) value of `key`.
pub fn switch(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("`{key}` takes on or off, not `{value}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISK: Keys = Keys {
        supported: &["path", "readonly"],
        defaults: &[("iommu", &["off"]), ("id", &["*"])],
        unsupported: &["vhost_user"],
    };

    fn keys_and_values(text: &str) -> Vec<(String, String)> {
        DISK.parse(text)
            .unwrap()
            .into_iter()
            .map(|item| (item.key.to_string(), item.value))
            .collect()
    }

    #[test]
    fn quotes_and_brackets_keep_their_commas() {
        let items = keys_and_values(r#"path="/a,b.img",readonly=on"#);

        assert_eq!(
            items,
            [
                ("path".to_string(), "/a,b.img".to_string()),
                ("readonly".to_string(), "on".to_string())
            ]
        );
        assert_eq!(split("a=[0,1],b=2").unwrap(), ["a=[0,1]", "b=2"]);
    }

    #[test]
    fn default_valued_keys_are_taken_and_dropped_others_are_named() {
        let items = keys_and_values("path=a,iommu=off,id=disk0");
        let on = DISK.parse("path=a,iommu=on").unwrap_err();
        let vhost = DISK.parse("path=a,vhost_user=on").unwrap_err();
        let unknown = DISK.parse("path=a,bogus=1").unwrap_err();

        assert_eq!(items, [("path".to_string(), "a".to_string())]);
        assert!(on.contains("not supported by kvmkit"), "{on}");
        assert!(vhost.contains("kvmkit does not support"), "{vhost}");
        assert!(
            unknown.contains("unknown option `bogus`") && unknown.contains("path, readonly"),
            "{unknown}"
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        for text in [r#"path="a"#, "path=[a", "path=a]", "path=a,path=b"] {
            assert!(DISK.parse(text).is_err(), "{text}");
        }
    }
}
