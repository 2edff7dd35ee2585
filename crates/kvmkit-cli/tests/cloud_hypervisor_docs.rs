// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Cloud Hypervisor's documented command lines, replayed through the runner's parser:
//! each is taken as written, or refused as not supported by kvmkit, naming what is
//! missing; none is ever called malformed or unknown. The lines and what each must
//! give are in `data/cloud-hypervisor-docs.txt`.

use kvmkit_cli::options::Options;

/// One documented command line and what the parser must make of it.
struct Case {
    expected: Result<(), String>,
    source: String,
    args: Vec<String>,
}

fn cases() -> Vec<Case> {
    include_str!("data/cloud-hypervisor-docs.txt")
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let mut fields = line.splitn(3, " | ");
            let (expected, source, args) = (
                fields.next().unwrap(),
                fields.next().unwrap(),
                fields.next().unwrap(),
            );
            let expected = match expected.strip_prefix("refused ") {
                Some(what) => Err(what.to_string()),
                None => Ok(()),
            };
            Case {
                expected,
                source: source.to_string(),
                args: shell_words(args),
            }
        })
        .collect()
}

/// `line` split as a shell splits it (words, double quotes joining and dropped).
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}

#[test]
fn cloud_hypervisors_documented_command_lines_run_or_are_refused_as_unsupported() {
    let cases = cases();

    let mut failures = Vec::new();
    for case in &cases {
        let args = std::iter::once("kvmkit".to_string()).chain(case.args.iter().cloned());
        let result = Options::from_args(args).map_err(|e| e.to_string());
        let fine = match (&case.expected, &result) {
            (Ok(()), Ok(_)) => true,
            (Err(what), Err(message)) => {
                message.contains(what.as_str())
                    && (message.contains("does not support") || message.contains("not supported"))
            }
            _ => false,
        };
        if !fine {
            failures.push(format!(
                "{}: {:?}\n  expected {:?}\n  got {:?}",
                case.source,
                case.args,
                case.expected,
                result.map(drop)
            ));
        }
    }

    assert!(cases.len() >= 50, "{} cases", cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_option_kvmkit_has_is_in_a_documented_line_that_runs() {
    let taken: Vec<String> = cases()
        .into_iter()
        .filter(|case| case.expected.is_ok())
        .flat_map(|case| case.args)
        .filter(|arg| arg.starts_with("--"))
        .collect();
    let command = <Options as clap::CommandFactory>::command();

    for option in command.get_arguments().filter(|arg| !arg.is_hide_set()) {
        let Some(long) = option.get_long() else {
            continue;
        };
        if long == "stats" {
            // kvmkit's own: Cloud Hypervisor has no such option.
            continue;
        }
        assert!(
            taken.contains(&format!("--{long}")),
            "--{long} is in no documented line kvmkit runs"
        );
    }
}
