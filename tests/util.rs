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

/// The tiny VAE set plus a tiny random-weight U-Net on its latents (`add_random_unet`).
pub fn tiny_diffusion_set() -> (tempfile::TempDir, PathBuf) {
    let (tmp, dir) = tiny_set();
    let m = mirage::manifest::Manifest::load(&dir).expect("manifest");
    let [c, h, w] = m.vae.expect("vae").latent_shape;
    let arch = mirage::export::unet::UNetArch::tiny(c as i64, h as i64, w as i64);
    mirage::export::unet::add_random_unet(&dir, &arch, 99).expect("writing the tiny U-Net");
    (tmp, dir)
}

/// Reads `path` as a JSON value.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

/// The built `mirage` CLI of this test run.
pub fn mirage_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mirage"))
}

/// The folder holding the libmirage.so of this build. `cargo test` builds the cdylib beside the test
/// binary (target/<profile>/deps); `cargo build --lib` also puts a copy one level up.
pub fn libmirage_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary folder").to_path_buf();
    for dir in [deps.clone(), deps.parent().unwrap_or(&deps).to_path_buf()] {
        if dir.join("libmirage.so").is_file() {
            return dir;
        }
    }
    panic!("libmirage.so not found beside {} or one level up: build it with `cargo build --lib`", exe.display());
}

/// The language of a test program.
#[derive(Clone, Copy, Debug)]
pub enum Lang {
    C,
    Cxx,
}

/// Compiles `sources` into the executable `out`, warnings as errors, with `include/` (and `bindings/cpp/`)
/// on the include path, linked to this build's libmirage.so with an rpath, so that it runs as is.
/// The compiler is `$CC` / `$CXX`, else `cc` / `c++`; `$MIRAGE_TEST_CFLAGS` (split at spaces) is added to both
/// (`make sanitize` builds the programs with `-fsanitize=address,undefined` this way). Panics with the
/// compiler's output on failure.
pub fn compile(lang: Lang, sources: &[PathBuf], out: &Path, extra: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (var, default, std) = match lang {
        Lang::C => ("CC", "cc", "-std=c99"),
        Lang::Cxx => ("CXX", "c++", "-std=c++17"),
    };
    let compiler = std::env::var(var).unwrap_or_else(|_| default.to_string());
    let lib = libmirage_dir();
    let output = std::process::Command::new(&compiler)
        .args([std, "-Wall", "-Wextra", "-Werror", "-pedantic", "-g", "-pthread"])
        .arg("-I")
        .arg(root.join("include"))
        .arg("-I")
        .arg(root.join("bindings/cpp"))
        .args(extra)
        .args(std::env::var("MIRAGE_TEST_CFLAGS").unwrap_or_default().split_whitespace())
        .args(sources)
        .arg("-o")
        .arg(out)
        .arg(format!("-L{}", lib.display()))
        // DT_RPATH, not RUNPATH: it wins over LD_LIBRARY_PATH, which `cargo test` sets to folders that may
        // hold another (stale) libmirage.so, so the program loads exactly the library it was linked with.
        .arg(format!("-Wl,--disable-new-dtags,-rpath,{}", lib.display()))
        .arg("-lmirage")
        .output()
        .unwrap_or_else(|e| panic!("running the {lang:?} compiler {compiler:?}: {e}"));
    assert!(
        output.status.success(),
        "{compiler} failed on {sources:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `program` with `args`; returns whether it exited 0, and its stdout and stderr together.
pub fn run(program: &Path, args: &[&std::ffi::OsStr]) -> (bool, String) {
    run_env(program, args, &[])
}

/// [`run`] with these environment variables set as well.
pub fn run_env(program: &Path, args: &[&std::ffi::OsStr], envs: &[(&str, &str)]) -> (bool, String) {
    let output = std::process::Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// An exported all-MiniLM-L6-v2 encoder directory: `models/minilm` when the setup made it (`make test`
/// does), else one export from `.deps/minilm` into a temporary directory shared by this test binary.
#[allow(dead_code)]
pub fn text_encoder_dir() -> PathBuf {
    use std::sync::OnceLock;
    static DIR: OnceLock<(Option<tempfile::TempDir>, PathBuf)> = OnceLock::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    DIR.get_or_init(|| {
        let shipped = root.join("models/minilm");
        if mirage::text::TextEncoder::open(&shipped, None, None).is_ok() {
            return (None, shipped);
        }
        let src = root.join(".deps/minilm");
        assert!(
            src.join("model.safetensors").is_file(),
            "MiniLM is missing from {}: run scripts/setup.sh text",
            src.display()
        );
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = tmp.path().join("minilm");
        mirage::export::minilm::export_minilm(&src, &out).expect("exporting MiniLM");
        (Some(tmp), out)
    })
    .1
    .clone()
}

/// The tiny VAE set plus a tiny random-weight text-conditioned U-Net (cross-attention at every level, 8
/// tokens of MiniLM's width), whose manifest points at [`text_encoder_dir`] by absolute path.
#[allow(dead_code)]
pub fn tiny_text_set() -> (tempfile::TempDir, PathBuf) {
    let (tmp, dir) = tiny_set();
    add_tiny_text_unet(&dir, &text_encoder_dir());
    (tmp, dir)
}

/// [`tiny_text_set`] whose text encoder is a copy of [`text_encoder_dir`] in the same temporary directory
/// (`<tmp>/encoder`), for a test that changes the encoder's files.
#[allow(dead_code)]
pub fn tiny_text_set_own_encoder() -> (tempfile::TempDir, PathBuf) {
    let (tmp, dir) = tiny_set();
    let enc = tmp.path().join("encoder");
    std::fs::create_dir(&enc).expect("encoder folder");
    for e in std::fs::read_dir(text_encoder_dir()).expect("text encoder folder").flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), enc.join(e.file_name())).expect("copying the text encoder");
        }
    }
    add_tiny_text_unet(&dir, &enc);
    (tmp, dir)
}

/// Adds a tiny random text-conditioned U-Net to the set in `dir`, conditioned on the encoder in `enc`.
fn add_tiny_text_unet(dir: &Path, enc: &Path) {
    let m = mirage::manifest::Manifest::load(dir).expect("manifest");
    let [c, h, w] = m.vae.expect("vae").latent_shape;
    let arch = mirage::export::unet::UNetArch::tiny_text(c as i64, h as i64, w as i64, 384, 8);
    let onnx = std::fs::read(enc.join("text_encoder.onnx")).expect("encoder onnx");
    let spec = mirage::manifest::TextSpec {
        encoder: enc.to_str().expect("utf-8 path").to_string(),
        encoder_sha256: mirage::manifest::sha256_hex(&onnx),
        width: 384,
        tokens: 8,
        guidance: 2.5,
    };
    mirage::export::unet::add_random_unet_with_text(dir, &arch, 77, Some(spec)).expect("writing the tiny text U-Net");
}

/// Runs the built `mirage-train` with `args`; panics with its output unless it succeeds; returns its stdout.
#[cfg(feature = "train")]
pub fn mirage_train(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mirage-train")).args(args).output().expect("mirage-train");
    assert!(
        out.status.success(),
        "mirage-train {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Fashion-MNIST directory the trainer reads by default, checked to hold the data.
#[allow(dead_code)]
pub fn fashion_mnist_dir() -> &'static Path {
    let data = Path::new(mirage::fashion::DEFAULT_DIR);
    assert!(
        data.join("train-images-idx3-ubyte.gz").is_file(),
        "Fashion-MNIST is missing from {}: run scripts/setup.sh data",
        data.display()
    );
    data
}
