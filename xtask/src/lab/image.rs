//! Builds the lab guests' boot image: a Debian kernel and an initramfs made
//! of busybox-static, the virtio modules and `lab/guest/init`.
//!
//! # What it owns
//! `<state>/image/`: `kernel-<version>/` holds `vmlinuz` (and `vmlinux`,
//! its uncompressed ELF, which boots faster) and the virtio
//! modules (with their dependencies, in load order) taken from the Debian
//! `linux-image-*-amd64` package, which is downloaded and extracted, never
//! installed. `initrd.img` is an uncompressed newc cpio (nothing for the
//! emulated guest CPU to decompress) with a stamp that names its inputs.
//!
//! # Caching
//! A kernel directory, once complete, is used as it is (no apt call at all);
//! the initramfs is rebuilt only when the init script, the busybox binary or
//! the module set changed. Both are written to temporary names and renamed,
//! so an interrupted build leaves no half image behind.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::cmd;

/// The guest's init, run as PID 1 from the initramfs.
pub const INIT_SCRIPT: &str = include_str!("../../../lab/guest/init");

/// The modules the guest needs for its devices: the virtio PCI transport,
/// the disk, the NIC and the balloon (which reports memory stats). Their
/// dependencies are added from the modules' own `depends=` lists.
const WANTED_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "virtio_net", "virtio_balloon"];

/// The Debian metapackage whose dependency names the current kernel ABI
/// package (`linux-image-6.1.0-N-amd64`).
const KERNEL_METAPACKAGE: &str = "linux-image-amd64";

/// The file, inside a kernel directory and the initramfs' `/lib/modules`,
/// listing module names in the order the init loads them.
const LOAD_ORDER: &str = "load-order";

/// The boot image of every lab guest.
pub struct GuestImage {
    /// The kernel QEMU boots directly: the PVH ELF `vmlinux`, or the
    /// `bzImage` if it could not be extracted.
    pub kernel: PathBuf,
    /// The initramfs (uncompressed cpio).
    pub initrd: PathBuf,
    /// The kernel release, e.g. `6.1.0-56-amd64`.
    pub kernel_release: String,
}

/// Returns the guest image, downloading the kernel and building the
/// initramfs only if they are not cached under `<state>/image`.
pub fn ensure(state: &Path) -> Result<GuestImage> {
    let dir = state.join("image");
    fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let kernel_dir = match cached_kernel(&dir) {
        Some(kernel_dir) => kernel_dir,
        None => fetch_kernel(&dir)?,
    };
    let kernel_release = kernel_dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("kernel-"))
        .unwrap_or_default()
        .to_string();
    let initrd = ensure_initrd(&dir, &kernel_dir)?;
    let kernel = match ensure_vmlinux(&kernel_dir) {
        Ok(vmlinux) => vmlinux,
        Err(e) => {
            println!("lab: booting the compressed kernel (slower): {e:#}");
            kernel_dir.join("vmlinuz")
        }
    };
    Ok(GuestImage {
        kernel,
        initrd,
        kernel_release,
    })
}

/// Returns `<kernel_dir>/vmlinux`, the uncompressed ELF kernel, extracting it
/// from the xz- or zstd-compressed `vmlinuz` if needed.
///
/// QEMU loads an ELF kernel with a PVH note (Debian's has `CONFIG_PVH=y`)
/// straight into guest memory: that skips both SeaBIOS reading the bzImage
/// through fw_cfg and the in-guest decompression, about 7 s of a 13 s boot
/// under TCG.
pub(crate) fn ensure_vmlinux(kernel_dir: &Path) -> Result<PathBuf> {
    let vmlinux = kernel_dir.join("vmlinux");
    if vmlinux.is_file() {
        return Ok(vmlinux);
    }
    let vmlinuz = kernel_dir.join("vmlinuz");
    let bytes =
        fs::read(&vmlinuz).with_context(|| format!("failed to read {}", vmlinuz.display()))?;
    const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";
    let (payload, mut command) = match bytes.windows(XZ_MAGIC.len()).position(|w| w == XZ_MAGIC) {
        Some(start) => {
            let mut xz = Command::new("xz");
            xz.args(["--decompress", "--stdout", "--single-stream"]);
            (&bytes[start..], xz)
        }
        // Debian's 6.12 kernels are zstd-compressed; zstd has no
        // single-stream mode, so the exact payload comes from the header,
        // less the 4-byte uncompressed size the kernel build appends.
        None => {
            let payload = bzimage_payload(&bytes)
                .filter(|p| p.starts_with(b"\x28\xb5\x2f\xfd"))
                .map(|p| &p[..p.len() - 4])
                .with_context(|| format!("{} holds no xz or zstd stream", vmlinuz.display()))?;
            let mut zstd = Command::new("zstd");
            zstd.args(["--decompress", "--stdout", "--quiet"]);
            (payload, zstd)
        }
    };
    let tmp = kernel_dir.join("vmlinux.tmp");
    let out =
        fs::File::create(&tmp).with_context(|| format!("failed to create {}", tmp.display()))?;
    command
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(Stdio::piped());
    let mut child = command.spawn().with_context(|| {
        format!(
            "failed to start `{}`\nrun `cargo xtask setup`",
            cmd::show(&command)
        )
    })?;
    // xz stops reading after the stream, so a broken pipe here is expected.
    let _ = child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(payload);
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "`{}` failed with {}: {}",
            cmd::show(&command),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut fs::File::open(&tmp)?, &mut magic)?;
    if &magic != b"\x7fELF" {
        bail!(
            "the xz stream in {} is not an ELF kernel",
            vmlinuz.display()
        );
    }
    fs::rename(&tmp, &vmlinux).with_context(|| format!("failed to rename {}", tmp.display()))?;
    Ok(vmlinux)
}

/// The compressed kernel inside a bzImage, as its boot protocol header
/// (2.08+) locates it: `payload_offset` and `payload_length` count from the
/// protected-mode code, which follows the `setup_sects` setup sectors.
fn bzimage_payload(bytes: &[u8]) -> Option<&[u8]> {
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    let setup_sects = match *bytes.get(0x1f1)? {
        0 => 4,
        n => n as usize,
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248)?;
    bytes.get(start..start + u32_at(0x24c)?)
}

/// The newest complete `kernel-*` directory, if one is cached.
fn cached_kernel(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("kernel-") && !n.ends_with(".tmp"))
                && p.join("vmlinuz").is_file()
                && p.join(LOAD_ORDER).is_file()
        })
        .collect();
    found.sort();
    found.pop()
}

/// Downloads the current Debian kernel package, extracts it to a scratch
/// directory and keeps `vmlinuz` plus the modules the guest loads.
fn fetch_kernel(dir: &Path) -> Result<PathBuf> {
    cmd::require_programs(&[
        ("apt-get", "apt"),
        ("apt-cache", "apt"),
        ("dpkg-deb", "dpkg"),
    ])?;
    // apt's package lists may be missing (cleaned images): update once.
    let package = match kernel_package() {
        Ok(package) => package,
        Err(_) => {
            println!("lab: apt does not know the kernel package; running apt-get update");
            cmd::capture(
                Command::new("apt-get")
                    .args(["update", "-q", "-o", "DPkg::Lock::Timeout=300"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
            kernel_package()?
        }
    };
    println!("lab: downloading {package} (the guests' kernel; extracted, not installed)");
    let download = dir.join("download.tmp");
    let (deb, tree) = download_deb(&download, &package)?;

    let modules_root = tree.join("lib/modules");
    let release = fs::read_dir(&modules_root)
        .with_context(|| format!("{} has no lib/modules", deb.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .next()
        .with_context(|| format!("{} has no kernel release under lib/modules", deb.display()))?;
    let release_dir = modules_root.join(&release);
    let builtin = fs::read_to_string(release_dir.join("modules.builtin")).unwrap_or_default();
    let builtin: BTreeSet<String> = builtin.lines().map(module_name).collect();
    let mut index = BTreeMap::new();
    index_modules(&release_dir.join("kernel"), &mut index)?;
    let order = load_order(WANTED_MODULES, &builtin, |name| {
        let path = index.get(name).with_context(|| {
            format!("module {name} is neither built into {release} nor shipped in {package}")
        })?;
        let bytes = fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
        Ok(modinfo_depends(&bytes))
    })?;

    let staging = dir.join(format!("kernel-{release}.tmp"));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)
        .with_context(|| format!("failed to create {}", staging.display()))?;
    let vmlinuz = tree.join(format!("boot/vmlinuz-{release}"));
    fs::copy(&vmlinuz, staging.join("vmlinuz"))
        .with_context(|| format!("failed to copy {}", vmlinuz.display()))?;
    for name in &order {
        fs::copy(&index[name], staging.join(format!("{name}.ko")))
            .with_context(|| format!("failed to copy {}", index[name].display()))?;
    }
    fs::write(staging.join(LOAD_ORDER), order.join("\n") + "\n")?;
    let kernel_dir = dir.join(format!("kernel-{release}"));
    let _ = fs::remove_dir_all(&kernel_dir);
    fs::rename(&staging, &kernel_dir)
        .with_context(|| format!("failed to rename {}", staging.display()))?;
    fs::remove_dir_all(&download)
        .with_context(|| format!("failed to remove {}", download.display()))?;
    println!(
        "lab: cached kernel {release} with modules {}",
        order.join(" ")
    );
    Ok(kernel_dir)
}

/// Downloads the Debian package `package` into the fresh scratch
/// directory `download` and extracts it there (never installs it):
/// returns the `.deb` and the extracted tree.
pub(crate) fn download_deb(download: &Path, package: &str) -> Result<(PathBuf, PathBuf)> {
    let _ = fs::remove_dir_all(download);
    fs::create_dir_all(download)
        .with_context(|| format!("failed to create {}", download.display()))?;
    // As root apt would drop to the `_apt` user, which cannot write here.
    cmd::capture(
        Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root"])
            .arg(package)
            .current_dir(download),
    )
    .with_context(|| {
        format!(
            "failed to download {package}\nrun `cargo xtask setup` (it runs apt-get update) and try again"
        )
    })?;
    let deb = fs::read_dir(download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", download.display()))?;
    let tree = download.join("tree");
    cmd::capture(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    Ok((deb, tree))
}

/// The package that `linux-image-amd64` currently depends on.
fn kernel_package() -> Result<String> {
    metapackage_kernel(KERNEL_METAPACKAGE)
}

/// The `linux-image-*-amd64` package that the kernel metapackage `meta`
/// (`linux-image-amd64`, `linux-image-rt-amd64`) currently depends on.
pub(crate) fn metapackage_kernel(meta: &str) -> Result<String> {
    let deps = cmd::capture(Command::new("apt-cache").args(["depends", meta]))
        .with_context(|| format!("failed to ask apt which kernel package {meta} names"))?;
    deps.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .map(str::to_string)
        .with_context(|| {
            format!("apt does not know {meta}\nrun `cargo xtask setup` (it runs apt-get update) and try again")
        })
}

/// Adds every `*.ko` under `dir` to `index`, keyed by module name.
fn index_modules(dir: &Path, index: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("failed to read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            index_modules(&path, index)?;
        } else if let Some(file) = path.file_name().and_then(|n| n.to_str())
            && file.ends_with(".ko")
        {
            index.insert(module_name(file), path);
        }
    }
    Ok(())
}

/// The module name of a path or file name as the kernel spells it:
/// `kernel/drivers/char/hw_random/virtio-rng.ko` is `virtio_rng`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.trim_end_matches(".ko").replace('-', "_")
}

/// The `depends=` list in a module's `.modinfo` section (empty if none).
fn modinfo_depends(module: &[u8]) -> Vec<String> {
    let key = b"depends=";
    module
        .split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(key.as_slice()))
        .map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(module_name)
                .collect()
        })
        .unwrap_or_default()
}

/// `wanted` plus their dependencies, dependencies first, leaving out modules
/// built into the kernel. `depends` returns a module's direct dependencies.
fn load_order(
    wanted: &[&str],
    builtin: &BTreeSet<String>,
    mut depends: impl FnMut(&str) -> Result<Vec<String>>,
) -> Result<Vec<String>> {
    fn visit(
        name: &str,
        builtin: &BTreeSet<String>,
        depends: &mut dyn FnMut(&str) -> Result<Vec<String>>,
        visiting: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        if builtin.contains(name) || order.iter().any(|n| n == name) {
            return Ok(());
        }
        if visiting.iter().any(|n| n == name) {
            bail!(
                "module dependency cycle: {} -> {name}",
                visiting.join(" -> ")
            );
        }
        visiting.push(name.to_string());
        for dep in depends(name)? {
            visit(&dep, builtin, depends, visiting, order)?;
        }
        visiting.pop();
        order.push(name.to_string());
        Ok(())
    }
    let mut order = Vec::new();
    for name in wanted {
        visit(name, builtin, &mut depends, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

/// Returns `<dir>/initrd.img`, rebuilding it if its stamp does not match the
/// current init script, busybox and module set.
fn ensure_initrd(dir: &Path, kernel_dir: &Path) -> Result<PathBuf> {
    let initrd = dir.join("initrd.img");
    let stamp_path = dir.join("initrd.stamp");
    let Some(busybox) = cmd::find_program("busybox") else {
        bail!("busybox is not installed (Debian package busybox-static)\nrun `cargo xtask setup`");
    };
    let order = fs::read_to_string(kernel_dir.join(LOAD_ORDER))
        .with_context(|| format!("failed to read {}", kernel_dir.join(LOAD_ORDER).display()))?;
    let busybox_meta = fs::metadata(&busybox)?;
    let stamp = format!(
        "kernel: {}\nbusybox: {} {} bytes, modified {:?}\nmodules: {}\ninit:\n{INIT_SCRIPT}",
        kernel_dir.display(),
        busybox.display(),
        busybox_meta.len(),
        busybox_meta.modified().ok(),
        order.split_whitespace().collect::<Vec<_>>().join(" "),
    );
    if initrd.is_file() && fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
        return Ok(initrd);
    }
    require_static(&busybox)?;

    let root = dir.join("initrd.tmp");
    let _ = fs::remove_dir_all(&root);
    for sub in ["bin", "dev", "proc", "sys", "tmp", "lib/modules"] {
        fs::create_dir_all(root.join(sub))?;
    }
    fs::copy(&busybox, root.join("bin/busybox"))
        .with_context(|| format!("failed to copy {}", busybox.display()))?;
    fs::write(root.join("init"), INIT_SCRIPT)?;
    fs::set_permissions(root.join("init"), fs::Permissions::from_mode(0o755))?;
    for name in order.split_whitespace() {
        fs::copy(
            kernel_dir.join(format!("{name}.ko")),
            root.join(format!("lib/modules/{name}.ko")),
        )
        .with_context(|| format!("failed to copy module {name} from {}", kernel_dir.display()))?;
    }
    fs::write(root.join("lib/modules").join(LOAD_ORDER), &order)?;

    let mut files = Vec::new();
    list_tree(&root, Path::new("."), &mut files)?;
    let tmp = dir.join("initrd.img.tmp");
    write_cpio(&root, &files, &tmp)?;
    fs::rename(&tmp, &initrd).with_context(|| format!("failed to rename {}", tmp.display()))?;
    fs::write(&stamp_path, stamp)?;
    fs::remove_dir_all(&root)?;
    println!("lab: built {}", initrd.display());
    Ok(initrd)
}

/// Fails unless `busybox` is statically linked (the initramfs has no libc).
pub(crate) fn require_static(busybox: &Path) -> Result<()> {
    let bytes =
        fs::read(busybox).with_context(|| format!("failed to read {}", busybox.display()))?;
    if has_interpreter(&bytes) {
        bail!(
            "{} is dynamically linked and cannot run in the guest's initramfs\ninstall busybox-static (`cargo xtask setup` does)",
            busybox.display()
        );
    }
    Ok(())
}

/// Whether a 64-bit little-endian ELF file has a `PT_INTERP` program header,
/// i.e. needs a dynamic loader. Anything that is not such an ELF counts as
/// dynamic, so it is refused.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return true;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return true;
    };
    (0..phnum).any(|i| u32_at(phoff + i * phentsize).is_none_or(|t| t == PT_INTERP))
}

/// Lists `dir` (relative names under `rel`) depth-first, parents first.
pub(crate) fn list_tree(base: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    out.push(rel.to_path_buf());
    let full = base.join(rel);
    if full.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(&full)?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        entries.sort();
        for name in entries {
            list_tree(base, &rel.join(name), out)?;
        }
    }
    Ok(())
}

/// Writes `files` (relative to `root`) as a newc cpio archive owned by root.
pub(crate) fn write_cpio(root: &Path, files: &[PathBuf], out: &Path) -> Result<()> {
    let archive =
        fs::File::create(out).with_context(|| format!("failed to create {}", out.display()))?;
    let mut command = Command::new("cpio");
    command
        .args([
            "--quiet",
            "--create",
            "--format=newc",
            "--owner=0:0",
            "--null",
        ])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(archive)
        .stderr(Stdio::piped());
    let mut child = command.spawn().with_context(|| {
        format!(
            "failed to start `{}`\nrun `cargo xtask setup`",
            cmd::show(&command)
        )
    })?;
    {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        for file in files {
            stdin.write_all(file.as_os_str().as_encoded_bytes())?;
            stdin.write_all(b"\0")?;
        }
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "`{}` failed with {}: {}",
            cmd::show(&command),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_use_underscores() {
        assert_eq!(
            module_name("kernel/drivers/char/hw_random/virtio-rng.ko"),
            "virtio_rng"
        );
        assert_eq!(module_name("virtio_net.ko"), "virtio_net");
    }

    #[test]
    fn depends_are_read_from_modinfo() {
        let module =
            b"\x7fELF junk\0license=GPL\0depends=virtio_ring,virtio,net_failover\0vermagic=6.1\0";
        assert_eq!(
            modinfo_depends(module),
            ["virtio_ring", "virtio", "net_failover"]
        );
        assert!(modinfo_depends(b"\0depends=\0").is_empty());
        assert!(modinfo_depends(b"no modinfo").is_empty());
    }

    #[test]
    fn load_order_puts_dependencies_first_and_skips_builtins() {
        let deps: BTreeMap<&str, Vec<&str>> = [
            (
                "virtio_pci",
                vec!["virtio_ring", "virtio_pci_modern_dev", "virtio"],
            ),
            ("virtio_net", vec!["virtio_ring", "virtio", "net_failover"]),
            ("net_failover", vec!["failover"]),
            ("virtio_ring", vec![]),
            ("virtio", vec![]),
            ("failover", vec![]),
        ]
        .into();
        let builtin = BTreeSet::from(["virtio_pci_modern_dev".to_string()]);
        let order = load_order(&["virtio_pci", "virtio_net"], &builtin, |name| {
            Ok(deps[name].iter().map(|s| s.to_string()).collect())
        })
        .unwrap();
        assert_eq!(
            order,
            [
                "virtio_ring",
                "virtio",
                "virtio_pci",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
    }

    #[test]
    fn interpreter_is_detected_in_elf_headers() {
        let mut elf = vec![0u8; 0x40 + 2 * 0x38];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        elf[0x40..0x44].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        assert!(!has_interpreter(&elf));
        elf[0x78..0x7c].copy_from_slice(&3u32.to_le_bytes()); // PT_INTERP
        assert!(has_interpreter(&elf));
        assert!(has_interpreter(b"#!/bin/sh"));
    }

    #[test]
    fn bzimage_payload_follows_the_setup_sectors() {
        let mut image = vec![0u8; 3 * 512 + 16];
        image[0x1f1] = 2;
        image[0x248..0x24c].copy_from_slice(&8u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&4u32.to_le_bytes());
        image[3 * 512 + 8..3 * 512 + 12].copy_from_slice(b"\x28\xb5\x2f\xfd");
        assert_eq!(bzimage_payload(&image), Some(&b"\x28\xb5\x2f\xfd"[..]));
        image[0x24c..0x250].copy_from_slice(&4096u32.to_le_bytes());
        assert_eq!(bzimage_payload(&image), None);
    }

    #[test]
    fn load_order_reports_cycles() {
        let err = load_order(&["a"], &BTreeSet::new(), |name| {
            Ok(vec![if name == "a" { "b" } else { "a" }.to_string()])
        })
        .unwrap_err();
        assert!(err.to_string().contains("cycle"), "{err}");
    }
}
