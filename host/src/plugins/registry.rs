//! The set of loaded plugins, swapped atomically on reload.
//!
//! A call takes an `Arc` of the plugin it needs and keeps it for the call's whole
//! life, so a reload never pulls a plugin out from under a request: calls already
//! running finish on the old version, new calls get the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;

use super::manifest::{MANIFEST_FILE, Manifest, ManifestError, World};
use crate::capabilities::Grants;
use crate::config::PluginOverrides;
use crate::runtime::cache::sha256_hex;
use crate::runtime::{CacheOutcome, PluginPre, PrepareError, Runtime};

#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Manifest(String),
    #[error("{path}: cannot read the component: {message}")]
    Component { path: PathBuf, message: String },
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error("{path}: plugin name {name:?} is already used by {other}")]
    DuplicateName {
        path: PathBuf,
        name: String,
        other: PathBuf,
    },
}

impl From<ManifestError> for LoadError {
    fn from(e: ManifestError) -> Self {
        Self::Manifest(e.to_string())
    }
}

/// A plugin ready to be called.
pub struct LoadedPlugin {
    pub manifest: Manifest,
    pub grants: Arc<Grants>,
    pub pre: PluginPre,
    /// The plugin's folder.
    pub dir: PathBuf,
    /// SHA-256 of the component.
    pub component_sha256: String,
    /// Changes whenever the manifest or the component changes.
    fingerprint: String,
    pub cache: CacheOutcome,
}

impl LoadedPlugin {
    pub fn name(&self) -> &str {
        self.manifest.name.as_str()
    }

    pub fn world(&self) -> World {
        self.manifest.world
    }
}

/// A plugin folder that failed to load, kept for `plugin list` and the operator's view.
#[derive(Debug, Clone, Serialize)]
pub struct LoadFailure {
    pub dir: PathBuf,
    pub error: String,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReloadReport {
    pub loaded: Vec<String>,
    pub unchanged: Vec<String>,
    pub removed: Vec<String>,
    pub failed: Vec<LoadFailure>,
}

/// Reads a plugin folder's manifest and component, and their combined fingerprint.
fn read_plugin(dir: &Path) -> Result<(Manifest, Vec<u8>, String), LoadError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest_path).map_err(|source| ManifestError::Read {
        path: manifest_path.clone(),
        source,
    })?;
    let manifest = Manifest::parse(&text, &manifest_path)?;
    let component_path = dir.join(&manifest.component);
    let wasm = std::fs::read(&component_path).map_err(|e| LoadError::Component {
        path: component_path.clone(),
        message: e.to_string(),
    })?;
    let fingerprint = sha256_hex(&[text.as_bytes(), &wasm].concat());
    Ok((manifest, wasm, fingerprint))
}

/// Loads one plugin folder: manifest, component, compilation and world check.
pub fn load_plugin(
    runtime: &Runtime,
    dir: &Path,
    overrides: Option<&PluginOverrides>,
) -> Result<LoadedPlugin, LoadError> {
    let (manifest, wasm, fingerprint) = read_plugin(dir)?;
    prepare(runtime, dir, manifest, &wasm, fingerprint, overrides)
}

fn prepare(
    runtime: &Runtime,
    dir: &Path,
    manifest: Manifest,
    wasm: &[u8],
    fingerprint: String,
    overrides: Option<&PluginOverrides>,
) -> Result<LoadedPlugin, LoadError> {
    let label = dir.join(&manifest.component).display().to_string();
    let (pre, cache) = runtime.prepare(&manifest, wasm, &label)?;
    let grants = Arc::new(Grants::resolve(&manifest, overrides));
    Ok(LoadedPlugin {
        manifest,
        grants,
        pre,
        dir: dir.to_path_buf(),
        component_sha256: sha256_hex(wasm),
        fingerprint,
        cache,
    })
}

/// Runs file reading and compilation off the async workers; a failure of the
/// work or of its thread comes back as the message to report.
async fn blocking<T, E>(work: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, String>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("plugin loading stopped: {e}")),
    }
}

/// The folders under `root` that hold a manifest, in name order.
pub fn plugin_dirs(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join(MANIFEST_FILE).is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

pub struct PluginRegistry {
    runtime: Arc<Runtime>,
    root: PathBuf,
    overrides: BTreeMap<String, PluginOverrides>,
    plugins: ArcSwap<BTreeMap<String, Arc<LoadedPlugin>>>,
    failures: ArcSwap<Vec<LoadFailure>>,
    /// One reload at a time; calls never wait on it.
    reloading: tokio::sync::Mutex<()>,
}

impl PluginRegistry {
    pub fn new(
        runtime: Arc<Runtime>,
        root: PathBuf,
        overrides: BTreeMap<String, PluginOverrides>,
    ) -> Self {
        Self {
            runtime,
            root,
            overrides,
            plugins: ArcSwap::from_pointee(BTreeMap::new()),
            failures: ArcSwap::from_pointee(Vec::new()),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn get(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins.load().get(name).cloned()
    }

    pub fn all(&self) -> Arc<BTreeMap<String, Arc<LoadedPlugin>>> {
        self.plugins.load_full()
    }

    pub fn failures(&self) -> Arc<Vec<LoadFailure>> {
        self.failures.load_full()
    }

    /// Rescans the plugin folder. New and changed plugins are compiled and checked
    /// before they replace anything; a plugin that fails keeps its previous version
    /// (if any) serving; plugins whose folders are gone are removed.
    pub async fn reload(&self) -> ReloadReport {
        let _guard = self.reloading.lock().await;
        let current = self.plugins.load_full();
        let mut report = ReloadReport::default();
        let mut next: BTreeMap<String, Arc<LoadedPlugin>> = BTreeMap::new();
        let mut dirs = match plugin_dirs(&self.root) {
            Ok(d) => d,
            Err(e) => {
                // A folder that cannot be read now (being swapped, out of file
                // descriptors) says nothing about the plugins: keep them all.
                let error = format!(
                    "{}: cannot read the plugins folder: {e}",
                    self.root.display()
                );
                tracing::error!(%error, "plugins kept as they were");
                report.failed.push(LoadFailure {
                    dir: self.root.clone(),
                    error,
                });
                report.unchanged = current.keys().cloned().collect();
                return report;
            }
        };
        // Folders of plugins already serving go first, so that a new folder that
        // reuses a serving plugin's name is the one refused as the duplicate.
        dirs.sort_by_key(|d| !current.values().any(|p| &p.dir == d));
        for dir in dirs {
            let read = {
                let dir = dir.clone();
                blocking(move || read_plugin(&dir)).await
            };
            let (manifest, wasm, fingerprint) = match read {
                Ok(parts) => parts,
                Err(error) => {
                    self.keep_previous_on_failure(&current, &dir, &mut next, &mut report, error);
                    continue;
                }
            };
            let name = manifest.name.to_string();
            if let Some(other) = next.get(&name) {
                report.failed.push(LoadFailure {
                    dir: dir.clone(),
                    error: LoadError::DuplicateName {
                        path: dir.join(MANIFEST_FILE),
                        name,
                        other: other.dir.clone(),
                    }
                    .to_string(),
                });
                continue;
            }
            if let Some(existing) = current
                .get(&name)
                .filter(|p| p.fingerprint == fingerprint && p.dir == dir)
            {
                next.insert(name.clone(), existing.clone());
                report.unchanged.push(name);
                continue;
            }
            let runtime = self.runtime.clone();
            let overrides = self.overrides.get(&name).cloned();
            let prepared = {
                let dir = dir.clone();
                blocking(move || {
                    prepare(
                        &runtime,
                        &dir,
                        manifest,
                        &wasm,
                        fingerprint,
                        overrides.as_ref(),
                    )
                })
                .await
            };
            match prepared {
                Ok(plugin) => {
                    tracing::info!(plugin = %name, version = %plugin.manifest.version, world = %plugin.world(),
                        cache = ?plugin.cache, dir = %dir.display(), "plugin loaded");
                    next.insert(name.clone(), Arc::new(plugin));
                    report.loaded.push(name);
                }
                Err(error) => {
                    self.keep_previous_on_failure(&current, &dir, &mut next, &mut report, error)
                }
            }
        }
        for name in current.keys() {
            if !next.contains_key(name) {
                tracing::info!(plugin = %name, "plugin removed");
                report.removed.push(name.clone());
            }
        }
        self.plugins.store(Arc::new(next));
        self.failures.store(Arc::new(report.failed.clone()));
        report
    }

    fn keep_previous_on_failure(
        &self,
        current: &BTreeMap<String, Arc<LoadedPlugin>>,
        dir: &Path,
        next: &mut BTreeMap<String, Arc<LoadedPlugin>>,
        report: &mut ReloadReport,
        error: String,
    ) {
        let previous = current.values().find(|p| p.dir == dir);
        match previous {
            Some(p) => {
                tracing::error!(dir = %dir.display(), %error, plugin = %p.name(), "plugin failed to load; the previous version keeps serving");
                next.insert(p.name().to_string(), p.clone());
            }
            None => tracing::error!(dir = %dir.display(), %error, "plugin failed to load"),
        }
        report.failed.push(LoadFailure {
            dir: dir.to_path_buf(),
            error,
        });
    }
}
