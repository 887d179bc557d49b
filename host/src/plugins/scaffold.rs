//! `presence-host plugin new`: a ready-to-build plugin crate for either world.
//!
//! The crate is self-contained: it carries the WIT package it is built against
//! (copied from this host) and depends only on `wit-bindgen` from crates.io, so
//! an agency can build it anywhere.

use std::path::{Path, PathBuf};

use super::manifest::{PluginName, World};

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("{0}")]
    Name(String),
    #[error("{0} already exists; choose another name or folder")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The WIT package of the newest accepted version, file by file.
const WIT_FILES: &[(&str, &str)] = &[
    ("types.wit", include_str!("../../../wit/v0.1.0/types.wit")),
    ("http.wit", include_str!("../../../wit/v0.1.0/http.wit")),
    (
        "secrets.wit",
        include_str!("../../../wit/v0.1.0/secrets.wit"),
    ),
    ("kv.wit", include_str!("../../../wit/v0.1.0/kv.wit")),
    ("log.wit", include_str!("../../../wit/v0.1.0/log.wit")),
    ("config.wit", include_str!("../../../wit/v0.1.0/config.wit")),
    ("worlds.wit", include_str!("../../../wit/v0.1.0/worlds.wit")),
];
const WIT_VERSION: &str = crate::runtime::since_v0_1_0::VERSION;

fn render(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter()
        .fold(template.to_string(), |text, (key, value)| {
            text.replace(&format!("{{{{{key}}}}}"), value)
        })
}

/// Writes a new plugin crate `<parent>/<name>/` and returns its path.
pub fn new_plugin(parent: &Path, name: &str, world: World) -> Result<PathBuf, ScaffoldError> {
    let name = PluginName::parse(name).map_err(ScaffoldError::Name)?;
    let dir = parent.join(name.as_str());
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir));
    }
    let crate_name = name.as_str().replace('-', "_");
    let (lib, manifest, extra) = match world {
        World::Classifier => (
            include_str!("../../templates/classifier/lib.rs.tmpl"),
            include_str!("../../templates/classifier/plugin.toml.tmpl"),
            "",
        ),
        World::Provider => (
            include_str!("../../templates/provider/lib.rs.tmpl"),
            include_str!("../../templates/provider/plugin.toml.tmpl"),
            "serde_json = \"1\"\n",
        ),
    };
    let world_name = world.to_string();
    let vars = [
        ("name", name.as_str()),
        ("crate_name", crate_name.as_str()),
        ("world", world_name.as_str()),
        ("wit_version", WIT_VERSION),
        ("extra_dependencies", extra),
    ];
    let mut files: Vec<(PathBuf, String)> = vec![
        (
            "Cargo.toml".into(),
            render(
                include_str!("../../templates/common/Cargo.toml.tmpl"),
                &vars,
            ),
        ),
        (
            ".cargo/config.toml".into(),
            render(
                include_str!("../../templates/common/cargo-config.toml.tmpl"),
                &vars,
            ),
        ),
        (
            "README.md".into(),
            render(include_str!("../../templates/common/README.md.tmpl"), &vars),
        ),
        (".gitignore".into(), "/target\n".into()),
        ("plugin.toml".into(), render(manifest, &vars)),
        ("src/lib.rs".into(), render(lib, &vars)),
    ];
    files.extend(
        WIT_FILES
            .iter()
            .map(|(f, text)| (Path::new("wit").join(f), text.to_string())),
    );
    for (relative, text) in files {
        let path = dir.join(relative);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().expect("a file inside the crate"))?;
            std::fs::write(&path, text)
        };
        write().map_err(|source| ScaffoldError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_complete_crate_and_refuses_to_overwrite() {
        let parent = tempfile::tempdir().unwrap();
        let dir = new_plugin(parent.path(), "acme-rules", World::Classifier).unwrap();
        for f in [
            "Cargo.toml",
            "plugin.toml",
            "src/lib.rs",
            "wit/worlds.wit",
            ".cargo/config.toml",
            "README.md",
        ] {
            assert!(dir.join(f).is_file(), "{f}");
        }
        let manifest = crate::plugins::Manifest::load(&dir.join("plugin.toml")).unwrap();
        assert_eq!(
            (manifest.name.as_str(), manifest.world),
            ("acme-rules", World::Classifier)
        );
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(
            cargo.contains("name = \"acme-rules\"") && !cargo.contains("{{"),
            "{cargo}"
        );
        assert!(matches!(
            new_plugin(parent.path(), "acme-rules", World::Classifier),
            Err(ScaffoldError::Exists(_))
        ));
        assert!(matches!(
            new_plugin(parent.path(), "Bad Name", World::Provider),
            Err(ScaffoldError::Name(_))
        ));
        let provider = new_plugin(parent.path(), "acme-sms", World::Provider).unwrap();
        let manifest = crate::plugins::Manifest::load(&provider.join("plugin.toml")).unwrap();
        assert_eq!(manifest.capabilities.secrets, ["acme-sms-signing-secret"]);
    }
}
