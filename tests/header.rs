//! include/mirage.h: regenerated from src/capi/ and diffed, version macros, compiled as strict C99 and as
//! C++ (included twice), its usage example run, and the C++ wrapper bindings/cpp/mirage.hpp run (VAE and
//! diffusion).

use std::path::Path;

use crate::util::{compile, run, tiny_diffusion_set, tiny_text_set, Lang};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The header as cbindgen makes it now, from cbindgen.toml and src/capi/ only.
fn generate() -> String {
    let config = cbindgen::Config::from_file(root().join("cbindgen.toml")).expect("reading cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root().join("src/capi/mod.rs"))
        .generate()
        .expect("cbindgen failed on src/capi/");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("cbindgen wrote UTF-8")
}

fn checked_in() -> String {
    std::fs::read_to_string(root().join("include/mirage.h")).unwrap_or_default()
}

#[test]
fn header_is_up_to_date() {
    let fresh = generate();
    let path = root().join("include/mirage.h");
    if std::env::var_os("MIRAGE_BLESS").is_some_and(|v| v == "1") {
        // Write then rename, so that the tests compiling the header in parallel never see half a file.
        let tmp = path.with_extension("h.tmp");
        std::fs::write(&tmp, &fresh).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        return;
    }
    let old = checked_in();
    if old != fresh {
        let first = old
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(old.lines().count().min(fresh.lines().count()));
        let show = |s: &str| s.lines().skip(first).take(3).collect::<Vec<_>>().join("\n");
        panic!(
            "include/mirage.h is stale (the C API changed): regenerate it with `make header` (MIRAGE_BLESS=1) and \
             commit it.\nFirst difference at line {}:\n--- checked in\n{}\n+++ generated\n{}",
            first + 1,
            show(&old),
            show(&fresh)
        );
    }
}

#[test]
fn version_macros_agree_with_cargo_toml() {
    let header = checked_in();
    let define = |name: &str| -> String {
        let prefix = format!("#define {name} ");
        let line = header.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {name}"));
        line.trim().trim_matches('"').to_string()
    };
    let cargo = env!("CARGO_PKG_VERSION");
    assert_eq!(define("MIRAGE_VERSION_STRING"), cargo, "MIRAGE_VERSION_STRING (cbindgen.toml) vs Cargo.toml");
    let parts = [define("MIRAGE_VERSION_MAJOR"), define("MIRAGE_VERSION_MINOR"), define("MIRAGE_VERSION_PATCH")];
    assert_eq!(parts.join("."), cargo, "MIRAGE_VERSION_MAJOR.MINOR.PATCH vs Cargo.toml");
    // SAFETY: returns a static NUL-terminated string.
    let lib = unsafe { std::ffi::CStr::from_ptr(mirage::capi::mirage_version()) };
    assert_eq!(lib.to_str().unwrap(), cargo);
}

#[test]
fn header_compiles_as_strict_c_and_as_cpp_included_twice() {
    let dir = tempfile::tempdir().unwrap();
    let body = "#include \"mirage.h\"\n#include \"mirage.h\"\nint main(void) { return mirage_version() == 0; }\n";
    for (lang, file, extra) in [
        (Lang::C, "twice.c", &["-std=c99"][..]),
        (Lang::C, "twice11.c", &["-std=c11"][..]),
        (Lang::Cxx, "twice.cpp", &["-std=c++11"][..]),
    ] {
        let src = dir.path().join(file);
        std::fs::write(&src, body).unwrap();
        let exe = dir.path().join(format!("{file}.out"));
        compile(lang, &[src], &exe, extra);
        let (ok, text) = run(&exe, &[]);
        assert!(ok, "{file}: {text}");
    }
}

/// The code between `@code` and `@endcode` in the header's opening comment.
fn header_example() -> String {
    let header = checked_in();
    let start = header.find("@code").expect("the header has no @code example") + "@code".len();
    let end = header.find("@endcode").expect("@endcode");
    header[start..end]
        .lines()
        .map(|l| l.strip_prefix(" * ").or_else(|| l.strip_prefix(" *")).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn header_example_runs() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("example.c");
    std::fs::write(&src, header_example()).unwrap();
    let exe = dir.path().join("example");
    compile(Lang::C, &[src], &exe, &[]);
    let (_set_dir, set) = tiny_text_set();
    let (ok, text) = run(&exe, &[set.as_os_str(), "a red apple".as_ref()]);
    assert!(
        ok && text.contains("20 steps done")
            && text.matches("generated 28x28").count() == 4
            && text.contains("decoded 28x28"),
        "the header's example failed:\n{text}"
    );
}

#[test]
fn cpp_wrapper_runs() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("test_header");
    compile(Lang::Cxx, &[root().join("tests/c/test_header.cpp")], &exe, &[]);
    let (_set_dir, set) = tiny_diffusion_set();
    let (ok, text) = run(&exe, &[set.as_os_str()]);
    assert!(ok, "tests/c/test_header.cpp failed:\n{text}");
    assert!(text.contains("test_header: ok"), "{text}");
}
