//! The dashboard's web assets, embedded in the binary at build time.
//!
//! `build.rs` lists the files of the repository's `dashboard/` folder
//! (`index.html`, `app.js`, `style.css`) and d3's bundle from
//! `dashboard/node_modules` (installed by `cargo xtask setup` with `npm
//! ci`, pinned by `package-lock.json`) and generates the table included
//! here. Nothing is fetched at run time. When d3 was not installed at build
//! time, its entry is a script that says so on the page.

/// One embedded file.
pub(crate) struct Asset {
    /// The name under `/assets/` (or `index.html`).
    pub(crate) name: &'static str,
    /// Its MIME type.
    pub(crate) content_type: &'static str,
    /// Its bytes.
    pub(crate) body: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/dashboard_assets.rs"));

/// The asset named `name`.
pub(crate) fn get(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn page_and_scripts_are_embedded() {
        for name in ["index.html", "app.js", "style.css", "d3.min.js"] {
            let a = super::get(name).unwrap_or_else(|| panic!("{name} not embedded"));
            assert!(!a.body.is_empty(), "{name} is empty");
        }
        assert!(super::get("../Cargo.toml").is_none());
    }
}
