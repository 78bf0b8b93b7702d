//! Where cubecl keeps what it tuned and compiled for the wgpu backend: in the user's cache
//! folder, so that a second run anywhere on the machine starts warm. cubecl's default is the
//! `target/` folder of the outermost Cargo project above the working folder (or the user cache
//! outside one), which gives a cold start in every new checkout and scatters caches.
//!
//! A `cubecl.toml` (or `burn.toml`) that names `[environment] path` still wins, and
//! `TRAINER_KERNEL_CACHE` names another folder. `run_info.json` says whether the cache was
//! warm when the run started.

use std::path::PathBuf;
use std::sync::OnceLock;

use burn::cubecl::config::cache::CacheConfig;
use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
use serde::{Deserialize, Serialize};

/// Whether the cache held anything when the run started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheState {
    /// Results of earlier runs were there: nothing already tuned is tuned again.
    Warm,
    /// Empty or absent: this run tunes and compiles, and fills it.
    Cold,
}

/// The kernel cache this process uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelCache {
    pub path: PathBuf,
    pub state: CacheState,
}

static CHOSEN: OnceLock<KernelCache> = OnceLock::new();

/// Points cubecl at the cache folder (once, before the wgpu device starts) and says how warm
/// it was.
pub fn configure() -> KernelCache {
    CHOSEN
        .get_or_init(|| {
            let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
            let path = match &config.environment.path {
                // The default: nobody chose a place.
                CacheConfig::Target => {
                    let path = user_cache_dir();
                    config.environment.path = CacheConfig::Directory(path.clone());
                    path
                }
                chosen => chosen.root(),
            };
            let state = state_of(&path);
            // Another part of the process may have read the configuration first (a test
            // opening the device twice); its choice then stands.
            CubeClRuntimeConfig::try_set(config);
            KernelCache { path, state }
        })
        .clone()
}

/// `TRAINER_KERNEL_CACHE`, else `trainer/cubecl` in the platform's user cache folder.
fn user_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TRAINER_KERNEL_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| {
                let home = PathBuf::from(home);
                if cfg!(target_os = "macos") {
                    home.join("Library/Caches")
                } else {
                    home.join(".cache")
                }
            })
        })
        .or_else(|| std::env::var_os("LOCALAPPDATA").map(PathBuf::from))
        .unwrap_or_else(std::env::temp_dir);
    base.join("trainer").join("cubecl")
}

/// Warm when the folder holds a non-empty database file.
fn state_of(path: &std::path::Path) -> CacheState {
    let warm = std::fs::read_dir(path).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            entry.path().extension().is_some_and(|e| e == "db")
                && entry.metadata().is_ok_and(|m| m.len() > 0)
        })
    });
    if warm {
        CacheState::Warm
    } else {
        CacheState::Cold
    }
}
