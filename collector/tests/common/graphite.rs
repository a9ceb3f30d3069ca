//! A Graphite of the test's own for the dashboard: carbon-cache and
//! graphite-web (Debian's graphite-carbon and graphite-web, run by hand on
//! 127.0.0.1 with their own config, storage and ports), and the dashboard
//! itself in front of them. Every process is started here and stopped by
//! its pid.
//!
//! carbon-cache gets the shipped `storage-aggregation.conf` (from
//! `collector/graphite/`, so `.buckets.` roll up with `sum`) and the
//! README's retentions; graphite-web reads the same whisper tree and asks the cache for what it
//! has not written yet (`CARBONLINK_HOSTS`).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::daemon::Daemon;
use super::http;
use super::ports::{free_port, free_ports};

/// The storage-aggregation.conf the package ships (and the README
/// shows), first match wins: `.buckets.` sum, percentiles max.
const AGGREGATION: &str = include_str!("../../graphite/storage-aggregation.conf");

/// One rendered series: its name and its (timestamp, value) points.
pub type Series = (String, Vec<(i64, Option<f64>)>);

/// Writes a carbon-cache configuration under `dir` (`carbon.conf`, the
/// 1 s schema for every series, the shipped `storage-aggregation.conf`),
/// listening on loopback only, with whisper files under
/// `dir/storage/whisper`; returns its line, pickle and cache query ports.
pub fn write_carbon_config(dir: &Path) -> [u16; 3] {
    let [line_port, pickle_port, query_port] = free_ports::<3>();
    std::fs::create_dir_all(dir.join("storage/whisper")).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("carbon.conf"),
        format!(
            "[cache]\nSTORAGE_DIR = {d}/storage/\nLOCAL_DATA_DIR = {d}/storage/whisper/\n\
             CONF_DIR = {d}/\nLOG_DIR = {d}/log/\nPID_DIR = {d}/\nUSER =\n\
             MAX_CACHE_SIZE = inf\nMAX_UPDATES_PER_SECOND = inf\nMAX_CREATES_PER_MINUTE = inf\n\
             LINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {line_port}\n\
             PICKLE_RECEIVER_INTERFACE = 127.0.0.1\nPICKLE_RECEIVER_PORT = {pickle_port}\n\
             CACHE_QUERY_INTERFACE = 127.0.0.1\nCACHE_QUERY_PORT = {query_port}\n\
             ENABLE_UDP_LISTENER = False\nLOG_LISTENER_CONNECTIONS = False\n\
             WHISPER_SPARSE_CREATE = True\nWHISPER_FALLOCATE_CREATE = False\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("storage-schemas.conf"),
        "[hyperstats]\npattern = .*\nretentions = 1s:6h,10s:7d,1m:90d\n",
    )
    .unwrap();
    std::fs::write(dir.join("storage-aggregation.conf"), AGGREGATION).unwrap();
    [line_port, pickle_port, query_port]
}

/// A carbon-cache of the test's own.
pub struct Carbon {
    /// Its line-protocol port.
    pub line_port: u16,
    /// Its cache query port (for graphite-web).
    pub query_port: u16,
    /// The whisper tree.
    pub whisper: PathBuf,
    /// The process, by its pid file.
    _daemon: Daemon,
}

impl Carbon {
    /// Writes a config under `dir` and starts carbon-cache.
    pub fn start(dir: &Path) -> Carbon {
        assert!(
            Path::new("/usr/bin/carbon-cache").exists(),
            "carbon-cache is missing: run `cargo xtask setup` (installs graphite-carbon)"
        );
        let [line_port, _, query_port] = write_carbon_config(dir);
        let whisper = dir.join("storage/whisper");
        let pidfile = dir.join("carbon.pid");
        let out = Command::new("carbon-cache")
            .arg(format!("--config={}", dir.join("carbon.conf").display()))
            .arg(format!("--pidfile={}", pidfile.display()))
            .arg(format!("--logdir={}", dir.join("log").display()))
            .arg("start")
            .output()
            .expect("carbon-cache runs");
        assert!(
            out.status.success(),
            "carbon-cache start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let daemon = Daemon::from_pid_file("carbon-cache", &pidfile);
        wait_listening("carbon-cache", line_port);
        wait_listening("carbon-cache's query port", query_port);
        Carbon {
            line_port,
            query_port,
            whisper,
            _daemon: daemon,
        }
    }
}

/// graphite-web (`graphite-manage runserver`) over a whisper tree.
pub struct GraphiteWeb {
    /// Its HTTP port.
    pub port: u16,
    /// Its settings, database and logs.
    dir: PathBuf,
    /// The process.
    child: Child,
}

impl GraphiteWeb {
    /// Starts graphite-web with its settings, database and logs under
    /// `dir`, reading `whisper` and asking the carbon-cache on
    /// `carbonlink_port` (if any) for unwritten points.
    pub fn start(dir: &Path, whisper: &Path, carbonlink_port: Option<u16>) -> GraphiteWeb {
        assert!(
            Path::new("/usr/bin/graphite-manage").exists(),
            "graphite-manage is missing: run `cargo xtask setup` (installs graphite-web)"
        );
        let port = free_port();
        std::fs::create_dir_all(dir.join("log")).unwrap();
        let carbonlink = carbonlink_port
            .map(|p| format!("['127.0.0.1:{p}']"))
            .unwrap_or_else(|| "[]".into());
        let d = dir.display();
        std::fs::write(
            dir.join("hs_graphite_settings.py"),
            format!(
                "SECRET_KEY = 'hyper-stats-test'\nTIME_ZONE = 'UTC'\n\
                 GRAPHITE_ROOT = '/usr/share/graphite-web'\nSTATIC_ROOT = '/usr/share/graphite-web/static'\n\
                 STORAGE_DIR = '{d}/'\nWHISPER_DIR = '{w}/'\nSTANDARD_DIRS = [WHISPER_DIR]\n\
                 LOG_DIR = '{d}/log/'\nINDEX_FILE = '{d}/index'\n\
                 DATABASES = {{'default': {{'NAME': '{d}/graphite.db', 'ENGINE': 'django.db.backends.sqlite3'}}}}\n\
                 CARBONLINK_HOSTS = {carbonlink}\nFETCH_TIMEOUT = 60\nFIND_TIMEOUT = 30\nDEFAULT_XFILES_FACTOR = 0\nLOG_ROTATION = False\n",
                w = whisper.display()
            ),
        )
        .unwrap();
        let manage = || {
            let mut c = Command::new("/usr/bin/graphite-manage");
            c.env("PYTHONPATH", dir)
                .env("GRAPHITE_SETTINGS_MODULE", "hs_graphite_settings")
                .stdin(Stdio::null());
            c
        };
        let out = manage()
            .args(["migrate", "--noinput"])
            .output()
            .expect("graphite-manage runs");
        assert!(
            out.status.success(),
            "graphite-manage migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::File::create(dir.join("log/runserver.log")).unwrap();
        let child = manage()
            .args(["runserver", &format!("127.0.0.1:{port}"), "--noreload"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("graphite-manage runserver starts");
        let g = GraphiteWeb {
            port,
            dir: dir.to_path_buf(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http::request(port, "GET", "/metrics/find?query=*", "text/plain", b"")
            .is_ok_and(|r| r.status == 200)
        {
            assert!(
                Instant::now() < deadline,
                "graphite-web did not answer; see {}/log/runserver.log",
                d
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        g
    }

    /// `/render` of `target` over `from..until` as JSON: (timestamp,
    /// value) of each series, in graphite-web's order.
    pub fn render(&self, target: &str, from: i64, until: i64) -> Vec<Series> {
        let r = http::get(
            self.port,
            &format!(
                "/render?target={}&from={from}&until={until}&format=json",
                http::encode(target)
            ),
        );
        assert_eq!(r.status, 200, "render {target}: {}", r.text());
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let points = s["datapoints"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| (p[1].as_i64().unwrap(), p[0].as_f64()))
                    .collect();
                (s["target"].as_str().unwrap().to_owned(), points)
            })
            .collect()
    }
}

impl Drop for GraphiteWeb {
    fn drop(&mut self) {
        // A failed check may be graphite-web's: show its last exception.
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(self.dir.join("log/exception.log"))
        {
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("graphite-web's exception.log ends:");
            for line in tail.iter().rev() {
                eprintln!("  {line}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hyper-stats dashboard` in front of a graphite-web.
pub struct Dashboard {
    /// Its port.
    pub port: u16,
    /// The process.
    child: Child,
}

impl Dashboard {
    /// Starts `binary dashboard --graphite http://127.0.0.1:graphite_port`.
    pub fn start(binary: &Path, graphite_port: u16) -> Dashboard {
        let port = free_port();
        let child = Command::new(binary)
            .args(["dashboard", "--graphite"])
            .arg(format!("http://127.0.0.1:{graphite_port}"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .spawn()
            .expect("hyper-stats dashboard starts");
        let d = Dashboard { port, child };
        wait_listening("the dashboard", port);
        d
    }

    /// The page's URL with `fragment` (after `#`).
    pub fn url(&self, fragment: &str) -> String {
        format!("http://127.0.0.1:{}/#{fragment}", self.port)
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_listening(what: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
