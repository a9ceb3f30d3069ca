//! The Debian package, installed on this machine and run the way its
//! systemd unit runs the agent.
//!
//! One test, in order: lintian finds no error in the `.deb`; `dpkg -i`
//! installs it (its postinst creates the user `hyper-stats` in the groups
//! `libvirt` and `nagios`); the files are where the README says;
//! `systemd-analyze verify` passes on the installed unit and `systemd-analyze
//! security --offline=true` scores it below 4.0; then the installed agent
//! runs as the unit's `User=`/`Group=`, with the user's groups, exactly the
//! unit's `AmbientCapabilities=` and bounding set and `NoNewPrivileges=`
//! (all parsed from the installed unit, started with `setpriv` since
//! systemd is not PID 1 here), in the `RuntimeDirectory=` and
//! `StateDirectory=` made as systemd makes them. There:
//! - each capability of the unit is needed: without any one of them
//!   `hyper-stats selftest` fails naming it;
//! - the probes attach (log line) and every lab guest gets libvirt series
//!   and eBPF series;
//! - the query socket and its directory belong to group `nagios`, and the
//!   installed `check_hyper_stats`, run by a real NRPE as `nagios` with the
//!   installed example fragment, answers from the installed paths;
//! - with `carbon.spool_dir` in the state directory and Carbon away, a
//!   clean stop writes its spool there;
//! - `dpkg -r` keeps the conffile, `dpkg -P` removes it and the state
//!   directory.
//!
//! libvirt: the lab's libvirtd (started by hand, no D-Bus) authenticates
//! clients other than root through polkit, which it cannot reach, so a user
//! in group `libvirt` cannot connect to it here. The agent therefore reaches
//! libvirtd's read-only socket through a proxy this test runs as root
//! (`qemu+unix:///system?socket=...`): what a compute node's libvirtd grants
//! the agent's user itself (polkit's `org.libvirt.unix.monitor`, or the
//! `libvirt` group). Everything else (probes, /proc, pid files, sockets) is
//! the agent's own access.
//!
//! Needs root, the lab and the `.deb` (`HYPER_STATS_DEB`), as `cargo xtask
//! test` provides: it builds the package first. Takes about 40 s. It
//! installs and purges the package `hyper-stats` on this machine (the
//! system user stays, as it would on a real purge).

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

mod common;

use common::{Agent, Daemon, Proxy, free_port, lab_guests, wait_for};

/// The variable `cargo xtask test` sets to the package it built.
const DEB_VAR: &str = "HYPER_STATS_DEB";

/// The Debian package's name.
const PACKAGE: &str = "hyper-stats";

/// The unit as installed.
const UNIT: &str = "/usr/lib/systemd/system/hyper-stats.service";

/// The conffile.
const CONFFILE: &str = "/etc/hyper-stats/hyper-stats.toml";

/// The installed Nagios plugin and the NRPE example fragment.
const PLUGIN: &str = "/usr/lib/nagios/plugins/check_hyper_stats";
const NRPE_EXAMPLE: &str = "/usr/share/doc/hyper-stats/examples/hyper-stats-nrpe.cfg";

/// The agent's query socket (the default, which the fragment names).
const SOCKET: &str = "/run/hyper-stats/hyper-stats.sock";

/// libvirtd's read-only socket, what the agent's read-only connection uses.
const LIBVIRT_RO_SOCKET: &str = "/run/libvirt/libvirt-sock-ro";

/// Debian's NRPE daemon and client.
const NRPE: &str = "/usr/sbin/nrpe";
const CHECK_NRPE: &str = "/usr/lib/nagios/plugins/check_nrpe";

/// Below this `systemd-analyze security` says "OK" (the issue's bar).
const MAX_EXPOSURE: f64 = 4.0;

/// How long the agent may take to give every guest libvirt and eBPF
/// series (the eBPF ones within 3 s of start on the lab, see ebpf_lab.rs;
/// slack for a loaded 2-core machine).
const SERIES_WITHIN: Duration = Duration::from_secs(30);

/// How long NRPE's check may take to judge real data: the plugin's gauge
/// windows need a few 5 s buckets.
const NRPE_ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// What the unit says about how the agent runs (the `[Service]` keys this
/// test applies by hand).
#[derive(Debug)]
struct Unit {
    /// `ExecStart=`, split on whitespace.
    exec_start: Vec<String>,
    /// `User=` and `Group=`.
    user: String,
    group: String,
    /// `AmbientCapabilities=` and `CapabilityBoundingSet=`, as setpriv
    /// names them (`bpf`, `perfmon`, ...).
    ambient: Vec<String>,
    bounding: Vec<String>,
    /// `NoNewPrivileges=yes`.
    no_new_privileges: bool,
    /// `RuntimeDirectory=` / `StateDirectory=` with their modes.
    runtime_dir: (PathBuf, u32),
    state_dir: (PathBuf, u32),
}

impl Unit {
    /// Parses the `[Service]` section of a unit file.
    fn parse(text: &str) -> Unit {
        let mut service = Vec::new();
        let mut in_service = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_service = line == "[Service]";
            } else if in_service
                && !line.starts_with('#')
                && let Some((k, v)) = line.split_once('=')
            {
                service.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let get = |key: &str| -> String {
            service
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .next_back()
                .unwrap_or_else(|| panic!("{UNIT} has no {key}="))
        };
        let caps = |key: &str| -> Vec<String> {
            get(key)
                .split_whitespace()
                .map(|c| {
                    c.strip_prefix("CAP_")
                        .unwrap_or_else(|| panic!("{key}: {c} is no capability"))
                        .to_ascii_lowercase()
                })
                .collect()
        };
        let mode = |key: &str| u32::from_str_radix(&get(key), 8).unwrap();
        Unit {
            exec_start: get("ExecStart")
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            user: get("User"),
            group: get("Group"),
            ambient: caps("AmbientCapabilities"),
            bounding: caps("CapabilityBoundingSet"),
            no_new_privileges: get("NoNewPrivileges") == "yes",
            runtime_dir: (
                Path::new("/run").join(get("RuntimeDirectory")),
                mode("RuntimeDirectoryMode"),
            ),
            state_dir: (
                Path::new("/var/lib").join(get("StateDirectory")),
                mode("StateDirectoryMode"),
            ),
        }
    }

    /// `setpriv` arguments that run a program as the unit would, with the
    /// ambient (and inheritable) capabilities `ambient`.
    fn setpriv_with(&self, ambient: &[String]) -> Vec<String> {
        let set = |caps: &[String]| {
            let mut s = String::from("-all");
            for c in caps {
                s.push_str(&format!(",+{c}"));
            }
            s
        };
        let mut args = vec![
            "setpriv".to_owned(),
            format!("--reuid={}", self.user),
            format!("--regid={}", self.group),
            // The user's groups from the group database, as systemd's
            // initgroups() for User= gives them.
            "--init-groups".to_owned(),
            format!("--inh-caps={}", set(ambient)),
            format!("--ambient-caps={}", set(ambient)),
            format!("--bounding-set={}", set(&self.bounding)),
        ];
        if self.no_new_privileges {
            args.push("--no-new-privs".to_owned());
        }
        args.push("--".to_owned());
        args
    }

    /// `setpriv` arguments for the unit's own capabilities.
    fn setpriv(&self) -> Vec<String> {
        self.setpriv_with(&self.ambient)
    }

    /// Makes `RuntimeDirectory=` and `StateDirectory=` as systemd does at
    /// start: owned by `User=`/`Group=`, with their modes. A runtime
    /// directory left by an earlier run is removed first (systemd removes
    /// it at stop), unless an agent still answers on its socket.
    fn make_directories(&self) {
        let (run, run_mode) = &self.runtime_dir;
        if run.exists() {
            assert!(
                std::os::unix::net::UnixStream::connect(SOCKET).is_err(),
                "an agent is listening on {SOCKET}: stop it before this test"
            );
            std::fs::remove_dir_all(run).unwrap();
        }
        for (dir, mode) in [(run, *run_mode), (&self.state_dir.0, self.state_dir.1)] {
            if !dir.exists() {
                std::fs::create_dir(dir).unwrap();
            }
            run_ok(
                Command::new("chown")
                    .arg(format!("{}:{}", self.user, self.group))
                    .arg(dir),
            );
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

/// Runs `cmd`, panicking with its output unless it succeeds; its output.
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `dpkg-query`'s status of the package, empty if unknown.
fn package_status() -> String {
    let out = Command::new("dpkg-query")
        .args(["--show", "--showformat=${db:Status-Abbrev}", PACKAGE])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Purges the package when dropped, so a failed test leaves nothing
/// installed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if !package_status().is_empty() {
            let _ = Command::new("dpkg").args(["--purge", PACKAGE]).output();
        }
        let _ = std::fs::remove_dir_all("/run/hyper-stats");
    }
}

/// The groups of `user` by name.
fn groups_of(user: &str) -> BTreeSet<String> {
    let out = run_ok(Command::new("id").args(["-nG", user]));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The value of `key:` in `/proc/PID/status`.
fn proc_status(pid: i32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// The capability mask setpriv's names stand for (from `capsh`'s table).
fn cap_mask(names: &[String]) -> u64 {
    names
        .iter()
        .map(|name| {
            let out = run_ok(Command::new("capsh").arg(format!("--explain=cap_{name}")));
            let text = String::from_utf8_lossy(&out.stdout);
            // "cap_bpf (39) [/proc/self/status:CapXXX: 0x...]"
            let number: u32 = text
                .split(['(', ')'])
                .nth(1)
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("capsh does not know cap_{name}: {text}"));
            1u64 << number
        })
        .fold(0, |m, b| m | b)
}

/// lintian on the package: no errors (warnings and infos are printed).
fn lintian(deb: &Path) {
    let out = Command::new("lintian")
        .arg("--display-info")
        .arg(deb)
        .output()
        .expect("lintian runs (cargo xtask setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("lintian:\n{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
}

/// `systemd-analyze`'s verdicts on the installed unit.
fn systemd_analyze() {
    run_ok(Command::new("systemd-analyze").args(["verify", UNIT]));
    let out = run_ok(Command::new("systemd-analyze").args(["security", "--offline=true", UNIT]));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    let score: f64 = line
        .split(": ")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no score in {line:?}"));
    eprintln!("systemd-analyze security: {line}");
    assert!(score < MAX_EXPOSURE, "{line}");
}

/// Each of the unit's capabilities is needed: without it the probes'
/// selftest fails, naming it.
fn every_capability_is_needed(unit: &Unit) {
    let selftest = |ambient: &[String]| {
        let args = unit.setpriv_with(ambient);
        let out = Command::new(&args[0])
            .args(&args[1..])
            .args(["/usr/bin/hyper-stats", "selftest", "--duration", "1s"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = selftest(&unit.ambient);
    assert_eq!(
        code,
        Some(0),
        "selftest with the unit's capabilities:\n{text}"
    );
    for cap in &unit.ambient {
        let fewer: Vec<String> = unit.ambient.iter().filter(|c| *c != cap).cloned().collect();
        let (code, text) = selftest(&fewer);
        assert_eq!(code, Some(1), "selftest without {cap} passed:\n{text}");
        let name = format!("CAP_{}", cap.to_ascii_uppercase());
        assert!(
            text.contains(&name),
            "selftest without {cap} does not name {name}:\n{text}"
        );
    }
}

/// NRPE on 127.0.0.1 as `nagios` with the installed example fragment;
/// stopped by its pid when dropped.
fn start_nrpe(dir: &Path) -> (Daemon, u16) {
    let port = free_port();
    run_ok(Command::new("chown").arg("nagios:nagios").arg(dir));
    let cfg = dir.join("nrpe.cfg");
    let pid_file = dir.join("nrpe.pid");
    std::fs::write(
        &cfg,
        format!(
            "log_facility=daemon\npid_file={}\nserver_port={port}\nserver_address=127.0.0.1\n\
             nrpe_user=nagios\nnrpe_group=nagios\nallowed_hosts=127.0.0.1\ndont_blame_nrpe=0\n\
             command_timeout=60\ninclude={NRPE_EXAMPLE}\n",
            pid_file.display()
        ),
    )
    .unwrap();
    run_ok(Command::new(NRPE).arg("-c").arg(&cfg).arg("-d"));
    let nrpe = Daemon::from_pid_file("nrpe", &pid_file);
    wait_for("NRPE to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    (nrpe, port)
}

#[test]
#[ignore = "needs root, the lab and the package: cargo xtask test"]
fn package_installs_runs_least_privileged_and_purges() {
    let deb = PathBuf::from(std::env::var_os(DEB_VAR).unwrap_or_else(|| {
        panic!("{DEB_VAR} is not set: run `cargo xtask test`, or `cargo xtask package` and set it to the .deb")
    }));
    let guests = lab_guests();
    assert!(!guests.is_empty(), "no lab guests: cargo xtask lab up");

    lintian(&deb);
    let _installed = Installed;
    run_ok(Command::new("dpkg").arg("-i").arg(&deb));
    assert_eq!(package_status(), "ii");

    // The files, where the README says.
    for path in [
        "/usr/bin/hyper-stats",
        PLUGIN,
        CONFFILE,
        UNIT,
        NRPE_EXAMPLE,
        "/usr/share/doc/hyper-stats/examples/hyper-stats-nagios.cfg",
        "/usr/share/doc/hyper-stats/examples/storage-schemas.conf",
        "/usr/share/doc/hyper-stats/examples/storage-aggregation.conf",
        "/usr/share/man/man1/hyper-stats.1.gz",
        "/usr/share/man/man1/hyper-stats-run.1.gz",
        "/usr/share/man/man1/check_hyper_stats.1.gz",
    ] {
        assert!(Path::new(path).is_file(), "{path} is not installed");
    }
    let conffiles =
        run_ok(Command::new("dpkg-query").args(["--show", "--showformat=${Conffiles}", PACKAGE]));
    assert!(String::from_utf8_lossy(&conffiles.stdout).contains(CONFFILE));
    run_ok(Command::new("/usr/bin/hyper-stats").args(["check-config", "--config", CONFFILE]));
    systemd_analyze();

    let unit = Unit::parse(&std::fs::read_to_string(UNIT).unwrap());
    let groups = groups_of(&unit.user);
    for group in ["libvirt", "nagios"] {
        assert!(
            groups.contains(group),
            "postinst did not add {} to {group}: {groups:?}",
            unit.user
        );
    }
    unit.make_directories();
    every_capability_is_needed(&unit);

    // The agent, as the unit runs it, reaching libvirtd through the proxy.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let proxy_path = tmp.path().join("libvirt-sock-ro");
    let _proxy = Proxy::start(&proxy_path, Path::new(LIBVIRT_RO_SOCKET));
    std::fs::set_permissions(&proxy_path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let uri = format!("qemu+unix:///system?socket={}", proxy_path.display());
    let [binary, flag, config, run] = &unit.exec_start[..] else {
        panic!(
            "ExecStart is not `BINARY --config FILE run`: {:?}",
            unit.exec_start
        );
    };
    assert_eq!((flag.as_str(), run.as_str()), ("--config", "run"));
    let agent = Agent::json()
        .wrapper(&unit.setpriv())
        .binary(Path::new(binary))
        .config(Path::new(config))
        .connect(&uri)
        .keep_log()
        .start();

    wait_for("eBPF probes attached", SERIES_WITHIN, || {
        (!agent.logged("eBPF probes attached.").is_empty()).then_some(())
    });
    assert!(
        agent.logged("eBPF probes are off").is_empty(),
        "{:?}",
        agent.log()
    );
    wait_for(
        "libvirt and eBPF series of every guest",
        SERIES_WITHIN,
        || {
            let points = agent.points();
            guests
                .iter()
                .all(|g| {
                    let of =
                        |metric: &str| points.iter().any(|p| &p.domain == g && p.metric == metric);
                    of("cpu.time_percent") && of("runq_latency_us.count")
                })
                .then_some(())
        },
    );

    // The process is what the unit asks for, nothing more.
    let pid = agent.pid();
    let uid = proc_status(pid, "Uid");
    let expected_uid =
        String::from_utf8_lossy(&run_ok(Command::new("id").args(["-u", &unit.user])).stdout)
            .trim()
            .to_owned();
    assert!(
        uid.split_whitespace().all(|u| u == expected_uid),
        "Uid: {uid}"
    );
    let cap_eff = u64::from_str_radix(&proc_status(pid, "CapEff"), 16).unwrap();
    assert_eq!(cap_eff, cap_mask(&unit.ambient), "CapEff");
    let cap_bnd = u64::from_str_radix(&proc_status(pid, "CapBnd"), 16).unwrap();
    assert_eq!(cap_bnd, cap_mask(&unit.bounding), "CapBnd");
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");

    // The socket and its directory: group nagios, 0660 and 0750.
    let nagios_gid: u32 =
        String::from_utf8_lossy(&run_ok(Command::new("getent").args(["group", "nagios"])).stdout)
            .split(':')
            .nth(2)
            .unwrap()
            .parse()
            .unwrap();
    let socket = std::fs::symlink_metadata(SOCKET).expect("the query socket exists");
    assert_eq!((socket.gid(), socket.mode() & 0o777), (nagios_gid, 0o660));
    let dir = std::fs::symlink_metadata(&unit.runtime_dir.0).unwrap();
    assert_eq!((dir.gid(), dir.mode() & 0o777), (nagios_gid, 0o750));

    // NRPE as nagios runs the installed plugin with the installed fragment.
    let nrpe_dir = tmp.path().join("nrpe");
    std::fs::create_dir(&nrpe_dir).unwrap();
    let (nrpe, port) = start_nrpe(&nrpe_dir);
    let answer = wait_for(
        "NRPE's check to judge the guests",
        NRPE_ANSWER_WITHIN,
        || {
            let out = Command::new(CHECK_NRPE)
                .args([
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-c",
                    "check_hyper_stats_vcpu_delay",
                ])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            matches!(out.status.code(), Some(0..=2)).then_some(text)
        },
    );
    eprintln!("check_nrpe: {}", answer.lines().next().unwrap_or(""));
    assert!(answer.starts_with("HYPER-STATS "), "{answer}");
    for g in &guests {
        assert!(
            answer.contains(&format!("'{g}.vcpu.0.delay_percent")),
            "{g} missing: {answer}"
        );
    }
    nrpe.stop();
    agent.stop();

    // The Carbon spool in the state directory: Carbon away, a clean stop
    // spools what was not sent.
    let spool = unit.state_dir.0.join("spool");
    let spool_config = tmp.path().join("spool.toml");
    std::fs::write(
        &spool_config,
        format!(
            "[carbon]\naddress = \"127.0.0.1:{}\"\nspool_dir = \"{}\"\n",
            free_port(),
            spool.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&spool_config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut spooler = Agent::json()
        .wrapper(&unit.setpriv())
        .binary(Path::new(binary))
        .config(&spool_config)
        .connect(&uri)
        .args(&["--duration", "4s"])
        .discard_stdout()
        .keep_log()
        .start();
    let status = spooler
        .wait_exit(Duration::from_secs(30))
        .expect("the spooling agent stops");
    assert!(status.success(), "{:?}", spooler.log());
    let spooled = std::fs::read_dir(&spool)
        .unwrap_or_else(|e| panic!("no spool at {}: {e}", spool.display()))
        .count();
    assert!(spooled > 0, "nothing spooled in {}", spool.display());
    assert_eq!(
        std::fs::metadata(&spool).unwrap().uid().to_string(),
        expected_uid
    );

    // Remove keeps the conffile; purge removes it and the state directory.
    run_ok(Command::new("dpkg").args(["-r", PACKAGE]));
    assert!(!Path::new("/usr/bin/hyper-stats").exists());
    assert!(
        Path::new(CONFFILE).is_file(),
        "dpkg -r removed the conffile"
    );
    assert!(unit.state_dir.0.exists());
    run_ok(Command::new("dpkg").args(["-P", PACKAGE]));
    assert!(!Path::new(CONFFILE).exists(), "dpkg -P left the conffile");
    assert!(
        !unit.state_dir.0.exists(),
        "dpkg -P left {}",
        unit.state_dir.0.display()
    );
    assert_eq!(package_status(), "");
}
