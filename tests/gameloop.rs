//! The game-loop API from C: tests/c/test_gameloop.c, compiled against this build's libmirage.so and run on
//! the tiny random VAE + U-Net set. Jobs on two worker threads polled once per frame, previews, a cancel
//! midway, a MIRAGE_JOB_MANUAL job stepped on a 4 ms budget per frame, results taken into a bottom-up BGRA
//! buffer with padded rows and compared byte for byte with the blocking API, resizing and float targets,
//! the bounded queue (MIRAGE_ERR_BUSY), bad targets, and running jobs and contexts freed without waiting;
//! then the same program under valgrind (no invalid access, no leak). The C++ wrapper's jobs are run by
//! tests/header.rs (cpp_wrapper_runs).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::capi::{assert_valgrind_clean, valgrind_wanted};
use crate::util::{compile, run, tiny_diffusion_set, Lang};

/// tests/c/test_gameloop.c built in a temporary folder, and the tiny diffusion set it runs on (the folders
/// live as long as the returned guards).
fn build() -> (Vec<tempfile::TempDir>, PathBuf, PathBuf) {
    let (set_dir, set) = tiny_diffusion_set();
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("test_gameloop");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/test_gameloop.c");
    compile(Lang::C, &[src], &exe, &[]);
    (vec![set_dir, dir], exe, set)
}

#[test]
fn c_gameloop_program_passes() {
    let (_dirs, exe, set) = build();
    let start = Instant::now();
    let (ok, text) = run(&exe, &[set.as_os_str()]);
    let took = start.elapsed();
    assert!(ok, "tests/c/test_gameloop.c failed:\n{text}");
    assert!(text.contains("test_gameloop: ") && text.contains(" checks, 0 failed"), "{text}");
    assert!(text.contains("game loop: ") && text.contains("queue: BUSY after"), "a section did not run:\n{text}");
    assert!(!text.contains("FAIL"), "{text}");
    assert!(took.as_secs() < 60, "the game loop took {took:?}; it should take a few seconds:\n{text}");
    eprintln!("{text}");
}

/// The game-loop program under valgrind (see `assert_valgrind_clean`): worker threads, jobs cancelled and
/// freed while they run, contexts freed under their workers, host buffers written by the library, and not
/// a byte leaked. Gated as the other valgrind tests: runs when valgrind is installed; MIRAGE_VALGRIND=0
/// skips it, MIRAGE_VALGRIND=1 requires it.
#[test]
fn c_gameloop_under_valgrind() {
    if !valgrind_wanted() {
        return;
    }
    let (_dirs, exe, set) = build();
    let start = Instant::now();
    assert_valgrind_clean(&exe, &[set.as_os_str()]);
    eprintln!("test_gameloop under valgrind: clean in {:?}", start.elapsed());
}
