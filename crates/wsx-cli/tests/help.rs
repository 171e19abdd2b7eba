//! `wsx --help` and each subcommand's: examples, and a default (or a reason for none) for every
//! option that takes a value.

mod common;

use std::process::Command;

use common::WSX;

/// Options that take a value and have no default: each is off unless given.
const NO_DEFAULT: &[&str] = &[
    // serve
    "--tls-cert",
    "--tls-key",
    "--allow-origin",
    "--publish-token",
    "--exec",
    "--sh",
    "--to",
    "--broker",
    "--broker-ca",
    "--broker-cert",
    "--broker-key",
    // connect
    "--header",
    "--protocol",
    "--origin",
    "--count",
    "--timeout",
    "--cacert",
    "--proxy",
    "--close-reason",
    "--listen",
    // bench
    "--also",
];

fn help(args: &[&str]) -> String {
    let output = Command::new(WSX).args(args).arg("--help").output().unwrap();
    assert!(output.status.success(), "{args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// Each option of a help text with its description: (long name, whole entry).
fn options(text: &str) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let starts_option = (2..=6).contains(&indent) && trimmed.starts_with('-');
        if starts_option {
            let long = trimmed
                .split([' ', ','])
                .find(|w| w.starts_with("--"))
                .unwrap_or_else(|| panic!("no long name in {line:?}"))
                .to_owned();
            entries.push((long, trimmed.to_owned()));
        } else if let Some((_, entry)) = entries.last_mut() {
            if trimmed.is_empty() || !line.starts_with("  ") {
                continue;
            }
            entry.push(' ');
            entry.push_str(trimmed);
        }
    }
    entries
}

#[test]
fn every_help_has_examples_and_every_valued_option_a_default() {
    let top = help(&[]);
    assert!(top.contains("Examples:"), "{top}");
    for command in ["serve", "connect", "bench"] {
        assert!(top.contains(&format!("\n  {command} ")), "{command} missing from {top}");
        let text = help(&[command]);
        let examples = text.split("Examples:").nth(1).unwrap_or_else(|| panic!("{text}"));
        assert!(
            examples.lines().any(|l| l.trim_start().starts_with(&format!("wsx {command}"))),
            "{command}: {examples}"
        );
        let options = options(text.split("Examples:").next().unwrap());
        assert!(options.len() > 5, "{command}: parsed {options:?}");
        for (name, entry) in options {
            let takes_value = entry.split_whitespace().nth(1).is_some_and(|w| w.starts_with('<'))
                || entry.contains(&format!("{name} <"));
            if takes_value && !NO_DEFAULT.contains(&name.as_str()) {
                assert!(entry.contains("[default:"), "{command} {name}: no default in {entry:?}");
            }
            // A description, not just the flag.
            assert!(entry.split_whitespace().count() > 3, "{command} {name}: {entry:?}");
        }
    }
}
