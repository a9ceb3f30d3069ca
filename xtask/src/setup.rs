//! `cargo xtask setup`. OWNER: lab helper.

pub fn run() -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
