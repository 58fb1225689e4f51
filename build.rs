//! Build script: with the `train` feature, binaries and tests get an rpath to libtorch's folder so that
//! `mirage-train` runs without LD_LIBRARY_PATH (torch-sys links libtorch but sets no rpath for us).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_TRAIN").is_some() {
        if let Some(dir) = std::env::var_os("LIBTORCH") {
            let lib = std::path::Path::new(&dir).join("lib");
            let lib = lib.canonicalize().unwrap_or(lib);
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        }
    }
}
