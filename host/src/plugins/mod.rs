//! Plugins on disk: manifests, the registry of loaded plugins, and hot reload.

pub mod build;
pub mod manifest;
pub mod registry;
pub mod reload;
pub mod run;
pub mod scaffold;

pub use manifest::{Manifest, PluginName, World};
pub use registry::{LoadedPlugin, PluginRegistry};
