//! `cargo xtask build-ebpf`. OWNER: ebpf helper.

pub fn run() -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
