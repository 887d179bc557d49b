//! Compiled components cached on disk, keyed by the component's content hash and
//! the engine's compatibility hash (wasmtime version and compilation settings).
//!
//! Deserializing a compiled artifact runs native code we produced, so an entry is
//! used only when its own SHA-256 checks out (a corrupt, truncated or stale entry
//! is compiled again and replaced, never loaded), and the cache folder is private
//! to the host's user: the checksum detects damage, the permissions keep others out.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// How a component was obtained, for logs and cold-start measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Compiled,
    /// An entry was present but failed its checks and was replaced.
    Recompiled,
}

pub struct ComponentCache {
    dir: Option<PathBuf>,
    engine_key: String,
}

/// Feeds `Hash` output into SHA-256 so the key is stable across processes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ComponentCache {
    /// A cache in `dir`, or none (always compile) when `dir` is `None`.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        Self { dir, engine_key }
    }

    fn entry_path(&self, dir: &Path, wasm_sha256: &str) -> PathBuf {
        dir.join(format!("{wasm_sha256}-{}.cwasm", self.engine_key))
    }

    /// The compiled form of `wasm`, from the cache when a sound entry exists.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let Some(dir) = &self.dir else {
            return Ok((Component::new(engine, wasm)?, CacheOutcome::Compiled));
        };
        let path = self.entry_path(dir, &sha256_hex(wasm));
        let mut outcome = CacheOutcome::Compiled;
        if let Ok(entry) = std::fs::read(&path) {
            match Self::verified_artifact(&entry) {
                Some(artifact) => {
                    // SAFETY: the artifact was written by `Component::serialize` of an
                    // engine with the same compatibility hash (it is in the file name),
                    // and its checksum proves it is byte-for-byte what was written.
                    match unsafe { Component::deserialize(engine, artifact) } {
                        Ok(component) => return Ok((component, CacheOutcome::Hit)),
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "cached component rejected; recompiling")
                        }
                    }
                }
                None => {
                    tracing::warn!(path = %path.display(), "cached component is corrupt; recompiling")
                }
            }
            outcome = CacheOutcome::Recompiled;
        }
        let component = Component::new(engine, wasm)?;
        if let Err(e) = Self::write_entry(dir, &path, &component.serialize()?) {
            tracing::warn!(path = %path.display(), error = %e, "could not write the component cache");
        }
        Ok((component, outcome))
    }

    /// The artifact inside an entry (`sha256(artifact) || artifact`) if the checksum holds.
    fn verified_artifact(entry: &[u8]) -> Option<&[u8]> {
        if entry.len() < 32 {
            return None;
        }
        let (sum, artifact) = entry.split_at(32);
        (Sha256::digest(artifact).as_slice() == sum).then_some(artifact)
    }

    fn write_entry(dir: &Path, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
        create_private_dir(dir)?;
        let mut entry = Sha256::digest(artifact).to_vec();
        entry.extend_from_slice(artifact);
        // Write then rename, so a reader never sees half an entry.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &entry)?;
        std::fs::rename(&tmp, path)
    }
}

/// The cache holds native code the host will run: only the host's user may write it.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}
