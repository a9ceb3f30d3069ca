//! `hyper-stats selftest` on this machine's kernel: it passes here, its
//! numbers are what it says they are, and it fails cleanly (exit code,
//! cause, fix) when it cannot run.
//!
//! Needs root and an agent built with the eBPF object, like the other
//! kernel tests: `cargo xtask test` runs it; by hand,
//! `cargo test -p hyper-stats --test selftest -- --ignored --test-threads=1`.
//! The other kernels are covered by `cargo xtask lab kernels`, which boots
//! each and runs the same command as init.

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

/// Runs the agent's selftest with `args`, as `uid` if given.
fn selftest(args: &[&str], uid: Option<u32>) -> (Output, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hyper-stats"));
    cmd.arg("selftest").args(args);
    if let Some(uid) = uid {
        // std drops the supplementary groups when it changes the uid.
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().expect("the agent runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out, stdout)
}

/// The line starting with `prefix`, panicking if there is none.
fn line<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{stdout}"))
}

/// `(probes, schedstat, printed deviation in %)` of a `check` line.
fn numbers(check: &str) -> (u64, u64, f64) {
    let word_after = |key: &str| -> &str {
        let rest = &check[check
            .find(key)
            .unwrap_or_else(|| panic!("{key} in {check}"))
            + key.len()..];
        rest.split_whitespace().next().unwrap()
    };
    (
        word_after("probes ").parse().unwrap(),
        word_after("schedstat ").parse().unwrap(),
        word_after("off ").trim_end_matches('%').parse().unwrap(),
    )
}

#[test]
#[ignore = "needs root and the eBPF object: cargo xtask test"]
fn selftest_passes_on_this_kernel_and_its_numbers_add_up() {
    let (out, stdout) = selftest(&[], None);
    assert!(out.status.success(), "selftest failed:\n{stdout}");
    assert_eq!(stdout.lines().last(), Some("verdict: PASS"));
    assert!(line(&stdout, "btf: /sys/kernel/btf/vmlinux (").contains("mapped"));
    assert!(line(&stdout, "programs: ").contains("tp_btf sched_switch"));
    for name in ["run-queue", "on-cpu"] {
        let check = line(&stdout, &format!("check {name}: "));
        assert!(check.ends_with(": ok"), "{check}");
        // The printed deviation is the printed numbers' deviation, and
        // within 2%: recomputed here, not taken from the tool's word.
        let (probes, kernel, printed) = numbers(check);
        let deviation = probes.abs_diff(kernel) as f64 / kernel as f64 * 100.0;
        assert!((deviation - printed).abs() < 0.001, "{check}");
        assert!(deviation <= 2.0, "{check}");
        assert!(kernel > 10_000_000, "too little to compare: {check}");
    }
    let switches = line(&stdout, "check switches: ");
    let counts: Vec<&str> = switches
        .split([',', ':'])
        .filter_map(|part| part.split_whitespace().last())
        .filter(|w| w.contains('/'))
        .collect();
    assert_eq!(counts.len(), 2, "{switches}");
    for pair in counts {
        let (probes, kernel) = pair.split_once('/').unwrap();
        assert_eq!(probes, kernel, "{switches}");
    }
}

#[test]
#[ignore = "needs root and the eBPF object: cargo xtask test"]
fn selftest_as_a_user_fails_naming_the_capabilities() {
    let (out, stdout) = selftest(&[], Some(65534));
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(
        line(&stdout, "verdict: "),
        "verdict: FAIL: loading eBPF programs needs CAP_BPF and CAP_PERFMON, which the agent (uid 65534) does not have"
    );
    assert_eq!(
        line(&stdout, "fix: "),
        "fix: run the agent as root, or with CAP_BPF and CAP_PERFMON (the packaged systemd unit grants them)"
    );
}

#[test]
#[ignore = "needs root and the eBPF object: cargo xtask test"]
fn selftest_without_readable_btf_fails_naming_the_file() {
    let (out, stdout) = selftest(&["--btf", "/nonexistent/vmlinux"], None);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(
        line(&stdout, "verdict: "),
        "verdict: FAIL: the kernel has no BTF (/nonexistent/vmlinux is missing)"
    );
    assert!(line(&stdout, "fix: ").contains("CONFIG_DEBUG_INFO_BTF=y"));

    // A file that is there but is no BTF (as a truncated or foreign file
    // would be): the cause names the file and what was wrong with it.
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("vmlinux");
    std::fs::write(&bogus, b"not BTF at all, just some bytes").unwrap();
    let (out, stdout) = selftest(&["--btf", bogus.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let verdict = line(&stdout, "verdict: ");
    assert!(
        verdict.starts_with(&format!(
            "verdict: FAIL: cannot read the kernel's BTF at {}: ",
            bogus.display()
        )),
        "{verdict}"
    );
    assert!(verdict.contains("magic"), "{verdict}");
}
