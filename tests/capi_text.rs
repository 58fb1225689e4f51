//! Text-to-image through the C API from real programs: tests/c/test_text.c (strict C99) and
//! tests/c/test_text.cpp (the C++ wrapper bindings/cpp/mirage.hpp, built as C++11), compiled against
//! libmirage.so and run on a tiny text-conditioned set (the real MiniLM encoder, a random tiny U-Net) and a
//! set without text conditioning.
//!
//! Not run under valgrind: tests/capi.rs keeps its valgrind helpers private, and MiniLM under memcheck
//! would take minutes.

use std::path::{Path, PathBuf};

use crate::util::{compile, run, tiny_diffusion_set, tiny_text_set, Lang};

/// The two fixture sets (text-conditioned, plain) and the folders that hold them.
fn fixture_sets() -> (Vec<tempfile::TempDir>, [PathBuf; 2]) {
    let (d1, text) = tiny_text_set();
    let (d2, plain) = tiny_diffusion_set();
    (vec![d1, d2], [text, plain])
}

/// Compiles tests/c/`file` into `dir` and runs it with the two sets; returns its output on success.
fn build_and_run(lang: Lang, file: &str, extra: &[&str], dir: &Path, sets: &[PathBuf; 2]) -> String {
    let exe = dir.join(file.replace('.', "_"));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c").join(file);
    compile(lang, &[src], &exe, extra);
    let (ok, text) = run(&exe, &[sets[0].as_os_str(), sets[1].as_os_str()]);
    assert!(ok, "tests/c/{file} failed:\n{text}");
    text
}

#[test]
fn c_text_program_passes() {
    let (_dirs, sets) = fixture_sets();
    let dir = tempfile::tempdir().unwrap();
    // TEST_API_VERBOSE=1 (inherited) makes the program print every error message it checks.
    let text = build_and_run(Lang::C, "test_text.c", &[], dir.path(), &sets);
    assert!(text.contains(" 0 failed"), "{text}");
    eprintln!("{text}");
}

#[test]
fn cpp_text_wrapper_runs() {
    let (_dirs, sets) = fixture_sets();
    let dir = tempfile::tempdir().unwrap();
    // C++11, the standard bindings/cpp/mirage.hpp promises (util::compile's own -std=c++17 comes first).
    let text = build_and_run(Lang::Cxx, "test_text.cpp", &["-std=c++11"], dir.path(), &sets);
    assert!(text.contains("test_text_cpp: ok"), "{text}");
    eprintln!("{text}");
}
