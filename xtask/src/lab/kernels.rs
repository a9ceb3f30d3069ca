//! `cargo xtask lab kernels`: runs `hyper-stats selftest` on the host's
//! kernel and on each kernel listed in `lab/kernels.txt`, booted directly
//! under QEMU (TCG), and prints one table row per kernel.
//!
//! # What it owns
//! `<state>/kernels/`: per kernel release a directory holding `vmlinuz`
//! (taken from the Debian package, which is downloaded and extracted, never
//! installed) and `vmlinux` (its uncompressed ELF, which boots faster);
//! `initrd.img`, one uncompressed newc initramfs shared by every kernel
//! (busybox-static, the release agent with its eBPF object, the shared
//! libraries `ldd` names, and `lab/kernels/init`) with a stamp naming its
//! inputs; and `logs/`, the full console of each run.
//!
//! # Caching
//! A kernel whose directory has a `vmlinuz` is used without downloading
//! (apt is still asked, locally, which package a line names today). The
//! initramfs is rebuilt only when the agent binary, busybox, the library
//! list or the init script changed. `apt-get update` runs at most once, and
//! only when resolving or downloading a kernel fails.
//!
//! # Failures
//! Kernels run one after another, each with [`BOOT_TIMEOUT`]; the QEMU this
//! task started is killed by its pid when it runs over. A kernel whose
//! console has no `verdict: PASS` or no exit marker with code 0 fails: its
//! last [`TAIL_LINES`] console lines and its log path are printed, and the
//! task exits non-zero after every kernel has run.

use std::cmp::Ordering;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{cmd, image};
use crate::build_ebpf;

/// The kernels to boot, kept in the repository (format in its header).
const KERNEL_LIST: &str = include_str!("../../../lab/kernels.txt");

/// PID 1 of every boot: runs the selftest once and powers off.
const INIT_SCRIPT: &str = include_str!("../../../lab/kernels/init");

/// A boot plus the selftest takes 12-17 s under TCG on a lab machine; this
/// leaves room for a slower (say, PREEMPT_RT) kernel on a busy host while a
/// hung boot still ends well within a CI step.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// How often the running QEMU is checked for having exited: short next to
/// a boot, so the time column is not rounded up by much.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Console lines shown for a failed kernel: enough for a panic's head or
/// the selftest's whole report with its fix line.
const TAIL_LINES: usize = 20;

/// The kernel command line: the serial console the log captures, `quiet`
/// so the selftest's lines are not drowned, `panic=-1` so a panic reboots
/// (and `-no-reboot` ends QEMU) instead of hanging until the timeout,
/// `mitigations=off` because TCG gains nothing from them but time.
const KERNEL_APPEND: &str = "console=ttyS0 quiet panic=-1 mitigations=off";

/// The prefix of every Debian kernel image package; the rest of the name is
/// the kernel release (`linux-image-6.1.0-57-amd64` is `6.1.0-57-amd64`).
const IMAGE_PREFIX: &str = "linux-image-";

/// The line the init prints after the selftest, followed by its exit code.
const EXIT_MARKER: &str = "hyper-stats-selftest-exit=";

/// Where the init finds the directories of the agent's shared libraries
/// (for `LD_LIBRARY_PATH`: the initramfs has no `ld.so.cache`).
const LIBDIRS_FILE: &str = "etc/hyper-stats-libdirs";

/// Programs this task runs, with the Debian package that ships each.
const NEEDED_PROGRAMS: &[(&str, &str)] = &[
    ("apt-get", "apt"),
    ("apt-cache", "apt"),
    ("dpkg-deb", "dpkg"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("cpio", "cpio"),
    ("xz", "xz-utils"),
    ("ldd", "libc-bin"),
];

/// One line of `lab/kernels.txt`.
#[derive(Debug, PartialEq, Eq)]
enum Spec {
    /// The kernel package a Debian metapackage depends on today.
    Meta(String),
    /// The highest version among the packages matching a `*` glob.
    Newest(String),
    /// Exactly this package.
    Package(String),
}

/// What a selftest run printed, as far as it got.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    /// The `kernel:` line's release.
    kernel: Option<String>,
    /// The `check run-queue:` line.
    run_queue: Option<Check>,
    /// The `check on-cpu:` line.
    on_cpu: Option<Check>,
    /// The `check switches:` line.
    switches: Option<Check>,
    /// The text after `verdict: ` (`PASS`, or `FAIL: <cause>`).
    verdict: Option<String>,
    /// The selftest's exit code (the marker's, or the native process').
    exit: Option<i32>,
}

/// One `check NAME: ...: ok|FAIL` line.
#[derive(Debug, PartialEq)]
struct Check {
    /// The `off X%` deviation, e.g. `0.001%` (none on the switches line).
    off: Option<String>,
    /// For the switches line: whether both `a/b` counts are equal.
    equal: Option<bool>,
    /// Whether the line ends in `: ok`.
    ok: bool,
}

impl Outcome {
    /// Whether the run passed: `verdict: PASS` and exit code 0.
    fn passed(&self) -> bool {
        self.verdict.as_deref() == Some("PASS") && self.exit == Some(0)
    }

    /// The table's verdict column.
    fn verdict_word(&self) -> &'static str {
        match (&self.verdict, self.exit) {
            _ if self.passed() => "PASS",
            (None, None) => "NO-RUN",
            _ => "FAIL",
        }
    }

    /// Why a run that did not pass failed, in a few words.
    fn failure(&self) -> String {
        match (&self.verdict, self.exit) {
            (None, None) => format!(
                "no verdict and no exit marker (timed out after {} s, or the kernel panicked)",
                BOOT_TIMEOUT.as_secs()
            ),
            (None, Some(code)) => format!("the selftest exited with {code} without a verdict"),
            (Some(v), Some(0)) if v != "PASS" => format!("verdict {v}, yet exit code 0"),
            (Some(v), code) => format!(
                "verdict {v}, exit code {}",
                code.map_or("missing".to_string(), |c| c.to_string())
            ),
        }
    }
}

/// Parses `lab/kernels.txt`: `KIND NAME` per line, `#` comments.
fn parse_list(text: &str) -> Result<Vec<Spec>> {
    let mut specs = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(kind), Some(name), None) = (words.next(), words.next(), words.next()) else {
            bail!(
                "invalid line {} in lab/kernels.txt: {line:?}\nwrite `meta NAME`, `newest GLOB` or `package NAME`",
                n + 1
            );
        };
        let name = name.to_string();
        specs.push(match kind {
            "meta" => Spec::Meta(name),
            "newest" => Spec::Newest(name),
            "package" => Spec::Package(name),
            _ => bail!(
                "invalid kind {kind:?} on line {} in lab/kernels.txt\nuse meta, newest or package",
                n + 1
            ),
        });
    }
    if specs.is_empty() {
        bail!("lab/kernels.txt lists no kernel\nadd a line such as `meta linux-image-amd64`");
    }
    Ok(specs)
}

/// Whether `name` matches `pattern`, where `*` matches any run of
/// characters (possibly empty) and everything else matches itself.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    rest.ends_with(last) && rest.len() >= last.len()
}

/// Compares two names the way `sort -V` does for kernel packages: runs of
/// digits by value, everything else byte by byte.
fn compare_versions(a: &str, b: &str) -> Ordering {
    fn runs(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[i - 1].is_ascii_digit() {
                out.push(&s[start..i]);
                start = i;
            }
        }
        out
    }
    let (ra, rb) = (runs(a), runs(b));
    for (x, y) in ra.iter().zip(&rb) {
        let order = if x.as_bytes()[0].is_ascii_digit() && y.as_bytes()[0].is_ascii_digit() {
            let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        } else {
            x.cmp(y)
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    ra.len().cmp(&rb.len())
}

/// The highest-versioned name matching `pattern`.
fn newest<'a>(pattern: &str, names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    names
        .into_iter()
        .filter(|n| glob_match(pattern, n))
        .max_by(|a, b| compare_versions(a, b))
}

/// A POSIX extended regex matching exactly what `glob` matches, for
/// `apt-cache search --names-only`.
fn glob_regex(glob: &str) -> String {
    let mut re = String::from("^");
    for c in glob.chars() {
        match c {
            '*' => re.push_str(".*"),
            '.' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '^' | '$' | '|' | '\\' => {
                re.push('\\');
                re.push(c);
            }
            _ => re.push(c),
        }
    }
    re.push('$');
    re
}

/// The package a line of the list names today, asking apt (locally).
fn resolve(spec: &Spec) -> Result<String> {
    match spec {
        Spec::Meta(meta) => image::metapackage_kernel(meta),
        Spec::Package(name) => Ok(name.clone()),
        Spec::Newest(glob) => {
            let found = cmd::capture(Command::new("apt-cache").args([
                "search",
                "--names-only",
                &glob_regex(glob),
            ]))
            .with_context(|| format!("failed to ask apt for packages matching {glob}"))?;
            newest(
                glob,
                found.lines().filter_map(|l| l.split_whitespace().next()),
            )
            .map(str::to_string)
            .with_context(|| {
                format!("apt knows no package matching {glob}\nrun `apt-get update` and try again")
            })
        }
    }
}

/// The paths of the shared objects in `ldd` output (the loader included),
/// failing on a library `ldd` could not find.
fn ldd_paths(output: &str) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for line in output.lines().map(str::trim) {
        if line.contains("not found") {
            bail!(
                "ldd cannot find a library of the agent: {line}\ninstall it (`cargo xtask setup`)"
            );
        }
        let target = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = target.filter(|p| p.starts_with('/')) {
            paths.push(PathBuf::from(path));
        }
    }
    Ok(paths)
}

/// Parses a selftest's output (a console log, or the native run's output).
fn parse_output(text: &str) -> Outcome {
    let mut outcome = Outcome::default();
    for line in text
        .lines()
        .map(|l| l.trim_matches(|c: char| c.is_whitespace()))
    {
        if let Some(release) = line.strip_prefix("kernel: ") {
            outcome.kernel = Some(release.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("check run-queue: ") {
            outcome.run_queue = Some(parse_check(rest));
        } else if let Some(rest) = line.strip_prefix("check on-cpu: ") {
            outcome.on_cpu = Some(parse_check(rest));
        } else if let Some(rest) = line.strip_prefix("check switches: ") {
            outcome.switches = Some(parse_check(rest));
        } else if let Some(verdict) = line.strip_prefix("verdict: ") {
            outcome.verdict = Some(verdict.trim().to_string());
        } else if let Some(pos) = line.find(EXIT_MARKER) {
            outcome.exit = line[pos + EXIT_MARKER.len()..].trim().parse().ok();
        }
    }
    outcome
}

/// Parses the part of a `check` line after its name.
fn parse_check(rest: &str) -> Check {
    let ok = rest.ends_with(": ok");
    let off = rest
        .split_once("off ")
        .and_then(|(_, after)| after.find('%').map(|end| after[..=end].trim().to_string()));
    // `voluntary 12/12, involuntary 40/40`: every `a/b` pair equal.
    let pairs: Vec<bool> = rest
        .split(|c: char| c == ',' || c == ':' || c.is_whitespace())
        .filter_map(|w| w.split_once('/'))
        .filter(|(a, b)| a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok())
        .map(|(a, b)| a == b)
        .collect();
    let equal = (!pairs.is_empty()).then(|| pairs.iter().all(|&e| e));
    Check { off, equal, ok }
}

/// The table's header line.
fn header() -> String {
    format!(
        "{:<27} {:<8} {:<10} {:<8} {:<9} {}",
        "kernel", "verdict", "run-queue", "on-CPU", "switches", "time"
    )
}

/// One table row for `label`'s `outcome`, which took `elapsed`.
fn row(label: &str, outcome: &Outcome, elapsed: Duration) -> String {
    let off = |c: &Option<Check>| {
        c.as_ref()
            .and_then(|c| c.off.clone())
            .unwrap_or_else(|| "-".to_string())
    };
    let switches = match outcome.switches.as_ref().and_then(|c| c.equal) {
        Some(true) => "equal",
        Some(false) => "differ",
        None => "-",
    };
    format!(
        "{:<27} {:<8} {:<10} {:<8} {:<9} {:.1}s",
        label,
        outcome.verdict_word(),
        off(&outcome.run_queue),
        off(&outcome.on_cpu),
        switches,
        elapsed.as_secs_f64()
    )
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// One finished run: its table label, outcome, time and full log.
struct Run {
    /// The kernel release.
    label: String,
    /// What the selftest printed.
    outcome: Outcome,
    /// Boot plus test (or the native run) wall time.
    elapsed: Duration,
    /// The file holding the run's whole console or output.
    log: PathBuf,
}

/// Runs the matrix: the host, then every listed kernel.
pub fn run() -> Result<()> {
    let since = Instant::now();
    cmd::require_root("lab kernels")?;
    cmd::require_programs(NEEDED_PROGRAMS)?;
    let specs = parse_list(KERNEL_LIST)?;
    let dir = super::state_dir().join("kernels");
    let logs = dir.join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("failed to create {}", logs.display()))?;

    // The kernels first: a download failure should stop the task before
    // the long agent build.
    let mut apt_updated = false;
    let mut kernels = Vec::new();
    for spec in &specs {
        let kernel = match ensure_kernel(&dir, spec) {
            Ok(kernel) => kernel,
            Err(e) if !apt_updated => {
                println!("lab: {e:#}\nlab: running apt-get update once and trying again");
                apt_update()?;
                apt_updated = true;
                ensure_kernel(&dir, spec)?
            }
            Err(e) => return Err(e),
        };
        kernels.push(kernel);
    }
    let agent = build_ebpf::release_agent()
        .context("failed to build the release agent for the kernel matrix")?;
    let initrd = ensure_initrd(&dir, &agent)?;

    let mut runs = vec![run_native(&agent, &logs)?];
    println!("{}", header());
    println!("{}", row(&runs[0].label, &runs[0].outcome, runs[0].elapsed));
    for (release, kernel) in &kernels {
        let run = boot(release, kernel, &initrd, &logs)?;
        println!("{}", row(&run.label, &run.outcome, run.elapsed));
        runs.push(run);
    }
    println!(
        "lab: {} kernels in {:.1} s",
        runs.len(),
        since.elapsed().as_secs_f64()
    );

    let failed: Vec<&Run> = runs.iter().filter(|r| !r.outcome.passed()).collect();
    for run in &failed {
        let text = fs::read_to_string(&run.log).unwrap_or_default();
        println!(
            "\nkernel {} failed: {}\nlast {TAIL_LINES} lines of {}:",
            run.label,
            run.outcome.failure(),
            run.log.display()
        );
        for line in tail(&text, TAIL_LINES) {
            println!("  {}", line.trim_end_matches('\r'));
        }
    }
    if !failed.is_empty() {
        bail!(
            "the selftest failed on {} of {} kernels: {}\nsee the console logs above",
            failed.len(),
            runs.len(),
            failed
                .iter()
                .map(|r| r.label.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Runs `apt-get update` (the lists may be missing or name kernels the
/// mirror no longer has).
fn apt_update() -> Result<()> {
    cmd::capture(
        Command::new("apt-get")
            .args(["update", "-q", "-o", "DPkg::Lock::Timeout=300"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .map(drop)
}

/// Returns the release and the kernel file to boot for `spec`, downloading
/// and extracting the package unless its release is cached.
fn ensure_kernel(dir: &Path, spec: &Spec) -> Result<(String, PathBuf)> {
    let package = resolve(spec)?;
    let Some(release) = package.strip_prefix(IMAGE_PREFIX) else {
        bail!(
            "{package} is not a kernel image package\nlist only {IMAGE_PREFIX}* packages in lab/kernels.txt"
        );
    };
    let kernel_dir = dir.join(release);
    if !kernel_dir.join("vmlinuz").is_file() {
        fetch_kernel(dir, &package, &kernel_dir)?;
    }
    let kernel = match image::ensure_vmlinux(&kernel_dir) {
        Ok(vmlinux) => vmlinux,
        Err(e) => {
            println!("lab: booting the compressed kernel of {release} (slower): {e:#}");
            kernel_dir.join("vmlinuz")
        }
    };
    Ok((release.to_string(), kernel))
}

/// Downloads `package`, extracts it to a scratch directory and keeps only
/// its `/boot/vmlinuz-*` as `<kernel_dir>/vmlinuz`.
fn fetch_kernel(dir: &Path, package: &str, kernel_dir: &Path) -> Result<()> {
    println!("lab: downloading {package} (extracted, not installed)");
    let download = dir.join("download.tmp");
    let (deb, tree) = image::download_deb(&download, package)?;
    let vmlinuz = fs::read_dir(tree.join("boot"))
        .with_context(|| format!("{} has no /boot", deb.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{} has no /boot/vmlinuz-*", deb.display()))?;
    let staging = kernel_dir.with_extension("tmp");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)
        .with_context(|| format!("failed to create {}", staging.display()))?;
    fs::copy(&vmlinuz, staging.join("vmlinuz"))
        .with_context(|| format!("failed to copy {}", vmlinuz.display()))?;
    let _ = fs::remove_dir_all(kernel_dir);
    fs::rename(&staging, kernel_dir)
        .with_context(|| format!("failed to rename {}", staging.display()))?;
    fs::remove_dir_all(&download)
        .with_context(|| format!("failed to remove {}", download.display()))?;
    println!("lab: cached {}", kernel_dir.join("vmlinuz").display());
    Ok(())
}

/// Returns `<dir>/initrd.img`, rebuilding it if its stamp does not match the
/// agent, busybox, the agent's libraries and the init script.
fn ensure_initrd(dir: &Path, agent: &Path) -> Result<PathBuf> {
    let initrd = dir.join("initrd.img");
    let stamp_path = dir.join("initrd.stamp");
    let Some(busybox) = cmd::find_program("busybox") else {
        bail!("busybox is not installed (Debian package busybox-static)\nrun `cargo xtask setup`");
    };
    let libs = ldd_paths(&cmd::capture(Command::new("ldd").arg(agent))?)?;
    let describe = |path: &Path| -> Result<String> {
        let meta =
            fs::metadata(path).with_context(|| format!("failed to stat {}", path.display()))?;
        Ok(format!(
            "{} {} bytes, modified {:?}",
            path.display(),
            meta.len(),
            meta.modified().ok()
        ))
    };
    let mut stamp = format!(
        "agent: {}\nbusybox: {}\n",
        describe(agent)?,
        describe(&busybox)?
    );
    for lib in &libs {
        stamp.push_str(&format!("lib: {}\n", describe(lib)?));
    }
    stamp.push_str(&format!("init:\n{INIT_SCRIPT}"));
    if initrd.is_file() && fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
        return Ok(initrd);
    }
    image::require_static(&busybox)?;

    let root = dir.join("initrd.tmp");
    let _ = fs::remove_dir_all(&root);
    for sub in ["bin", "dev", "proc", "sys", "tmp", "etc"] {
        fs::create_dir_all(root.join(sub))?;
    }
    fs::copy(&busybox, root.join("bin/busybox"))
        .with_context(|| format!("failed to copy {}", busybox.display()))?;
    // Debug info is most of a release binary here and nothing in the guest
    // reads it: strip it if objcopy is there (a smaller image loads faster).
    let agent_copy = root.join("bin/hyper-stats");
    let stripped = cmd::find_program("objcopy").is_some()
        && cmd::capture(
            Command::new("objcopy")
                .arg("--strip-debug")
                .arg(agent)
                .arg(&agent_copy),
        )
        .is_ok();
    if !stripped {
        fs::copy(agent, &agent_copy)
            .with_context(|| format!("failed to copy {}", agent.display()))?;
    }
    let mut libdirs: Vec<String> = Vec::new();
    for lib in &libs {
        let inside = root.join(lib.strip_prefix("/").unwrap_or(lib));
        if let Some(parent) = inside.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(lib, &inside).with_context(|| format!("failed to copy {}", lib.display()))?;
        if let Some(parent) = lib.parent().and_then(|p| p.to_str())
            && !libdirs.iter().any(|d| d == parent)
        {
            libdirs.push(parent.to_string());
        }
    }
    fs::write(root.join(LIBDIRS_FILE), libdirs.join(":") + "\n")?;
    fs::write(root.join("init"), INIT_SCRIPT)?;
    fs::set_permissions(root.join("init"), fs::Permissions::from_mode(0o755))?;

    let mut files = Vec::new();
    image::list_tree(&root, Path::new("."), &mut files)?;
    let tmp = dir.join("initrd.img.tmp");
    image::write_cpio(&root, &files, &tmp)?;
    fs::rename(&tmp, &initrd).with_context(|| format!("failed to rename {}", tmp.display()))?;
    fs::write(&stamp_path, stamp)?;
    fs::remove_dir_all(&root)?;
    println!("lab: built {}", initrd.display());
    Ok(initrd)
}

/// Runs `agent selftest` on the host's own kernel.
fn run_native(agent: &Path, logs: &Path) -> Result<Run> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("failed to read the host's kernel release from /proc/sys/kernel/osrelease")?
        .trim()
        .to_string();
    let log = logs.join(format!("host-{release}.log"));
    let since = Instant::now();
    let mut command = Command::new(agent);
    command.arg("selftest");
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start `{}`", cmd::show(&command)))?;
    let elapsed = since.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    fs::write(&log, &text).with_context(|| format!("failed to write {}", log.display()))?;
    let mut outcome = parse_output(&text);
    outcome.exit = output.status.code();
    Ok(Run {
        label: release,
        outcome,
        elapsed,
        log,
    })
}

/// Boots `kernel` with the shared initramfs under QEMU (TCG, no network)
/// and parses its console; kills the QEMU it started after
/// [`BOOT_TIMEOUT`].
fn boot(release: &str, kernel: &Path, initrd: &Path, logs: &Path) -> Result<Run> {
    let log = logs.join(format!("{release}.console"));
    let stderr_log = logs.join(format!("{release}.qemu-stderr"));
    let _ = fs::remove_file(&log);
    let stderr = fs::File::create(&stderr_log)
        .with_context(|| format!("failed to create {}", stderr_log.display()))?;
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(["-m", "1024", "-smp", "2", "-nic", "none", "-no-reboot"])
        .args(["-display", "none", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", KERNEL_APPEND])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let since = Instant::now();
    let mut child = command.spawn().with_context(|| {
        format!(
            "failed to start `{}`\nrun `cargo xtask setup`",
            cmd::show(&command)
        )
    })?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if since.elapsed() > BOOT_TIMEOUT {
            // `child` is the QEMU this task started: kill exactly that pid.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let elapsed = since.elapsed();
    let text = fs::read_to_string(&log).unwrap_or_default();
    if let Some(status) = status
        && !status.success()
        && text.is_empty()
    {
        bail!(
            "qemu for kernel {release} failed with {status}: {}\nsee {}",
            fs::read_to_string(&stderr_log).unwrap_or_default().trim(),
            stderr_log.display()
        );
    }
    let outcome = parse_output(&text);
    Ok(Run {
        label: outcome
            .kernel
            .clone()
            .unwrap_or_else(|| release.to_string()),
        outcome,
        elapsed,
        log,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSING: &str = "\
[    0.000000] Linux version 6.1.0-57-amd64\r
kernel: 6.1.0-57-amd64\r
btf: /sys/kernel/btf/vmlinux (read: mmap refused: No such device (os error 19))\r
programs: tp_btf sched_switch, sched_wakeup, sched_wakeup_new; kvm_exit/kvm_entry tracepoints not attached (no kvm module)\r
offsets: task_struct.pid=2456\r
check run-queue: probes 123456 ns, schedstat 123457 ns, off 0.001% (limit 2%): ok\r
check on-cpu: probes 123456 ns, schedstat 123457 ns, off 0.000% (limit 2%): ok\r
check switches: voluntary 12/12, involuntary 40/40: ok\r
verdict: PASS\r
hyper-stats-selftest-exit=0\r
[   16.1] reboot: Power down\r
";

    #[test]
    fn the_shipped_list_parses() {
        let specs = parse_list(KERNEL_LIST).unwrap();
        assert_eq!(
            specs,
            [
                Spec::Meta("linux-image-amd64".into()),
                Spec::Meta("linux-image-rt-amd64".into()),
                Spec::Newest("linux-image-6.12.*+deb12-amd64".into()),
            ]
        );
    }

    #[test]
    fn list_lines_are_checked() {
        let specs = parse_list("# c\n\n package linux-image-6.1.0-57-amd64 # pinned\n").unwrap();
        assert_eq!(specs, [Spec::Package("linux-image-6.1.0-57-amd64".into())]);
        let err = parse_list("latest linux-image-amd64\n").unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "invalid kind \"latest\" on line 1 in lab/kernels.txt\nuse meta, newest or package"
        );
        let err = parse_list("meta\n").unwrap_err();
        assert!(err.to_string().starts_with("invalid line 1"), "{err}");
        assert!(parse_list("# nothing\n").is_err());
    }

    #[test]
    fn globs_match_whole_names() {
        let glob = "linux-image-6.12.*+deb12-amd64";
        assert!(glob_match(glob, "linux-image-6.12.117+deb12-amd64"));
        assert!(!glob_match(glob, "linux-image-6.12.117+deb12-rt-amd64"));
        assert!(!glob_match(glob, "linux-image-6.12.117+deb12-amd64-dbg"));
        assert!(!glob_match(glob, "linux-image-6.1.0-57-amd64"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(!glob_match("ab*ba", "aba"));
        assert!(glob_match("exact", "exact"));
        assert_eq!(glob_regex(glob), r"^linux-image-6\.12\..*\+deb12-amd64$");
    }

    #[test]
    fn newest_compares_numbers_by_value() {
        let names = [
            "linux-image-6.12.43+deb12-amd64",
            "linux-image-6.12.117+deb12-amd64",
            "linux-image-6.12.117+deb12-amd64-unsigned",
            "linux-image-6.12.9+deb12-amd64",
            "linux-image-6.12.48+deb12-rt-amd64",
        ];
        assert_eq!(
            newest("linux-image-6.12.*+deb12-amd64", names),
            Some("linux-image-6.12.117+deb12-amd64")
        );
        assert_eq!(newest("linux-image-7.*", names), None);
        assert_eq!(
            compare_versions("6.1.0-57-amd64", "6.1.0-9-amd64"),
            Ordering::Greater
        );
        assert_eq!(compare_versions("6.1.0-057", "6.1.0-57"), Ordering::Equal);
    }

    #[test]
    fn ldd_output_gives_absolute_paths() {
        let out = "\tlinux-vdso.so.1 (0x00007ffc8a5f2000)\n\
            \tlibvirt.so.0 => /lib/x86_64-linux-gnu/libvirt.so.0 (0x00007f0e1c000000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e1be00000)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1d2f1000)\n";
        assert_eq!(
            ldd_paths(out).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libvirt.so.0"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(ldd_paths("\tlibfoo.so.1 => not found\n").is_err());
    }

    #[test]
    fn a_passing_console_parses() {
        let outcome = parse_output(PASSING);
        assert_eq!(
            outcome,
            Outcome {
                kernel: Some("6.1.0-57-amd64".into()),
                run_queue: Some(Check {
                    off: Some("0.001%".into()),
                    equal: None,
                    ok: true
                }),
                on_cpu: Some(Check {
                    off: Some("0.000%".into()),
                    equal: None,
                    ok: true
                }),
                switches: Some(Check {
                    off: None,
                    equal: Some(true),
                    ok: true
                }),
                verdict: Some("PASS".into()),
                exit: Some(0),
            }
        );
        assert!(outcome.passed());
        assert_eq!(
            row("6.1.0-57-amd64", &outcome, Duration::from_millis(16_240)),
            "6.1.0-57-amd64              PASS     0.001%     0.000%   equal     16.2s"
        );
        assert_eq!(
            header(),
            "kernel                      verdict  run-queue  on-CPU   switches  time"
        );
    }

    #[test]
    fn a_failing_console_parses() {
        let text = "kernel: 6.12.117+deb12-amd64\n\
            check run-queue: probes 100 ns, schedstat 200 ns, off 50.000% (limit 2%): FAIL\n\
            check switches: voluntary 11/12, involuntary 40/40: FAIL\n\
            verdict: FAIL: run-queue off by 50.000%\n\
            was collector-ebpf rebuilt?\n\
            hyper-stats-selftest-exit=1\n";
        let outcome = parse_output(text);
        assert!(!outcome.passed());
        assert!(!outcome.run_queue.as_ref().unwrap().ok);
        assert_eq!(outcome.switches.as_ref().unwrap().equal, Some(false));
        assert_eq!(outcome.on_cpu, None);
        assert_eq!(
            outcome.failure(),
            "verdict FAIL: run-queue off by 50.000%, exit code 1"
        );
        assert_eq!(
            row("6.12.117+deb12-amd64", &outcome, Duration::from_secs(20)),
            "6.12.117+deb12-amd64        FAIL     50.000%    -        differ    20.0s"
        );
    }

    #[test]
    fn a_panic_or_timeout_is_a_failure() {
        let outcome = parse_output("[    1.2] Kernel panic - not syncing: VFS\n");
        assert!(!outcome.passed());
        assert_eq!(outcome.verdict_word(), "NO-RUN");
        assert_eq!(
            outcome.failure(),
            "no verdict and no exit marker (timed out after 120 s, or the kernel panicked)"
        );
        // A PASS verdict without the marker (cut off before it) still fails.
        let cut = parse_output("verdict: PASS\n");
        assert!(!cut.passed());
        assert_eq!(cut.failure(), "verdict PASS, exit code missing");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), ["b", "c"]);
        assert_eq!(tail("a\n", 20), ["a"]);
    }
}
