//! Build script.
//! - Release builds of the cdylib get the SONAME libmirage.so.<major> (the installed library's, see
//!   scripts/install.sh and the README's "Versions"); `make lib` adds the libmirage.so.<major> symlink beside
//!   it. Debug builds keep none, so that test programs linked against target/debug run as they are.
//! - With the `train` feature, binaries and tests get an rpath to libtorch's folder so that `mirage-train`
//!   runs without LD_LIBRARY_PATH (torch-sys links libtorch but sets no rpath for us).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var("PROFILE").as_deref() == Ok("release") {
        let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets the version");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmirage.so.{major}");
    }
    if std::env::var_os("CARGO_FEATURE_TRAIN").is_some() {
        if let Some(dir) = std::env::var_os("LIBTORCH") {
            let lib = std::path::Path::new(&dir).join("lib");
            let lib = lib.canonicalize().unwrap_or(lib);
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        }
    }
}
