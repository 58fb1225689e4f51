//! The C API: its functions called from Rust (panic boundary, last error, statuses, argument checks, a VAE
//! round trip), and tests/c/test_api.c compiled against libmirage.so and run (optionally under valgrind).
//!
//! The runtime is a process-wide singleton shared with the other test modules, so nothing here calls
//! `mirage_runtime_init` with options that would succeed: only calls refused before ONNX Runtime loads.
//! The C program runs in its own process and exercises the real initialisation with a log callback.

use std::ffi::{c_char, CStr, OsStr};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};

use mirage::capi::*;
use mirage::export::vae::{write_random_set, VaeArch, ENCODER_FILE};

use crate::util::{compile, run, run_env, tiny_diffusion_set, tiny_set, Lang};

fn last_error() -> String {
    // SAFETY: a NULL buffer with len 0 is allowed; the second call gets a buffer of the reported size.
    let n = unsafe { mirage_last_error(null_mut(), 0) };
    let mut buf = vec![0 as c_char; n + 1];
    let m = unsafe { mirage_last_error(buf.as_mut_ptr(), buf.len()) };
    assert_eq!(m, n);
    // SAFETY: mirage_last_error NUL-terminates.
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().expect("UTF-8").to_string()
}

/// Asserts a failure with `want` whose message contains `needle`.
#[track_caller]
fn assert_err(status: MirageStatus, want: MirageStatus, needle: &str) {
    let msg = last_error();
    assert_eq!(status, want, "got {status} ({msg}), wanted {want}");
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
}

#[track_caller]
fn assert_ok(status: MirageStatus) {
    assert_eq!(status, MIRAGE_OK, "{}", last_error());
    assert_eq!(last_error(), "", "a successful call left a message");
}

fn static_str(p: *const c_char) -> &'static str {
    // SAFETY: the functions tested return static NUL-terminated strings.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap()
}

#[test]
fn status_strings_are_distinct_and_unknown_values_are_named() {
    let texts: Vec<_> = (MIRAGE_OK..=MIRAGE_ERR_BUSY).map(|s| static_str(mirage_status_str(s))).collect();
    let mut unique = texts.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), texts.len(), "{texts:?}");
    assert!(!texts.contains(&"unknown status"));
    for v in [MIRAGE_ERR_BUSY + 1, 999, u32::MAX] {
        assert_eq!(static_str(mirage_status_str(v)), "unknown status");
    }
    assert_eq!(static_str(mirage_provider_name(MIRAGE_PROVIDER_TENSORRT)), "tensorrt");
    assert_eq!(static_str(mirage_provider_name(12)), "unknown");
}

#[test]
fn version_agrees_with_cargo_toml() {
    assert_eq!(static_str(mirage_version()), env!("CARGO_PKG_VERSION"));
}

#[test]
fn last_error_is_snprintf_style_utf8_safe_and_per_thread() {
    // A path with a two-byte character makes a message whose truncation could split it.
    let dir = c"/nonexistent/caf\xc3\xa9-models";
    let mut ctx = null_mut();
    // SAFETY: valid pointers throughout.
    let status = unsafe { mirage_context_new(dir.as_ptr(), null(), &mut ctx) };
    assert_eq!(status, MIRAGE_ERR_MODEL_NOT_FOUND);
    assert!(ctx.is_null(), "out-parameter written on failure");
    let full = last_error();
    assert!(full.contains("café"), "{full}");
    let cut = full.find('é').unwrap() + 1; // inside the two bytes of 'é'

    unsafe {
        assert_eq!(mirage_last_error(null_mut(), 0), full.len());
        assert_eq!(mirage_last_error(null_mut(), 10), full.len(), "NULL buf with len > 0 writes nothing");
        let mut buf = vec![b'#' as c_char; full.len() + 8];
        // len = cut + 1 leaves room for `cut` bytes: the copy must stop before 'é', not in its middle.
        assert_eq!(mirage_last_error(buf.as_mut_ptr(), cut + 1), full.len());
        let got = CStr::from_ptr(buf.as_ptr()).to_str().expect("truncated copy is valid UTF-8");
        assert_eq!(got, &full[..cut - 1]);
        assert_eq!(buf[cut + 1], b'#' as c_char, "wrote past len");
        // One byte: just the NUL.
        assert_eq!(mirage_last_error(buf.as_mut_ptr(), 1), full.len());
        assert_eq!(buf[0], 0);
    }

    // Another thread has its own (empty) message, and its failures do not touch ours.
    std::thread::spawn(|| {
        assert_eq!(last_error(), "");
        // SAFETY: NULL arguments are what is being tested.
        assert_err(unsafe { failing_call() }, MIRAGE_ERR_INVALID_ARGUMENT, "latent is NULL");
    })
    .join()
    .unwrap();
    assert_eq!(last_error(), full);

    // Any status-returning call starts afresh: a success clears the message.
    let mut p = std::mem::MaybeUninit::<MirageContextParams>::uninit();
    assert_ok(unsafe { mirage_context_params_init(p.as_mut_ptr(), size_of::<MirageContextParams>()) });
}

/// A failing call for the thread test: the shape of a NULL latent.
unsafe fn failing_call() -> MirageStatus {
    let mut shape = [0u32; 4];
    unsafe { mirage_latent_shape(null(), shape.as_mut_ptr()) }
}

#[cfg(feature = "test-panic")]
#[test]
fn a_panic_becomes_a_status_with_its_message() {
    let status = mirage_debug_panic();
    assert_err(status, MIRAGE_ERR_PANIC, "mirage_debug_panic was called");
    // The process goes on and the API still works on this thread.
    assert_ok(unsafe { mirage_context_params_init(&mut std::mem::zeroed(), size_of::<MirageContextParams>()) });
}

#[test]
fn null_and_malformed_arguments_are_refused_with_their_names() {
    let mut latent = null_mut();
    let mut batch = null_mut();
    let mut shape = [0u32; 4];
    let one = [1.0f32; 4];
    // SAFETY: every pointer is valid or NULL, which is what is being tested.
    unsafe {
        assert_err(
            mirage_latent_new(one.as_ptr(), 4, null(), &mut latent),
            MIRAGE_ERR_INVALID_ARGUMENT,
            "shape is NULL",
        );
        assert_err(
            mirage_latent_new(null(), 4, [1, 1, 2, 2].as_ptr(), &mut latent),
            MIRAGE_ERR_INVALID_ARGUMENT,
            "data is NULL",
        );
        assert_err(
            mirage_latent_new(one.as_ptr(), 4, [1, 1, 2, 2].as_ptr(), null_mut()),
            MIRAGE_ERR_INVALID_ARGUMENT,
            "out is NULL",
        );
        assert_err(
            mirage_latent_new(one.as_ptr(), 4, [1, 0, 2, 2].as_ptr(), &mut latent),
            MIRAGE_ERR_INVALID_ARGUMENT,
            "> 0",
        );
        assert_err(
            mirage_latent_new(one.as_ptr(), 0, [1, 1, 2, 2].as_ptr(), &mut latent),
            MIRAGE_ERR_INVALID_ARGUMENT,
            "len is 0",
        );
        assert!(latent.is_null());
        // A misaligned pointer is refused rather than dereferenced.
        let bytes = [0u8; 32];
        let misaligned = bytes.as_ptr().add(1).cast::<u32>();
        assert_err(mirage_latent_new(one.as_ptr(), 4, misaligned, &mut latent), MIRAGE_ERR_INVALID_ARGUMENT, "aligned");

        assert_err(mirage_latent_shape(null(), shape.as_mut_ptr()), MIRAGE_ERR_INVALID_ARGUMENT, "latent is NULL");
        assert_err(mirage_latent_data(null(), &mut null(), &mut 0), MIRAGE_ERR_INVALID_ARGUMENT, "latent is NULL");
        assert_err(mirage_vae_sample_prior(null(), 1, 1, &mut latent), MIRAGE_ERR_INVALID_ARGUMENT, "ctx is NULL");
        let mut sampleable = false;
        assert_err(
            mirage_context_prior_sampleable(null(), &mut sampleable),
            MIRAGE_ERR_INVALID_ARGUMENT,
            "ctx is NULL",
        );
        assert_err(
            mirage_vae_decode(null(), null(), MIRAGE_PIXEL_RGB8, &mut batch),
            MIRAGE_ERR_INVALID_ARGUMENT,
            "ctx is NULL",
        );
        assert_err(mirage_vae_decode_into(null(), null(), null(), 0), MIRAGE_ERR_INVALID_ARGUMENT, "ctx is NULL");
        assert_err(
            mirage_image_batch_get(null(), 0, &mut std::mem::zeroed()),
            MIRAGE_ERR_INVALID_ARGUMENT,
            "batch is NULL",
        );
        assert_err(mirage_context_latent_shape(null(), shape.as_mut_ptr()), MIRAGE_ERR_INVALID_ARGUMENT, "ctx is NULL");
        assert_err(
            mirage_context_new(null(), null(), &mut null_mut()),
            MIRAGE_ERR_INVALID_ARGUMENT,
            "model_dir is NULL",
        );
        assert_err(
            mirage_context_new(c"/x/\xff".as_ptr(), null(), &mut null_mut()),
            MIRAGE_ERR_INVALID_ARGUMENT,
            "UTF-8",
        );
        assert_eq!(mirage_image_batch_count(null()), 0);
        mirage_latent_free(null_mut());
        mirage_image_batch_free(null_mut());
        mirage_context_free(null_mut());
    }
}

#[test]
fn params_struct_size_rules() {
    let n = size_of::<MirageRuntimeOptions>();
    // SAFETY: the buffers are large enough for the sizes passed, or the call refuses the size first.
    unsafe {
        let mut o = std::mem::MaybeUninit::<MirageRuntimeOptions>::uninit();
        assert_err(mirage_runtime_options_init(o.as_mut_ptr(), n - 1), MIRAGE_ERR_INVALID_ARGUMENT, "struct_size");
        assert_err(mirage_runtime_options_init(null_mut(), n), MIRAGE_ERR_INVALID_ARGUMENT, "options is NULL");
        assert_ok(mirage_runtime_options_init(o.as_mut_ptr(), n));
        let o = o.assume_init();
        assert_eq!((o.struct_size, o.provider, o.log_level), (n, MIRAGE_PROVIDER_DEFAULT, MIRAGE_LOG_WARN));

        // Refused before anything loads, so the shared runtime is untouched.
        let mut small = o;
        small.struct_size = 8;
        assert_err(mirage_runtime_init(&small), MIRAGE_ERR_INVALID_ARGUMENT, "not the size of any version");
        let mut bad = o;
        bad.provider = 9;
        assert_err(mirage_runtime_init(&bad), MIRAGE_ERR_INVALID_ARGUMENT, "options->provider");
        // A thread storm is refused (issue: 20 000 threads were started), the limit itself accepted.
        let mut bad = o;
        bad.intra_threads = MIRAGE_MAX_THREADS + 1;
        assert_err(mirage_runtime_init(&bad), MIRAGE_ERR_INVALID_ARGUMENT, "options->intra_threads is 257");
        bad.intra_threads = 20_000;
        assert_err(mirage_runtime_init(&bad), MIRAGE_ERR_INVALID_ARGUMENT, "over the limit of 256");
        assert!(mirage::runtime::RuntimeOptions { intra_threads: 256, ..Default::default() }.validate().is_ok());
        let mut bad = o;
        bad.tensorrt_cache_dir = c"/tmp/\xc3".as_ptr();
        assert_err(mirage_runtime_init(&bad), MIRAGE_ERR_INVALID_ARGUMENT, "tensorrt_cache_dir");

        // A newer, bigger struct: init zeroes the tail; a set tail byte is refused by name.
        #[repr(C)]
        struct Newer {
            o: MirageRuntimeOptions,
            extra: [u64; 2],
        }
        let mut newer = std::mem::MaybeUninit::<Newer>::uninit();
        newer.as_mut_ptr().cast::<u8>().write_bytes(0xAA, size_of::<Newer>());
        assert_ok(mirage_runtime_options_init(newer.as_mut_ptr().cast(), size_of::<Newer>()));
        let mut newer = newer.assume_init();
        assert_eq!(newer.extra, [0, 0]);
        newer.extra[1] = 1 << 40;
        assert_err(mirage_runtime_init(&newer.o), MIRAGE_ERR_INVALID_ARGUMENT, "does not have");

        // A host built against the first version of a grown struct (MirageContextParams: struct_size and
        // provider, 16 bytes): init writes that version's fields and zeroes the rest; read, the fields the
        // host knows are its own and the newer ones (here inside the old trailing padding, which a host need
        // not preserve: 0xFF below) are the defaults.
        let (v1, end) = (16, 12);
        let mut old = [0xEEu8; 32];
        assert_ok(mirage_context_params_init(old.as_mut_ptr().cast(), v1));
        assert_eq!(&old[v1..], &[0xEE; 16], "init wrote past the host's struct");
        assert!(old[end..v1].iter().all(|&b| b == 0), "init filled the padding");
        old[8..12].copy_from_slice(&MIRAGE_PROVIDER_CPU.to_ne_bytes());
        old[end..v1].fill(0xFF);
        let (_d1, set1) = tiny_set();
        let dir1 = std::ffi::CString::new(set1.to_str().unwrap()).unwrap();
        let mut ctx = null_mut();
        assert_ok(mirage_context_new(dir1.as_ptr(), old.as_ptr().cast(), &mut ctx));
        mirage_context_free(ctx);
        for bad in [8, 15, 17, 20] {
            old[..8].copy_from_slice(&(bad as usize).to_ne_bytes());
            assert_err(
                mirage_context_new(dir1.as_ptr(), old.as_ptr().cast(), &mut null_mut()),
                MIRAGE_ERR_INVALID_ARGUMENT,
                "not the size of any version",
            );
        }
        // Version 2 ended at `tileable` (the int8 text encoder's `precision` came after): accepted, precision
        // defaulted.
        let end2 = std::mem::offset_of!(MirageContextParams, tileable) + 1;
        let v2 = end2.div_ceil(8) * 8;
        let mut two = [0xEEu8; 48];
        assert_ok(mirage_context_params_init(two.as_mut_ptr().cast(), v2));
        assert!(two[v2..].iter().all(|&b| b == 0xEE), "init wrote past the host's version 2 struct");
        two[8..12].copy_from_slice(&MIRAGE_PROVIDER_CPU.to_ne_bytes());
        assert_ok(mirage_context_new(dir1.as_ptr(), two.as_ptr().cast(), &mut ctx));
        mirage_context_free(ctx);
        // The diffusion params' first version ended at `guidance` (tileable and noise came with the job API).
        let end = std::mem::offset_of!(MirageDiffusionParams, guidance) + 4;
        let v1 = end.div_ceil(8) * 8;
        let mut d = vec![0xEEu8; size_of::<MirageDiffusionParams>() + 8];
        assert_ok(mirage_diffusion_params_init(d.as_mut_ptr().cast(), v1));
        assert!(d[end..v1].iter().all(|&b| b == 0) && d[v1..].iter().all(|&b| b == 0xEE));
        let old_params = d.as_ptr().cast::<MirageDiffusionParams>().read_unaligned();
        assert_eq!((old_params.steps, old_params.count), (50, 1));

        let mut p = std::mem::MaybeUninit::<MirageContextParams>::uninit();
        assert_err(mirage_context_params_init(p.as_mut_ptr(), 0), MIRAGE_ERR_INVALID_ARGUMENT, "struct_size");
        assert_ok(mirage_context_params_init(p.as_mut_ptr(), size_of::<MirageContextParams>()));
        let mut p = p.assume_init();
        p.struct_size = 4;
        let (_d, set) = tiny_set();
        let dir = std::ffi::CString::new(set.to_str().unwrap()).unwrap();
        assert_err(
            mirage_context_new(dir.as_ptr(), &p, &mut null_mut()),
            MIRAGE_ERR_INVALID_ARGUMENT,
            "params->struct_size",
        );
    }
}

/// A context on a fresh tiny fixture set, with the runtime's defaults.
struct Ctx {
    ptr: *mut MirageContext,
    _dir: tempfile::TempDir,
}

impl Ctx {
    fn open() -> Ctx {
        let (dir, set) = tiny_set();
        let path = std::ffi::CString::new(set.to_str().unwrap()).unwrap();
        let mut ptr = null_mut();
        // SAFETY: valid pointers.
        assert_ok(unsafe { mirage_context_new(path.as_ptr(), null(), &mut ptr) });
        Ctx { ptr, _dir: dir }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: made by mirage_context_new, freed once.
        unsafe { mirage_context_free(self.ptr) }
    }
}

fn latent_vec(l: *const MirageLatent) -> Vec<f32> {
    let (mut data, mut len) = (null(), 0);
    // SAFETY: a live latent; the data is copied before it is freed.
    unsafe {
        assert_ok(mirage_latent_data(l, &mut data, &mut len));
        std::slice::from_raw_parts(data, len).to_vec()
    }
}

#[test]
fn vae_round_trip_matches_the_rust_api() {
    let ctx = Ctx::open();
    // SAFETY: all pointers below are valid for the calls; handles are freed once at the end.
    unsafe {
        let (mut w, mut h, mut c) = (0, 0, 0);
        assert_ok(mirage_context_image_size(ctx.ptr, &mut w, &mut h, &mut c));
        assert_eq!((w, h, c), (28, 28, 1));
        let mut ls = [0u32; 3];
        assert_ok(mirage_context_latent_shape(ctx.ptr, ls.as_mut_ptr()));
        assert_eq!(ls, [2, 8, 8]);

        // A grey set takes grey images: RGBA input is refused, not silently converted.
        let pixels: Vec<u8> = (0..28 * 28).map(|i| (i * 3 % 256) as u8).collect();
        let mut rgba: Vec<u8> = pixels.iter().flat_map(|&p| [p, p, p, 255]).collect();
        let wrong =
            MirageImage { width: 28, height: 28, stride: 0, format: MIRAGE_PIXEL_RGBA8, data: rgba.as_mut_ptr() };
        let (mut mean, mut logvar) = (null_mut(), null_mut());
        assert_err(
            mirage_vae_encode(ctx.ptr, &wrong, 1, &mut mean, &mut logvar),
            MIRAGE_ERR_INVALID_ARGUMENT,
            "expects 28x28x1",
        );

        let mut grey = pixels.clone();
        let image =
            MirageImage { width: 28, height: 28, stride: 0, format: MIRAGE_PIXEL_GRAY8, data: grey.as_mut_ptr() };
        assert_ok(mirage_vae_encode(ctx.ptr, &image, 1, &mut mean, &mut logvar));

        // The same through the Rust API: identical numbers.
        let (_d, dir) = tiny_set();
        let rust = mirage::model_set::ModelSet::open(&dir).unwrap();
        let img = mirage::image::Image::new(28, 28, 1, pixels.clone()).unwrap();
        let x = mirage::image::to_model(&[img], &rust.manifest().image).unwrap();
        let (rm, rlv) = rust.encode(&x, 1).unwrap();
        assert_eq!(latent_vec(mean), rm);
        assert_eq!(latent_vec(logvar), rlv);

        let mut z = null_mut();
        assert_ok(mirage_vae_sample(ctx.ptr, mean, logvar, 11, &mut z));
        assert_eq!(latent_vec(z), mirage::latent::sample_latent(&rm, &rlv, 11).unwrap());
        let mut prior = null_mut();
        assert_ok(mirage_vae_sample_prior(ctx.ptr, 2, 5, &mut prior));
        assert_eq!(latent_vec(prior), mirage::latent::prior_latents(128, 2, 5).unwrap());

        let mut batch = null_mut();
        assert_ok(mirage_vae_decode(ctx.ptr, z, MIRAGE_PIXEL_GRAY8, &mut batch));
        let mut out = std::mem::zeroed::<MirageImage>();
        assert_ok(mirage_image_batch_get(batch, 0, &mut out));
        let decoded = std::slice::from_raw_parts(out.data, 28 * 28).to_vec();
        let y = rust.decode(&latent_vec(z), 1).unwrap();
        let expected = mirage::image::from_model(&y, 1, &rust.manifest().image).unwrap();
        assert_eq!(decoded, expected[0].data);

        // Into a host RGBA buffer with a stride: pixels converted, the gap between rows untouched.
        let stride = 28 * 4 + 16;
        let mut host = vec![7u8; stride * 28];
        let target = MirageImage {
            width: 28,
            height: 28,
            stride: stride as u32,
            format: MIRAGE_PIXEL_RGBA8,
            data: host.as_mut_ptr(),
        };
        assert_ok(mirage_vae_decode_into(ctx.ptr, z, &target, 1));
        for y in 0..28 {
            for x in 0..28 {
                let px = &host[y * stride + 4 * x..y * stride + 4 * x + 4];
                let g = decoded[y * 28 + x];
                assert_eq!(px, [g, g, g, 255]);
            }
            assert!(host[y * stride + 112..(y + 1) * stride].iter().all(|&b| b == 7));
        }

        mirage_image_batch_free(batch);
        for l in [mean, logvar, z, prior] {
            mirage_latent_free(l);
        }
    }
}

/// good/, corrupt/ (encoder bytes flipped: sha256 mismatch) and future/ (format_version 2) under one root:
/// the fixture tests/c/test_api.c expects.
fn c_fixture() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for name in ["good", "corrupt", "future"] {
        write_random_set(&root.path().join(name), &VaeArch::tiny(), 1234).unwrap();
    }
    let enc = root.path().join("corrupt").join(ENCODER_FILE);
    let mut bytes = std::fs::read(&enc).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0xFF;
    }
    std::fs::write(&enc, bytes).unwrap();
    let manifest = root.path().join("future/manifest.json");
    let mut json = crate::util::read_json(&manifest);
    json["format_version"] = 2.into();
    std::fs::write(&manifest, json.to_string()).unwrap();
    root
}

fn build_test_api(dir: &Path) -> PathBuf {
    let exe = dir.join("test_api");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/test_api.c");
    compile(Lang::C, &[src], &exe, &[]);
    exe
}

#[test]
fn c_program_passes() {
    let fixture = c_fixture();
    let exe = build_test_api(fixture.path());
    // TEST_API_VERBOSE=1 (inherited) makes the program print every error message it checks.
    let (ok, text) = run(&exe, &[fixture.path().as_os_str()]);
    assert!(ok, "tests/c/test_api.c failed:\n{text}");
    assert!(text.contains(" 0 failed"), "{text}");
    eprintln!("{text}");
}

/// Whether the valgrind tests run: when valgrind is installed; MIRAGE_VALGRIND=0 skips them,
/// MIRAGE_VALGRIND=1 requires valgrind.
pub(crate) fn valgrind_wanted() -> bool {
    let installed = std::process::Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success());
    match (std::env::var("MIRAGE_VALGRIND").ok().as_deref(), installed) {
        (Some("0"), _) => eprintln!("skipped: MIRAGE_VALGRIND=0"),
        (Some("1"), false) => panic!("MIRAGE_VALGRIND=1 but valgrind is not installed"),
        (_, false) => eprintln!("skipped: valgrind is not installed"),
        _ => return true,
    }
    false
}

/// Runs `exe args` under valgrind memcheck: no invalid read or write, no uninitialised use, and no block
/// definitely lost, anywhere (tests/c/valgrind.supp silences two reports inside ld.so and ONNX Runtime).
/// Returns what the program and valgrind printed.
pub(crate) fn assert_valgrind_clean(exe: &Path, args: &[&OsStr]) -> String {
    assert_valgrind_clean_env(exe, args, &[])
}

/// [`assert_valgrind_clean`] with these environment variables set for the program.
pub(crate) fn assert_valgrind_clean_env(exe: &Path, args: &[&OsStr], envs: &[(&str, &str)]) -> String {
    let supp = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/valgrind.supp");
    let supp = format!("--suppressions={}", supp.display());
    let mut all = vec![
        OsStr::new("--error-exitcode=99"),
        OsStr::new("--leak-check=full"),
        OsStr::new("--errors-for-leak-kinds=definite"),
        OsStr::new("--show-leak-kinds=definite"),
        OsStr::new(&supp),
        exe.as_os_str(),
    ];
    all.extend_from_slice(args);
    let (ok, text) = run_env(Path::new("valgrind"), &all, envs);
    assert!(ok, "valgrind reported errors:\n{text}");
    text
}

/// The C program under valgrind (see `assert_valgrind_clean`). About 25 s. Runs when valgrind is installed;
/// MIRAGE_VALGRIND=0 skips it, MIRAGE_VALGRIND=1 requires it.
#[test]
fn c_program_under_valgrind() {
    if !valgrind_wanted() {
        return;
    }
    let fixture = c_fixture();
    let exe = build_test_api(fixture.path());
    assert_valgrind_clean(&exe, &[fixture.path().as_os_str()]);
}

/// A context on a fresh tiny VAE + U-Net set.
fn diffusion_ctx() -> Ctx {
    let (dir, set) = tiny_diffusion_set();
    let path = std::ffi::CString::new(set.to_str().unwrap()).unwrap();
    let mut ptr = null_mut();
    // SAFETY: valid pointers.
    assert_ok(unsafe { mirage_context_new(path.as_ptr(), null(), &mut ptr) });
    Ctx { ptr, _dir: dir }
}

fn diffusion_params(steps: u32, seed: u64) -> MirageDiffusionParams {
    let mut p = std::mem::MaybeUninit::<MirageDiffusionParams>::uninit();
    // SAFETY: a writable struct of the size passed.
    unsafe {
        assert_ok(mirage_diffusion_params_init(p.as_mut_ptr(), size_of::<MirageDiffusionParams>()));
        let mut p = p.assume_init();
        p.steps = steps;
        p.seed = seed;
        p.format = MIRAGE_PIXEL_GRAY8;
        p
    }
}

fn batch_pixels(b: *const MirageImageBatch) -> Vec<Vec<u8>> {
    // SAFETY: a live batch; pixels are copied before it is freed.
    unsafe {
        (0..mirage_image_batch_count(b))
            .map(|i| {
                let mut img = std::mem::zeroed::<MirageImage>();
                assert_ok(mirage_image_batch_get(b, i, &mut img));
                std::slice::from_raw_parts(img.data, (img.stride * img.height) as usize).to_vec()
            })
            .collect()
    }
}

unsafe extern "C" fn count_steps(_step: u32, _total: u32, user_data: *mut std::ffi::c_void) -> bool {
    // SAFETY: the tests pass an AtomicUsize.
    let n = unsafe { &*user_data.cast::<std::sync::atomic::AtomicUsize>() };
    n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    true
}

#[test]
fn generate_matches_the_rust_pipeline() {
    let ctx = diffusion_ctx();
    let p = diffusion_params(5, 17);
    let mut batch = null_mut();
    // SAFETY: valid pointers; the batch is freed once.
    unsafe {
        assert_ok(mirage_generate(ctx.ptr, &p, &mut batch));
        let got = batch_pixels(batch);
        mirage_image_batch_free(batch);

        let (_d, dir) = tiny_diffusion_set();
        let set = mirage::model_set::ModelSet::open(&dir).unwrap();
        let params = mirage::pipeline::DiffusionParams { steps: 5, seed: 17, ..Default::default() };
        let y = mirage::pipeline::generate(&set, &params, &mut Default::default()).unwrap();
        let want = mirage::image::from_model(&y, 1, &set.manifest().image).unwrap();
        assert_eq!(got, vec![want[0].data.clone()]);
    }
}

#[test]
fn denoise_matches_the_rust_pipeline_and_checks_strength() {
    let ctx = diffusion_ctx();
    let (_d, dir) = tiny_diffusion_set();
    let set = mirage::model_set::ModelSet::open(&dir).unwrap();
    let spec = set.manifest().image.clone();
    let pixels: Vec<u8> = (0..spec.width * spec.height).map(|i| (i * 7 % 256) as u8).collect();
    let image = MirageImage {
        width: spec.width,
        height: spec.height,
        stride: 0,
        format: MIRAGE_PIXEL_GRAY8,
        data: pixels.as_ptr().cast_mut(),
    };
    let mut p = diffusion_params(10, 4);
    p.strength = 0.2;
    p.format = MIRAGE_PIXEL_GRAY8;
    let mut batch = null_mut();
    // SAFETY: valid pointers; the batch is freed once; `pixels` outlives the calls.
    unsafe {
        assert_ok(mirage_denoise(ctx.ptr, &image, 1, &p, &mut batch));
        let got = batch_pixels(batch);
        mirage_image_batch_free(batch);
        let host = mirage::image::Image::new(spec.width, spec.height, 1, pixels.clone()).unwrap();
        let x = mirage::image::to_model(&[host], &spec).unwrap();
        let params = mirage::pipeline::DiffusionParams { steps: 10, seed: 4, strength: 0.2, ..Default::default() };
        let y = mirage::pipeline::denoise(&set, &x, 1, &params, None, &mut Default::default()).unwrap();
        let want = mirage::image::from_model(&y, 1, &spec).unwrap();
        assert_eq!(got, vec![want[0].data.clone()]);

        p.strength = 0.0;
        let mut untouched = null_mut();
        assert_eq!(mirage_denoise(ctx.ptr, &image, 1, &p, &mut untouched), MIRAGE_ERR_INVALID_ARGUMENT);
        assert!(untouched.is_null());
    }
}

#[test]
fn cancel_reaches_running_generations_only_and_free_waits_for_them() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let ctx = diffusion_ctx();
    // SAFETY: valid pointers; the context outlives the threads below (joined before it is dropped), except in
    // the free test, where the free is what is tested.
    unsafe {
        // Idle cancel: OK, and the next generation runs to its end.
        assert_ok(mirage_context_cancel(ctx.ptr));
        let steps = AtomicUsize::new(0);
        let mut p = diffusion_params(3, 1);
        p.progress = Some(count_steps);
        p.user_data = (&steps as *const AtomicUsize).cast_mut().cast();
        let mut batch = null_mut();
        assert_ok(mirage_generate(ctx.ptr, &p, &mut batch));
        assert_eq!(steps.load(Ordering::SeqCst), 3);
        mirage_image_batch_free(batch);

        // A long generation on another thread, cancelled from this one.
        let steps = Arc::new(AtomicUsize::new(0));
        let run = |ctx: usize, steps: Arc<AtomicUsize>| {
            std::thread::spawn(move || {
                let mut p = diffusion_params(1000, 2);
                p.progress = Some(count_steps);
                p.user_data = Arc::as_ptr(&steps).cast_mut().cast();
                let mut batch = null_mut();
                let status = mirage_generate(ctx as *const MirageContext, &p, &mut batch);
                (status, batch.is_null())
            })
        };
        let t = run(ctx.ptr as usize, steps.clone());
        while steps.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        assert_ok(mirage_context_cancel(ctx.ptr));
        assert_eq!(t.join().unwrap(), (MIRAGE_ERR_CANCELLED, true));
        assert!(steps.load(Ordering::SeqCst) < 1000);

        // Free while one runs: the generation is cancelled, free returns after it, no step after that.
        let other = diffusion_ctx();
        let steps = Arc::new(AtomicUsize::new(0));
        let t = run(other.ptr as usize, steps.clone());
        while steps.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        mirage_context_free(other.ptr);
        let mut other = other;
        other.ptr = null_mut(); // freed above: the drop frees NULL (nothing) and removes the set's folder
        let at_free = steps.load(Ordering::SeqCst);
        assert_eq!(t.join().unwrap(), (MIRAGE_ERR_CANCELLED, true));
        assert_eq!(steps.load(Ordering::SeqCst), at_free, "a step ran after mirage_context_free returned");
    }
}

#[cfg(feature = "test-panic")]
#[test]
fn a_panic_inside_the_generation_loop_is_caught_and_forgotten() {
    let ctx = diffusion_ctx();
    // SAFETY: valid pointers.
    unsafe {
        assert_err(mirage_debug_panic_in_generation(ctx.ptr), MIRAGE_ERR_PANIC, "generation loop at step 2");
        // The context forgot the generation: the next one runs, and free (at drop) does not wait.
        let mut batch = null_mut();
        assert_ok(mirage_generate(ctx.ptr, &diffusion_params(2, 0), &mut batch));
        mirage_image_batch_free(batch);
    }
}

/// tests/c/test_diffusion.c built in a temporary folder, with its two fixture sets (diffusion, VAE only).
fn build_test_diffusion() -> (Vec<tempfile::TempDir>, PathBuf, [PathBuf; 2]) {
    let (d1, diffusion) = tiny_diffusion_set();
    let (d2, vae_only) = tiny_set();
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("test_diffusion");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/test_diffusion.c");
    compile(Lang::C, &[src], &exe, &[]);
    (vec![d1, d2, dir], exe, [diffusion, vae_only])
}

#[test]
fn c_diffusion_program_passes() {
    let (_dirs, exe, [diffusion, vae_only]) = build_test_diffusion();
    let (ok, text) = run(&exe, &[diffusion.as_os_str(), vae_only.as_os_str()]);
    assert!(ok, "tests/c/test_diffusion.c failed:\n{text}");
    assert!(text.contains(" 0 failed"), "{text}");
    eprintln!("{text}");
}

/// The diffusion program under valgrind (see `assert_valgrind_clean`): callbacks, threads that cancel, and a
/// context freed while a generation runs, with no invalid access and no leak. About 30 s. Gated as
/// `c_program_under_valgrind`: runs when valgrind is installed; MIRAGE_VALGRIND=0 skips it, =1 requires it.
#[test]
fn c_diffusion_program_under_valgrind() {
    if !valgrind_wanted() {
        return;
    }
    let (_dirs, exe, [diffusion, vae_only]) = build_test_diffusion();
    assert_valgrind_clean(&exe, &[diffusion.as_os_str(), vae_only.as_os_str()]);
}
