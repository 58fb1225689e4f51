//! Helpers shared by the integration-test modules.

use std::path::{Path, PathBuf};

use mirage::export::vae::{write_random_set, VaeArch};

/// A fresh copy of the tiny random-weight VAE model set (see `write_random_set` for how it is made),
/// in its own temporary directory so that tests may corrupt it.
pub fn tiny_set() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let set = dir.path().join("tiny");
    std::fs::create_dir_all(&set).expect("mkdir");
    write_random_set(&set, &VaeArch::tiny(), 1234).expect("writing the tiny fixture set");
    (dir, set)
}

/// Reads `path` as a JSON value.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

/// The built `mirage` CLI of this test run.
pub fn mirage_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mirage"))
}
