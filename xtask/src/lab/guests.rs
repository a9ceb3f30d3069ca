//! Defines, starts, watches and removes the lab guests `hs-lab-1` ..
//! `hs-lab-N` through `virsh`.
//!
//! # What it owns
//! Per guest, under the lab state dir: `disks/<name>.qcow2` (made with
//! `qemu-img`), `console/<name>.log` (the serial console, truncated by QEMU
//! at each start) and `domains/<name>.xml` (the definition last given to
//! libvirt). Guests are persistent, so `virsh start` works after
//! `virsh destroy`.
//!
//! # Failures
//! A guest whose init marker does not show up in time fails `lab up` with the
//! last lines of its console, which usually say why (a kernel panic, a module
//! that did not load).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::cmd;
use super::image::GuestImage;

/// The domain XML template (placeholders `@WORD@`).
const DOMAIN_TEMPLATE: &str = include_str!("../../../lab/domain.xml");

/// Every lab guest's name starts with this, followed by its index.
pub const NAME_PREFIX: &str = "hs-lab-";

/// The line the guest's init prints on its console once it runs; it must
/// match `lab/guest/init`.
pub const INIT_MARKER: &str = "hs-lab: init running";

/// The virtual size of each guest's disk. The init writes to its first
/// 16 MiB; qcow2 allocates only what is written.
const DISK_SIZE: &str = "64M";

/// How long `lab up` waits for every guest's init marker. One guest boots in
/// about 12 s; eight on two host cores share them and take several times
/// that.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// libvirt's perf events, with the kernel PMU each needs
/// (`/sys/bus/event_source/devices/<pmu>`). The lab enables those whose PMU
/// this host has: libvirt refuses to start a guest whose event it cannot
/// open. The `cmt`/`mbm*` events need resctrl and are left out.
const PERF_EVENTS: &[(&str, &str)] = &[
    ("cpu_cycles", "cpu"),
    ("instructions", "cpu"),
    ("cache_references", "cpu"),
    ("cache_misses", "cpu"),
    ("branch_instructions", "cpu"),
    ("branch_misses", "cpu"),
    ("bus_cycles", "cpu"),
    ("ref_cpu_cycles", "cpu"),
    ("cpu_clock", "software"),
    ("task_clock", "software"),
    ("page_faults", "software"),
    ("context_switches", "software"),
    ("cpu_migrations", "software"),
    ("page_faults_min", "software"),
    ("page_faults_maj", "software"),
    ("alignment_faults", "software"),
    ("emulation_faults", "software"),
];

/// One lab guest's identity, derived from its index alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Guest {
    /// 1-based index.
    pub index: u32,
    /// `hs-lab-<index>`.
    pub name: String,
    /// 2 for odd indexes, 1 for even ones, so the lab has both shapes.
    pub vcpus: u32,
    /// `52:54:00:48:53:<index>` (`HS` in the middle, QEMU's OUI first).
    pub mac: String,
    /// The host side tap, `tap-hs-lab-<index>` (at most 15 bytes).
    pub tap: String,
    /// A fixed UUID, `68732d6c-6162-4000-8000-0000000000<index>` (`hs-lab`
    /// in ASCII first), so a guest keeps its UUID across `down` and `up`.
    pub uuid: String,
}

impl Guest {
    /// The guest with 1-based `index` (at most 255).
    pub fn new(index: u32) -> Self {
        let name = format!("{NAME_PREFIX}{index}");
        Guest {
            index,
            vcpus: if index % 2 == 1 { 2 } else { 1 },
            mac: format!("52:54:00:48:53:{index:02x}"),
            tap: format!("tap-{name}"),
            uuid: format!("68732d6c-6162-4000-8000-{index:012x}"),
            name,
        }
    }
}

/// Where a guest's files live under the lab state dir.
pub struct GuestFiles {
    /// The qcow2 disk.
    pub disk: PathBuf,
    /// The serial console log.
    pub console: PathBuf,
    /// The domain XML last defined.
    pub xml: PathBuf,
}

impl GuestFiles {
    /// The files of guest `name` under `state`.
    pub fn new(state: &Path, name: &str) -> Self {
        GuestFiles {
            disk: state.join("disks").join(format!("{name}.qcow2")),
            console: state.join("console").join(format!("{name}.log")),
            xml: state.join("domains").join(format!("{name}.xml")),
        }
    }
}

/// Escapes `text` for an XML attribute or element.
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// The `<event .../>` lines for the perf events whose PMU is in `pmus`.
fn perf_event_lines(pmus: &[String]) -> String {
    PERF_EVENTS
        .iter()
        .filter(|(_, pmu)| pmus.iter().any(|p| p == pmu))
        .map(|(event, _)| format!("    <event name='{event}' enabled='yes'/>"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The PMUs this host's kernel offers to perf.
fn host_pmus() -> Vec<String> {
    fs::read_dir("/sys/bus/event_source/devices")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The domain XML of `guest`.
fn render(guest: &Guest, files: &GuestFiles, image: &GuestImage, pmus: &[String]) -> String {
    let path = |p: &Path| xml_escape(&p.display().to_string());
    DOMAIN_TEMPLATE
        .replace("@NAME@", &xml_escape(&guest.name))
        .replace("@UUID@", &guest.uuid)
        .replace("@VCPUS@", &guest.vcpus.to_string())
        .replace("@KERNEL@", &path(&image.kernel))
        .replace("@INITRD@", &path(&image.initrd))
        .replace("@DISK@", &path(&files.disk))
        .replace("@CONSOLE@", &path(&files.console))
        .replace("@MAC@", &guest.mac)
        .replace("@TAP@", &xml_escape(&guest.tap))
        .replace("@PERF_EVENTS@", &perf_event_lines(pmus))
}

/// The names of all defined lab guests (running or not), by index.
pub fn defined() -> Result<Vec<String>> {
    let out = cmd::capture(cmd::virsh().args(["list", "--all", "--name"]))?;
    let mut names: Vec<(u32, String)> = out
        .lines()
        .filter_map(|name| {
            let index = name.trim().strip_prefix(NAME_PREFIX)?.parse().ok()?;
            Some((index, name.trim().to_string()))
        })
        .collect();
    names.sort();
    Ok(names.into_iter().map(|(_, name)| name).collect())
}

/// The libvirt state of `name` (`running`, `shut off`, ...).
pub fn state(name: &str) -> Result<String> {
    Ok(cmd::capture(cmd::virsh().args(["domstate", name]))?
        .trim()
        .to_string())
}

/// Defines every guest in `guests` (updating the persistent definition) and
/// starts those that are not running. Returns the ones it started.
pub fn ensure(state_dir: &Path, guests: &[Guest], image: &GuestImage) -> Result<Vec<String>> {
    for sub in ["disks", "console", "domains"] {
        let dir = state_dir.join(sub);
        fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    }
    let pmus = host_pmus();
    let mut to_start = Vec::new();
    for guest in guests {
        let files = GuestFiles::new(state_dir, &guest.name);
        if !files.disk.exists() {
            cmd::capture(
                Command::new("qemu-img")
                    .args(["create", "-q", "-f", "qcow2"])
                    .arg(&files.disk)
                    .arg(DISK_SIZE),
            )?;
        }
        let xml = render(guest, &files, image, &pmus);
        let is_defined = defined()?.contains(&guest.name);
        let mut running = is_defined && state(&guest.name)? != "shut off";
        let previous = fs::read_to_string(&files.xml).unwrap_or_default();
        if previous != xml || !is_defined {
            // A guest running from another definition (an older template or
            // kernel, or another checkout's state dir, whose console the lab
            // would not find) is restarted with this one.
            if running {
                println!(
                    "lab: {} runs from another definition; restarting it",
                    guest.name
                );
                cmd::capture(cmd::virsh().args(["destroy", &guest.name]))
                    .with_context(|| format!("failed to stop guest {}", guest.name))?;
                running = false;
            }
            // Undefine first: a definition made elsewhere may carry another
            // UUID, and libvirt refuses a second UUID for the same name.
            if is_defined {
                cmd::capture(cmd::virsh().args(["undefine", &guest.name]))
                    .with_context(|| format!("failed to undefine guest {}", guest.name))?;
            }
            fs::write(&files.xml, &xml)
                .with_context(|| format!("failed to write {}", files.xml.display()))?;
            cmd::capture(cmd::virsh().arg("define").arg(&files.xml))
                .with_context(|| format!("failed to define guest {}", guest.name))?;
        }
        if running && state(&guest.name)? == "paused" {
            cmd::capture(cmd::virsh().args(["resume", &guest.name]))
                .with_context(|| format!("failed to resume paused guest {}", guest.name))?;
            println!("lab: {} was paused; resumed it", guest.name);
        } else if running {
            println!("lab: {} already running", guest.name);
        } else {
            to_start.push(guest.name.clone());
        }
    }
    // Start all guests at once: libvirtd handles them in parallel, and the
    // boot clock starts for all of them together.
    if let Err(e) = virsh_each("start", &to_start) {
        bail!(
            "{e:#}\nsee {} and /var/log/libvirt/qemu/<guest>.log for the reason",
            state_dir.join("log/libvirtd.log").display()
        );
    }
    Ok(to_start)
}

/// Runs `virsh <verb> <name>` for every name at once and waits for all;
/// fails with every failed command and its stderr.
fn virsh_each(verb: &str, names: &[String]) -> Result<()> {
    let children: Vec<(String, Command, std::io::Result<Child>)> = names
        .iter()
        .map(|name| {
            let mut command = cmd::virsh();
            command
                .args([verb, name])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let child = command.spawn();
            (name.clone(), command, child)
        })
        .collect();
    let mut failures = Vec::new();
    for (name, command, child) in children {
        match child.and_then(|c| c.wait_with_output()) {
            Ok(out) if out.status.success() => println!("lab: virsh {verb} {name}: ok"),
            Ok(out) => failures.push(format!(
                "`{}` failed with {}: {}",
                cmd::show(&command),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => failures.push(format!("failed to run `{}`: {e}", cmd::show(&command))),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}

/// Whether `console` (a guest's console log) shows the init marker.
pub fn marker_seen(console: &Path) -> bool {
    fs::read(console).is_ok_and(|bytes| {
        bytes
            .windows(INIT_MARKER.len())
            .any(|w| w == INIT_MARKER.as_bytes())
    })
}

/// The last non-empty line of a guest's console, if any.
pub fn last_console_line(console: &Path) -> Option<String> {
    let bytes = fs::read(console).ok()?;
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(str::to_string)
}

/// Waits until every guest's console shows the init marker, printing the
/// time since `since` for each guest in `started` (the others were running
/// already). Fails with the silent guests' console tails after
/// [`BOOT_TIMEOUT`].
pub fn wait_for_init(
    state_dir: &Path,
    names: &[String],
    started: &[String],
    since: Instant,
) -> Result<()> {
    let mut waiting: Vec<&String> = names.iter().collect();
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while !waiting.is_empty() {
        waiting.retain(|name| {
            let seen = marker_seen(&GuestFiles::new(state_dir, name).console);
            if seen && started.contains(name) {
                println!(
                    "lab: {name} init running after {:.1} s",
                    since.elapsed().as_secs_f64()
                );
            } else if seen {
                println!("lab: {name} init running (since an earlier start)");
            }
            !seen
        });
        if waiting.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let mut report = String::new();
            for name in &waiting {
                let console = GuestFiles::new(state_dir, name).console;
                let tail = fs::read_to_string(&console).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(10).collect();
                report.push_str(&format!(
                    "\n--- {} (last lines, newest last) ---\n{}",
                    console.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            bail!(
                "no `{INIT_MARKER}` from {} after {} s{report}\nthe console tails above usually say why; `cargo xtask lab status` shows the guests",
                waiting
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                BOOT_TIMEOUT.as_secs()
            );
        }
        sleep(Duration::from_millis(250));
    }
    Ok(())
}

/// Destroys (all at once, those not shut off) and undefines the guests in
/// `names`, then removes their disks, console logs and saved definitions.
pub fn remove(state_dir: &Path, names: &[String]) -> Result<()> {
    let mut running = Vec::new();
    for name in names {
        if state(name)? != "shut off" {
            running.push(name.clone());
        }
    }
    virsh_each("destroy", &running).context("failed to stop lab guests")?;
    for name in names {
        cmd::capture(cmd::virsh().args(["undefine", name]))
            .with_context(|| format!("failed to undefine guest {name}"))?;
        remove_files(state_dir, name)?;
        println!("lab: removed {name}");
    }
    Ok(())
}

/// Removes the files the lab made for guest `name` (those that exist).
pub fn remove_files(state_dir: &Path, name: &str) -> Result<()> {
    let files = GuestFiles::new(state_dir, name);
    for path in [&files.disk, &files.console, &files.xml] {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("failed to remove {}", path.display()));
            }
        }
    }
    Ok(())
}

/// The number of vCPUs guest `name` has (live if running, else configured).
pub fn vcpus(name: &str) -> Result<u32> {
    let info = cmd::capture(cmd::virsh().args(["dominfo", name]))?;
    info.lines()
        .find_map(|l| l.strip_prefix("CPU(s):"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("`virsh dominfo {name}` shows no CPU(s) line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> GuestImage {
        GuestImage {
            kernel: PathBuf::from("/lab/image/kernel-6.1.0-56-amd64/vmlinuz"),
            initrd: PathBuf::from("/lab/image/initrd.img"),
            kernel_release: "6.1.0-56-amd64".into(),
        }
    }

    #[test]
    fn guests_alternate_two_and_one_vcpus() {
        let shapes: Vec<(String, u32)> =
            (1..=4).map(Guest::new).map(|g| (g.name, g.vcpus)).collect();
        assert_eq!(
            shapes,
            [
                ("hs-lab-1".into(), 2),
                ("hs-lab-2".into(), 1),
                ("hs-lab-3".into(), 2),
                ("hs-lab-4".into(), 1)
            ]
        );
    }

    #[test]
    fn macs_and_taps_are_unique_and_short() {
        let guest = Guest::new(8);
        assert_eq!(guest.mac, "52:54:00:48:53:08");
        assert_eq!(guest.tap, "tap-hs-lab-8");
        assert_eq!(guest.uuid, "68732d6c-6162-4000-8000-000000000008");
        assert!(guest.tap.len() <= 15, "IFNAMSIZ is 16 with the NUL");
    }

    #[test]
    fn render_fills_every_placeholder() {
        let guest = Guest::new(1);
        let files = GuestFiles::new(Path::new("/lab"), &guest.name);
        let xml = render(&guest, &files, &image(), &["software".into()]);
        assert!(!xml.contains('@'), "{xml}");
        assert!(xml.contains("<domain type='qemu'>"));
        assert!(xml.contains("<uuid>68732d6c-6162-4000-8000-000000000001</uuid>"));
        assert!(xml.contains("<vcpu placement='static'>2</vcpu>"));
        assert!(xml.contains("<source file='/lab/disks/hs-lab-1.qcow2'/>"));
        assert!(xml.contains("<target dev='tap-hs-lab-1' managed='yes'/>"));
        assert!(xml.contains("<stats period='1'/>"));
        assert!(xml.contains("<event name='task_clock' enabled='yes'/>"));
        assert!(
            !xml.contains("name='cpu_cycles'"),
            "no hardware PMU was offered"
        );
    }

    #[test]
    fn hardware_events_follow_the_cpu_pmu() {
        let lines = perf_event_lines(&["cpu".into(), "software".into()]);
        assert!(lines.contains("cpu_cycles") && lines.contains("context_switches"));
        assert!(perf_event_lines(&[]).is_empty());
    }

    #[test]
    fn xml_special_characters_are_escaped() {
        assert_eq!(xml_escape("a&b<'c'>"), "a&amp;b&lt;&apos;c&apos;&gt;");
    }

    #[test]
    fn init_script_prints_the_marker() {
        assert!(super::super::image::INIT_SCRIPT.contains(&format!("echo \"{INIT_MARKER}")));
    }
}
