//! The Nagios core fixture: a Debian `nagios4` of the test's own, run as
//! user `nagios` with every file (config, status.dat, log, check results,
//! query socket, pid file) in a directory the test owns, one check
//! interval being 1 s; its `status.dat` read back; stopped by the pid it
//! wrote.
//!
//! [`Nagios::config`] writes the boilerplate every test needs (the `24x7`
//! time period, a `hs_true` command that runs `/bin/true`, a contact
//! `nobody` who is never notified) and takes the rest: the host, the
//! commands and services that run check_hyper_stats, object files to
//! include (the shipped service definitions) and `nagios.cfg` settings
//! (performance data). [`NagiosConfig::start`] validates the config with
//! `nagios4 -v` and starts the core with `-d`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::daemon::Daemon;
use super::nagios_ids;

/// Debian's Nagios 4 core (nagios4-core).
pub const NAGIOS: &str = "/usr/sbin/nagios4";

/// How to write a Nagios config; see [`Nagios::config`].
pub struct NagiosConfig {
    /// Where every file of this core goes.
    dir: PathBuf,
    /// Object definitions after the boilerplate, as written.
    objects: String,
    /// Further object files (`cfg_file=`).
    cfg_files: Vec<PathBuf>,
    /// `nagios.cfg` settings after the built-in ones, in order.
    settings: Vec<(String, String)>,
}

impl NagiosConfig {
    /// Adds `define KIND { KEY VALUE ... }`.
    pub fn object(mut self, kind: &str, directives: &[(&str, &str)]) -> Self {
        self.objects += &format!("define {kind} {{\n");
        for (key, value) in directives {
            self.objects += &format!(" {key} {value}\n");
        }
        self.objects += "}\n";
        self
    }

    /// Adds a command.
    pub fn command(self, name: &str, line: &str) -> Self {
        self.object("command", &[("command_name", name), ("command_line", line)])
    }

    /// Adds a host at 127.0.0.1, always up (`hs_true`), contact `nobody`,
    /// with `directives` (a template, check intervals, custom variables).
    pub fn host(self, name: &str, directives: &[(&str, &str)]) -> Self {
        let mut all = vec![
            ("host_name", name),
            ("address", "127.0.0.1"),
            ("check_command", "hs_true"),
            ("contacts", "nobody"),
        ];
        all.extend_from_slice(directives);
        self.object("host", &all)
    }

    /// Adds a service of `host` running `command`, in period `24x7`,
    /// contact `nobody`, with `directives` (intervals, custom variables).
    pub fn service(
        self,
        host: &str,
        description: &str,
        command: &str,
        directives: &[(&str, &str)],
    ) -> Self {
        let mut all = vec![
            ("host_name", host),
            ("service_description", description),
            ("check_command", command),
            ("check_period", "24x7"),
            ("notification_period", "24x7"),
            ("contacts", "nobody"),
        ];
        all.extend_from_slice(directives);
        self.object("service", &all)
    }

    /// Includes an object file (`cfg_file=path`).
    pub fn cfg_file(mut self, path: &Path) -> Self {
        self.cfg_files.push(path.to_path_buf());
        self
    }

    /// Adds the `nagios.cfg` setting `key=value`.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Service performance data appended to `file` in `template`.
    pub fn perfdata(self, file: &Path, template: &str) -> Self {
        self.set("process_performance_data", "1")
            .set("service_perfdata_file", &file.display().to_string())
            .set("service_perfdata_file_mode", "a")
            .set("service_perfdata_file_template", template)
    }

    /// Writes the config, has `nagios4 -v` validate it and starts
    /// `nagios4 -d`; returns once it wrote its pid file.
    pub fn start(self) -> Nagios {
        assert!(
            Path::new(NAGIOS).exists(),
            "{NAGIOS} is missing: run `cargo xtask setup` (installs nagios4-core)"
        );
        let d = &self.dir;
        let (uid, gid) = nagios_ids();
        for dir in [d.clone(), d.join("checkresults")] {
            std::fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        std::fs::write(d.join("resource.cfg"), "$USER1$=/usr/lib/nagios/plugins\n").unwrap();
        std::fs::write(
            d.join("objects.cfg"),
            format!(
                "define timeperiod {{\n timeperiod_name 24x7\n alias always\n sunday 00:00-24:00\n monday 00:00-24:00\n \
                 tuesday 00:00-24:00\n wednesday 00:00-24:00\n thursday 00:00-24:00\n friday 00:00-24:00\n saturday 00:00-24:00\n}}\n\
                 define command {{\n command_name hs_true\n command_line /bin/true\n}}\n\
                 define contact {{\n contact_name nobody\n host_notifications_enabled 0\n service_notifications_enabled 0\n \
                 host_notification_period 24x7\n service_notification_period 24x7\n host_notification_options n\n \
                 service_notification_options n\n host_notification_commands hs_true\n service_notification_commands hs_true\n}}\n\
                 {}",
                self.objects
            ),
        )
        .unwrap();
        let p = |name: &str| d.join(name).display().to_string();
        let mut cfg = format!(
            "log_file={}\ncfg_file={}\n",
            p("nagios.log"),
            p("objects.cfg")
        );
        for f in &self.cfg_files {
            cfg += &format!("cfg_file={}\n", f.display());
        }
        cfg += &format!(
            "resource_file={}\nstatus_file={}\nstatus_update_interval=1\n\
             object_cache_file={}\nprecached_object_file={}\ntemp_file={}\ntemp_path={}\nlock_file={}\n\
             check_result_path={}\nquery_socket={}\nstate_retention_file={}\nretain_state_information=0\ncommand_file={}\n\
             nagios_user=nagios\nnagios_group=nagios\ninterval_length=1\nuse_syslog=0\ncheck_external_commands=0\n\
             enable_notifications=0\nexecute_service_checks=1\nexecute_host_checks=1\n\
             service_inter_check_delay_method=n\nhost_inter_check_delay_method=n\n\
             check_result_reaper_frequency=1\nenable_flap_detection=0\n",
            p("resource.cfg"),
            p("status.dat"),
            p("objects.cache"),
            p("objects.precache"),
            p("nagios.tmp"),
            d.display(),
            p("nagios.pid"),
            p("checkresults"),
            p("nagios.qh"),
            p("retention.dat"),
            p("nagios.cmd"),
        );
        for (key, value) in &self.settings {
            cfg += &format!("{key}={value}\n");
        }
        let cfg_path = d.join("nagios.cfg");
        std::fs::write(&cfg_path, cfg).unwrap();
        let verify = Command::new(NAGIOS)
            .arg("-v")
            .arg(&cfg_path)
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "nagios4 -v rejected the config:\n{}",
            String::from_utf8_lossy(&verify.stdout)
        );
        let started = Instant::now();
        let status = Command::new(NAGIOS)
            .arg("-d")
            .arg(&cfg_path)
            .status()
            .unwrap();
        assert!(status.success(), "nagios4 -d failed");
        let daemon = Daemon::from_pid_file("nagios4", &d.join("nagios.pid"));
        Nagios {
            dir: self.dir,
            started,
            daemon,
        }
    }
}

/// A running Nagios 4 core of this test's; stopped by its pid when
/// dropped (SIGTERM, SIGKILL after 5 s).
pub struct Nagios {
    /// Its directory.
    dir: PathBuf,
    /// When `nagios4 -d` was run.
    started: Instant,
    /// The core, by the pid it wrote.
    daemon: Daemon,
}

impl Nagios {
    /// A config for a core with every file in `dir` (created, and owned
    /// by user nagios).
    pub fn config(dir: &Path) -> NagiosConfig {
        NagiosConfig {
            dir: dir.to_path_buf(),
            objects: String::new(),
            cfg_files: Vec::new(),
            settings: Vec::new(),
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// When it was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.daemon.pid()
    }

    /// Its status.dat, if it wrote one yet.
    pub fn status(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("status.dat")).ok()
    }

    /// Its log (empty if it wrote none).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nagios.log")).unwrap_or_default()
    }

    /// Stops it with SIGTERM and waits until it has exited (30 s at most).
    pub fn stop(self) {
        self.daemon.stop();
    }
}

/// The `servicestatus` block of status.dat for one service.
pub fn service_block(status: &str, description: &str) -> Option<String> {
    status
        .split("servicestatus {")
        .skip(1)
        .map(|b| b.split('}').next().unwrap_or_default())
        .find(|b| b.contains(&format!("service_description={description}\n")))
        .map(str::to_owned)
}

/// The state (0 OK .. 3 UNKNOWN) of a `servicestatus` block of a
/// check_hyper_stats service, checked against its output line.
pub fn service_state(block: &str) -> usize {
    let state = ["OK", "WARNING", "CRITICAL", "UNKNOWN"]
        .iter()
        .position(|s| block.contains(&format!("plugin_output=HYPER-STATS {s} - ")))
        .unwrap_or_else(|| panic!("no plugin output in {block}"));
    assert!(
        block.contains(&format!("current_state={state}\n")),
        "{block}"
    );
    state
}
