//! A host can trust us: model sets damaged every way we could think of, absurd settings and hostile files,
//! all through the C API in this process. Every case must come back, within a deadline, with a documented
//! status and a short message (the process itself surviving is the other half of the check); a context
//! that opens anyway must still work. Freed and foreign handles are refused; a stress run of threads
//! generating, cancelling and freeing ends with flat memory. The case counts are printed
//! (`cargo test --features train,test-panic --test tests hostile -- --nocapture`).

use std::ffi::{c_char, CStr, CString};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use mirage::capi::*;
use serde_json::Value;

use crate::util::{tiny_diffusion_set, tiny_text_set};

#[path = "../fuzz/harness/mod.rs"]
mod harness;

/// The longest message a failure may leave: the context of the failure, not an echo of the input.
const MAX_MESSAGE: usize = 700;

/// How long one call may take before the suite calls it a hang.
const DEADLINE: Duration = Duration::from_secs(60);

pub fn last_error() -> String {
    // SAFETY: a NULL buffer with len 0 is allowed; the second call gets a buffer of the reported size.
    let n = unsafe { mirage_last_error(null_mut(), 0) };
    let mut buf = vec![0 as c_char; n + 1];
    // SAFETY: `buf` holds n + 1 bytes.
    unsafe { mirage_last_error(buf.as_mut_ptr(), buf.len()) };
    // SAFETY: mirage_last_error NUL-terminates.
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

/// Runs `f` on its own thread and fails the test when it does not return within [`DEADLINE`] (a hang).
pub(crate) fn within_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(DEADLINE).unwrap_or_else(|e| match e {
        mpsc::RecvTimeoutError::Timeout => panic!("{what}: no answer within {DEADLINE:?} (a hang)"),
        mpsc::RecvTimeoutError::Disconnected => panic!("{what}: panicked (its message is above)"),
    })
}

/// What opening a damaged set gave: the status and message, and whether a context that opened still worked.
struct Outcome {
    status: MirageStatus,
    message: String,
}

/// Opens `dir` as a context; if that succeeds, runs one generation step, a prior draw and a decode on it
/// (each must succeed or fail with a documented status), then frees it.
fn open_and_use(dir: &Path) -> Outcome {
    let path = CString::new(dir.as_os_str().as_encoded_bytes()).expect("no NUL in the path");
    let what = format!("opening {}", dir.display());
    within_deadline(&what, move || {
        let mut ctx = null_mut();
        // SAFETY: valid pointers.
        let status = unsafe { mirage_context_new(path.as_ptr(), null(), &mut ctx) };
        let message = last_error();
        if status != MIRAGE_OK {
            assert!(ctx.is_null(), "a failed mirage_context_new wrote its out-parameter");
            return Outcome { status, message };
        }
        // SAFETY: a live context; params from their init function.
        unsafe {
            let mut p = std::mem::zeroed::<MirageDiffusionParams>();
            assert_eq!(mirage_diffusion_params_init(&mut p, size_of::<MirageDiffusionParams>()), MIRAGE_OK);
            p.steps = 1;
            let mut out = null_mut();
            let s = mirage_generate(ctx, &p, &mut out);
            assert!(
                [MIRAGE_OK, MIRAGE_ERR_UNSUPPORTED, MIRAGE_ERR_INFERENCE, MIRAGE_ERR_INVALID_ARGUMENT].contains(&s),
                "generate on a damaged set that opened: status {s}: {}",
                last_error()
            );
            mirage_image_batch_free(out);
            let mut z = null_mut();
            let s = mirage_vae_sample_prior(ctx, 2, 1, &mut z);
            assert!([MIRAGE_OK, MIRAGE_ERR_UNSUPPORTED, MIRAGE_ERR_INVALID_ARGUMENT].contains(&s), "{s}");
            if s == MIRAGE_OK {
                let mut images = null_mut();
                let s = mirage_vae_decode(ctx, z, MIRAGE_PIXEL_RGBA8, &mut images);
                assert!([MIRAGE_OK, MIRAGE_ERR_INFERENCE, MIRAGE_ERR_INVALID_ARGUMENT].contains(&s), "{s}");
                mirage_image_batch_free(images);
            }
            mirage_latent_free(z);
            mirage_context_free(ctx);
        }
        Outcome { status, message }
    })
}

/// Every path to a value inside `v` (object keys and array indices), depth first.
fn paths(v: &Value, prefix: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(PathStep::Key(k.clone()));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                prefix.push(PathStep::Index(i));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum PathStep {
    Key(String),
    Index(usize),
}

/// `v` with the value at `path` replaced by `with` (None: removed).
fn edited(v: &Value, path: &[PathStep], with: Option<&Value>) -> Value {
    let mut v = v.clone();
    let (last, parents) = path.split_last().expect("a non-empty path");
    let mut at = &mut v;
    for step in parents {
        at = match step {
            PathStep::Key(k) => &mut at[k.as_str()],
            PathStep::Index(i) => &mut at[*i],
        };
    }
    match (last, with) {
        (PathStep::Key(k), Some(w)) => at[k.as_str()] = w.clone(),
        (PathStep::Index(i), Some(w)) => at[*i] = w.clone(),
        (PathStep::Key(k), None) => {
            at.as_object_mut().expect("object").remove(k);
        }
        (PathStep::Index(i), None) => {
            at.as_array_mut().expect("array").remove(*i);
        }
    }
    v
}

/// The statuses a damaged model set may give.
const SET_STATUSES: [MirageStatus; 5] =
    [MIRAGE_ERR_INVALID_MODEL, MIRAGE_ERR_MODEL_NOT_FOUND, MIRAGE_ERR_IO, MIRAGE_ERR_UNSUPPORTED, MIRAGE_OK];

#[track_caller]
fn check_outcome(case: &str, o: &Outcome) {
    let shown: String = o.message.chars().take(2 * MAX_MESSAGE).collect();
    assert!(SET_STATUSES.contains(&o.status), "{case}: undocumented status {} ({shown})", o.status);
    if o.status != MIRAGE_OK {
        assert!(!o.message.is_empty(), "{case}: a failure without a message");
        assert!(o.message.len() <= MAX_MESSAGE, "{case}: a {}-byte message: {shown}", o.message.len());
    }
}

#[test]
fn every_manifest_field_damaged_every_way() {
    let (_tmp, dir) = tiny_diffusion_set();
    let manifest_path = dir.join("manifest.json");
    let original: Value = serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let mut all = Vec::new();
    paths(&original, &mut Vec::new(), &mut all);
    // "architecture" and "training" are opaque to the runtime: damaging the key itself covers them.
    let opaque = |s: &PathStep| matches!(s, PathStep::Key(k) if k == "architecture" || k == "training");
    all.retain(|p| !p[..p.len() - 1].iter().any(opaque));
    let long = Value::String("x".repeat(100_000));
    let replacements: Vec<Value> = vec![
        Value::Null,
        Value::Bool(true),
        Value::String("garbage".into()),
        Value::String(String::new()),
        serde_json::json!([]),
        serde_json::json!({}),
        serde_json::json!(-1),
        serde_json::json!(0),
        serde_json::json!(4097),
        serde_json::json!(4_294_967_296u64),
        serde_json::json!(1e300),
        serde_json::json!(0.5),
        serde_json::json!([4096, 4096, 4096]),
        long,
    ];
    let (mut cases, mut opened) = (0, 0);
    for path in &all {
        for with in std::iter::once(None).chain(replacements.iter().map(Some)) {
            let damaged = edited(&original, path, with);
            std::fs::write(&manifest_path, serde_json::to_string(&damaged).unwrap()).unwrap();
            let o = open_and_use(&dir);
            check_outcome(
                &format!("{path:?} = {:?}", with.map(|w| w.to_string().chars().take(40).collect::<String>())),
                &o,
            );
            cases += 1;
            opened += usize::from(o.status == MIRAGE_OK);
        }
    }
    // The undamaged manifest still opens (the loop did not poison anything).
    std::fs::write(&manifest_path, serde_json::to_string(&original).unwrap()).unwrap();
    assert_eq!(open_and_use(&dir).status, MIRAGE_OK, "{}", last_error());
    println!(
        "hostile: {cases} damaged manifests ({} fields x {} ways), {opened} opened and worked",
        all.len(),
        replacements.len() + 1
    );
    assert!(cases > 800, "only {cases} cases");
}

#[test]
fn hostile_files_in_place_of_the_manifest_and_the_models() {
    let (_tmp, dir) = tiny_diffusion_set();
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let files: Vec<String> = ["vae.encoder", "vae.decoder", "unet.model"]
        .iter()
        .map(|p| {
            let mut v = &manifest;
            for k in p.split('.') {
                v = &v[k];
            }
            v["file"].as_str().unwrap().to_string()
        })
        .collect();
    let mut cases = 0;
    let mut names: Vec<String> = files.clone();
    names.push("manifest.json".into());
    for name in &names {
        let target = dir.join(name);
        let saved = std::fs::read(&target).unwrap();
        let other = if name == &files[0] { dir.join(&files[1]) } else { dir.join(&files[0]) };
        let other_bytes = std::fs::read(&other).unwrap();
        let mut garbage = vec![0u8; saved.len()];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for b in &mut garbage {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        // Each damage: what to put at `target` (after removing what is there).
        type Damage<'a> = (&'a str, Box<dyn Fn(&Path) + 'a>);
        let damages: Vec<Damage> = vec![
            ("missing", Box::new(|_: &Path| {})),
            ("empty", Box::new(|t: &Path| std::fs::write(t, b"").unwrap())),
            ("truncated", Box::new(|t: &Path| std::fs::write(t, &saved[..saved.len() / 2]).unwrap())),
            ("one byte", Box::new(|t: &Path| std::fs::write(t, &saved[..1]).unwrap())),
            ("random bytes", Box::new(|t: &Path| std::fs::write(t, &garbage).unwrap())),
            ("another model's file", Box::new(|t: &Path| std::fs::write(t, &other_bytes).unwrap())),
            (
                "not UTF-8",
                Box::new(|t: &Path| std::fs::write(t, b"{\"format_version\": 1, \"name\": \"\xff\xfe\"}").unwrap()),
            ),
            ("deeply nested", Box::new(|t: &Path| std::fs::write(t, "[".repeat(100_000)).unwrap())),
            ("a directory", Box::new(|t: &Path| std::fs::create_dir(t).unwrap())),
            ("a FIFO", Box::new(|t: &Path| mkfifo(t))),
            ("a symlink loop", Box::new(|t: &Path| symlink(t, t).unwrap())),
            ("a symlink to /dev/zero", Box::new(|t: &Path| symlink("/dev/zero", t).unwrap())),
            ("a dangling symlink", Box::new(|t: &Path| symlink("/nonexistent/mirage/file", t).unwrap())),
            ("a 3 GiB sparse file", Box::new(|t: &Path| std::fs::File::create(t).unwrap().set_len(3 << 30).unwrap())),
            ("a 2 MiB file", Box::new(|t: &Path| std::fs::write(t, vec![b' '; 2 << 20]).unwrap())),
        ];
        for (what, make) in &damages {
            remove(&target);
            make(&target);
            let o = open_and_use(&dir);
            check_outcome(&format!("{name} {what}"), &o);
            assert_ne!(o.status, MIRAGE_OK, "{name} {what}: opened");
            cases += 1;
            // The same damage with the manifest's sha256 updated to match (so that the file itself is judged,
            // not its hash) for the model files whose damage is readable bytes.
            if name != "manifest.json" && std::fs::metadata(&target).is_ok_and(|m| m.is_file() && m.len() < 1 << 30) {
                let bytes = std::fs::read(&target).unwrap();
                let fixed = rehash(&manifest, name, &bytes);
                std::fs::write(dir.join("manifest.json"), fixed.to_string()).unwrap();
                let o = open_and_use(&dir);
                check_outcome(&format!("{name} {what} (sha256 matching)"), &o);
                assert_ne!(o.status, MIRAGE_OK, "{name} {what} (sha256 matching): opened");
                std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
                cases += 1;
            }
        }
        remove(&target);
        std::fs::write(&target, &saved).unwrap();
        assert_eq!(open_and_use(&dir).status, MIRAGE_OK, "restored {name}");
    }
    // The set directory itself: missing, a file, a FIFO, a symlink loop, a 5 000-byte path.
    let parent = dir.parent().unwrap().to_path_buf();
    for (what, path) in [
        ("missing", parent.join("nope")),
        ("a file", dir.join("manifest.json")),
        ("a FIFO", {
            let f = parent.join("fifo-dir");
            mkfifo(&f);
            f
        }),
        ("a symlink loop", {
            let l = parent.join("loop-dir");
            symlink(&l, &l).unwrap();
            l
        }),
        ("a 5000-byte path", PathBuf::from(format!("/{}", "d/".repeat(2500)))),
    ] {
        let o = open_and_use(&path);
        check_outcome(&format!("the set directory is {what}"), &o);
        assert_ne!(o.status, MIRAGE_OK);
        cases += 1;
    }
    println!("hostile: {cases} hostile files");
}

fn remove(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).unwrap(),
        Ok(_) => std::fs::remove_file(p).unwrap(),
        Err(_) => {}
    }
}

fn mkfifo(p: &Path) {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", p.display());
}

/// The manifest with the sha256 of the model file `name` set to that of `bytes`.
fn rehash(manifest: &Value, name: &str, bytes: &[u8]) -> Value {
    let mut m = manifest.clone();
    let sha = mirage::manifest::sha256_hex(bytes);
    for (part, file) in [("vae", "encoder"), ("vae", "decoder"), ("unet", "model")] {
        if let Some(v) = m.get_mut(part).and_then(|p| p.get_mut(file)).filter(|v| v["file"] == name) {
            v["sha256"] = Value::String(sha.clone());
        }
    }
    m
}

/// A model file whose names match the manifest but whose tensors do not (another latent size, with its
/// sha256 in the manifest) is refused when the set opens, not at its first run.
#[test]
fn a_model_of_other_shapes_is_refused_at_load() {
    let (_tmp, dir) = crate::util::tiny_set();
    let other = tempfile::tempdir().unwrap();
    let arch = mirage::export::vae::VaeArch { latent_channels: 3, ..mirage::export::vae::VaeArch::tiny() };
    mirage::export::vae::write_random_set(other.path(), &arch, 5).unwrap();
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let file = manifest["vae"]["decoder"]["file"].as_str().unwrap().to_string();
    let bytes = std::fs::read(other.path().join(&file)).unwrap();
    std::fs::write(dir.join(&file), &bytes).unwrap();
    std::fs::write(dir.join("manifest.json"), rehash(&manifest, &file, &bytes).to_string()).unwrap();
    let o = open_and_use(&dir);
    assert_eq!(o.status, MIRAGE_ERR_INVALID_MODEL, "{}", o.message);
    assert!(o.message.contains("declares an f32 tensor of shape"), "{}", o.message);
}

/// Every diffusion param at every edge, on a live context: an accepted value works, a refused one is
/// INVALID_ARGUMENT with a message that names the field; the context works afterwards.
#[test]
fn every_diffusion_param_at_its_edges() {
    let (_tmp, dir) = tiny_text_set();
    let path = CString::new(dir.to_str().unwrap()).unwrap();
    let mut ctx = null_mut();
    // SAFETY: valid pointers.
    assert_eq!(unsafe { mirage_context_new(path.as_ptr(), null(), &mut ctx) }, MIRAGE_OK, "{}", last_error());
    let base = {
        // SAFETY: a writable struct of the size passed.
        let mut p = unsafe { std::mem::zeroed::<MirageDiffusionParams>() };
        // SAFETY: as above.
        assert_eq!(unsafe { mirage_diffusion_params_init(&mut p, size_of::<MirageDiffusionParams>()) }, MIRAGE_OK);
        p.steps = 1;
        p
    };
    let long = CString::new("y".repeat(100_000)).unwrap();
    let bad_utf8 = CString::new(vec![0xffu8, 0xfe, b'a']).unwrap();
    let prompt = c"a red apple";
    type Edit = Box<dyn Fn(&mut MirageDiffusionParams)>;
    let f32s = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 1.5, 50.0, 50.5, 1e30];
    let mut cases: Vec<(String, Edit, bool)> = Vec::new();
    for &v in &f32s {
        let ok_eta = v.is_finite() && (0.0..=1.0).contains(&v);
        cases.push((format!("eta {v}"), Box::new(move |p| p.eta = v), ok_eta));
        // mirage_generate ignores strength; img2img is checked below through the same Call.
        cases.push((format!("strength {v} (generate ignores it)"), Box::new(move |p| p.strength = v), true));
        // -1 is MIRAGE_GUIDANCE_DEFAULT, the set's own.
        let ok_guidance = v == MIRAGE_GUIDANCE_DEFAULT || (v.is_finite() && (0.0..=50.0).contains(&v));
        cases.push((
            format!("guidance {v} with a prompt"),
            Box::new(move |p| {
                p.guidance = v;
                p.prompt = prompt.as_ptr();
            }),
            ok_guidance,
        ));
        cases.push((format!("guidance {v} without a prompt (ignored)"), Box::new(move |p| p.guidance = v), true));
    }
    for (v, ok) in [(0u32, false), (1, true), (2, true), (1000, true), (1001, false), (u32::MAX, false)] {
        cases.push((format!("steps {v}"), Box::new(move |p| p.steps = v), ok));
    }
    for (v, ok) in [(0u32, false), (1, true), (3, true), (1025, false), (u32::MAX, false)] {
        cases.push((format!("count {v}"), Box::new(move |p| p.count = v), ok));
    }
    for (v, ok) in [(0u32, false), (1, true), (2, true), (3, true), (4, false), (u32::MAX, false)] {
        cases.push((format!("format {v}"), Box::new(move |p| p.format = v), ok));
    }
    let n = size_of::<MirageDiffusionParams>();
    for (v, ok) in [(0usize, false), (8, false), (n - 1, false), (n, true), (4097, false), (usize::MAX, false)] {
        cases.push((format!("struct_size {v}"), Box::new(move |p| p.struct_size = v), ok));
    }
    let (lp, bp) = (long.as_ptr(), bad_utf8.as_ptr());
    for (name, s, ok) in [
        ("NULL", null(), true),
        ("empty", c"".as_ptr(), true),
        ("ddim", c"ddim".as_ptr(), true),
        ("DPM++2M", c"DPM++2M".as_ptr(), true),
        ("euler", c"euler".as_ptr(), false),
        ("100 KB", lp, false),
        ("not UTF-8", bp, false),
    ] {
        cases.push((format!("sampler {name}"), Box::new(move |p| p.sampler = s), ok));
        let prompt_ok = ok || name == "euler" || name == "100 KB"; // any UTF-8 text is a prompt
        cases.push((format!("prompt {name}"), Box::new(move |p| p.prompt = s), prompt_ok));
        cases.push((format!("negative prompt {name}"), Box::new(move |p| p.negative_prompt = s), prompt_ok));
    }
    let total = cases.len();
    for (what, edit, ok) in cases {
        let mut p = base;
        edit(&mut p);
        let mut out = null_mut();
        // SAFETY: a live context; `p` is a whole params struct of this library's size (struct_size may lie
        // about it, which is what is tested: it is never larger than the struct unless refused by size).
        let s = unsafe { mirage_generate(ctx, &p, &mut out) };
        let msg = last_error();
        if ok {
            assert_eq!(s, MIRAGE_OK, "{what}: {msg}");
        } else {
            assert_eq!(s, MIRAGE_ERR_INVALID_ARGUMENT, "{what}: status {s}: {msg}");
            assert!(out.is_null(), "{what}: out written on failure");
            assert!(msg.len() <= MAX_MESSAGE, "{what}: a {}-byte message", msg.len());
            let field = what.split(' ').next().unwrap();
            let named = match field {
                "negative" => "negative_prompt",
                f => f,
            };
            assert!(msg.contains(named), "{what}: the message does not name {named}: {msg}");
        }
        // SAFETY: a batch of this library, or NULL.
        unsafe { mirage_image_batch_free(out) };
    }
    // img2img's strength through the same checks.
    let mut w = 0u32;
    let (mut h, mut c) = (0u32, 0u32);
    // SAFETY: a live context and writable outs.
    unsafe { mirage_context_image_size(ctx, &mut w, &mut h, &mut c) };
    let pixels = vec![128u8; (w * h * c) as usize];
    let format = [MIRAGE_PIXEL_GRAY8, 0, MIRAGE_PIXEL_RGB8, MIRAGE_PIXEL_RGBA8][c as usize - 1];
    let image = MirageImage { width: w, height: h, stride: 0, format, data: pixels.as_ptr().cast_mut() };
    for &v in &f32s {
        let mut p = base;
        p.strength = v;
        let mut out = null_mut();
        // SAFETY: live context, one valid host image.
        let s = unsafe { mirage_img2img(ctx, &image, 1, &p, &mut out) };
        let ok = v.is_finite() && v > 0.0 && v <= 1.0;
        assert_eq!(s == MIRAGE_OK, ok, "img2img strength {v}: {}", last_error());
        if !ok {
            assert!(last_error().contains("params->strength"), "{}", last_error());
        }
        // SAFETY: a batch of this library, or NULL.
        unsafe { mirage_image_batch_free(out) };
    }
    // SAFETY: the context made above.
    unsafe { mirage_context_free(ctx) };
    println!("hostile: {} parameter cases", total + f32s.len());
}

/// Use after free, double free and foreign pointers: refused with INVALID_ARGUMENT (a double free ignored
/// with a message), never a crash. Not run under valgrind: it reads freed memory on purpose.
#[test]
fn freed_and_foreign_handles_are_refused() {
    // SAFETY: the calls below pass freed and foreign pointers on purpose; the library must refuse them
    // without touching more than the tag (see the header's "Handles" paragraph).
    unsafe {
        let data = [1.0f32; 4];
        let mut latent = null_mut();
        assert_eq!(mirage_latent_new(data.as_ptr(), 4, [1, 1, 2, 2].as_ptr(), &mut latent), MIRAGE_OK);
        let mut shape = [0u32; 4];
        assert_eq!(mirage_latent_shape(latent, shape.as_mut_ptr()), MIRAGE_OK);
        mirage_latent_free(latent);
        assert_eq!(mirage_latent_shape(latent, shape.as_mut_ptr()), MIRAGE_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("not a live MirageLatent"), "{}", last_error());
        mirage_latent_free(latent); // a double free: ignored, with a message
        assert!(last_error().contains("latent is not a live MirageLatent"), "{}", last_error());

        // Something that never was a handle (aligned, readable, garbage).
        let fake = [0x5au64; 16];
        let p = fake.as_ptr() as *const MirageLatent;
        assert_eq!(mirage_latent_shape(p, shape.as_mut_ptr()), MIRAGE_ERR_INVALID_ARGUMENT);
        let b = fake.as_ptr() as *const MirageImageBatch;
        assert_eq!(mirage_image_batch_count(b), 0);
        let c = fake.as_ptr() as *const MirageContext;
        assert_eq!(mirage_context_cancel(c), MIRAGE_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("not a live MirageContext"), "{}", last_error());
        mirage_context_free(c.cast_mut()); // ignored
        assert!(last_error().contains("not a live MirageContext"), "{}", last_error());
        mirage_image_batch_free(b.cast_mut()); // ignored

        let (_tmp, dir) = tiny_diffusion_set();
        let path = CString::new(dir.to_str().unwrap()).unwrap();
        let mut ctx = null_mut();
        assert_eq!(mirage_context_new(path.as_ptr(), null(), &mut ctx), MIRAGE_OK);
        let mut z = null_mut();
        assert_eq!(mirage_vae_sample_prior(ctx, 1, 1, &mut z), MIRAGE_OK);
        let mut batch = null_mut();
        assert_eq!(mirage_vae_decode(ctx, z, MIRAGE_PIXEL_RGBA8, &mut batch), MIRAGE_OK);
        assert_eq!(mirage_image_batch_count(batch), 1);
        mirage_image_batch_free(batch);
        assert_eq!(mirage_image_batch_count(batch), 0);
        let mut img = std::mem::zeroed::<MirageImage>();
        assert_eq!(mirage_image_batch_get(batch, 0, &mut img), MIRAGE_ERR_INVALID_ARGUMENT);
        mirage_image_batch_free(batch);
        // A freed job: polled, waited for, taken, freed again — refused by the tag check.
        let mut p = std::mem::zeroed::<MirageDiffusionParams>();
        mirage_diffusion_params_init(&mut p, size_of::<MirageDiffusionParams>());
        p.steps = 1000;
        let mut job = null_mut();
        assert_eq!(mirage_job_generate(ctx, &p, null(), &mut job), MIRAGE_OK);
        mirage_job_free(job);
        let mut st = 0;
        assert_eq!(mirage_job_poll(job, &mut st, null_mut(), null_mut()), MIRAGE_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("job is not a live MirageJob"), "{}", last_error());
        assert_eq!(mirage_job_wait(job, 0, &mut st), MIRAGE_ERR_INVALID_ARGUMENT);
        assert_eq!(mirage_job_take_images(job, &mut batch), MIRAGE_ERR_INVALID_ARGUMENT);
        mirage_job_free(job); // ignored, with a message
        assert!(last_error().contains("not a live MirageJob"), "{}", last_error());
        assert_eq!(mirage_job_cancel(fake.as_ptr() as *const MirageJob), MIRAGE_ERR_INVALID_ARGUMENT);
        mirage_latent_free(z);
        mirage_context_free(ctx);
        assert_eq!(mirage_vae_sample_prior(ctx, 1, 1, &mut z), MIRAGE_ERR_INVALID_ARGUMENT);
        mirage_context_free(ctx);
        assert!(last_error().contains("ctx is not a live MirageContext"), "{}", last_error());
    }
}

/// The same seed gives the same bits from threads generating at once on one context as from one call alone.
#[test]
fn concurrent_callers_get_the_same_bits() {
    let (_tmp, dir) = tiny_text_set();
    let ctx = open_ctx(&CString::new(dir.to_str().unwrap()).unwrap());
    let pixels = move |seed: u64| -> Vec<u8> {
        // SAFETY: a live context and a whole params struct; the batch is read, then freed.
        unsafe {
            let mut p = std::mem::zeroed::<MirageDiffusionParams>();
            mirage_diffusion_params_init(&mut p, size_of::<MirageDiffusionParams>());
            p.steps = 4;
            p.seed = seed;
            p.prompt = c"a red apple".as_ptr();
            let mut out = null_mut();
            assert_eq!(mirage_generate(ctx as *const MirageContext, &p, &mut out), MIRAGE_OK, "{}", last_error());
            let mut img = std::mem::zeroed::<MirageImage>();
            assert_eq!(mirage_image_batch_get(out, 0, &mut img), MIRAGE_OK);
            let v = std::slice::from_raw_parts(img.data, (img.width * img.height * 4) as usize).to_vec();
            mirage_image_batch_free(out);
            v
        }
    };
    let alone: Vec<Vec<u8>> = (0..4).map(pixels).collect();
    let together: Vec<Vec<u8>> = (0..4u64)
        .map(|seed| std::thread::spawn(move || pixels(seed)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(alone, together, "concurrent generations differ from single ones");
    assert_ne!(alone[0], alone[1], "two seeds gave the same image");
    // SAFETY: no call is running on it.
    unsafe { mirage_context_free(ctx as *mut MirageContext) };
}

/// The process's resident memory and thread count, from /proc.
pub(crate) fn rss_and_threads() -> (usize, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> usize {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (field("VmRSS:") * 1024, field("Threads:"))
}

fn open_ctx(path: &CString) -> usize {
    let mut ctx = null_mut();
    // SAFETY: valid pointers.
    assert_eq!(unsafe { mirage_context_new(path.as_ptr(), null(), &mut ctx) }, MIRAGE_OK, "{}", last_error());
    ctx as usize
}

unsafe extern "C" fn mark_started(_step: u32, _total: u32, user_data: *mut std::ffi::c_void) -> bool {
    // SAFETY: the AtomicBool that `generate_on` passes, alive for the whole call.
    unsafe { &*(user_data as *const AtomicBool) }.store(true, Ordering::SeqCst);
    true
}

/// One 3-step generation of 2 images on `ctx`; `started` is set after its first step.
fn generate_on(ctx: usize, seed: u64, started: &AtomicBool) -> MirageStatus {
    // SAFETY: a whole params struct; `ctx` is live when the call starts (the stress test frees contexts
    // only once their generation has started, which the library then cancels and waits for).
    unsafe {
        let mut p = std::mem::zeroed::<MirageDiffusionParams>();
        mirage_diffusion_params_init(&mut p, size_of::<MirageDiffusionParams>());
        p.steps = 3;
        p.seed = seed;
        p.count = 2;
        p.progress = Some(mark_started);
        p.user_data = started as *const AtomicBool as *mut std::ffi::c_void;
        let mut out = null_mut();
        let s = mirage_generate(ctx as *const MirageContext, &p, &mut out);
        mirage_image_batch_free(out);
        s
    }
}

/// One round of the stress test: 4 threads x `rounds` generations on the shared context while a thread
/// cancels it at random moments, and 2 threads x `rounds / 2` contexts of their own, each freed from
/// another thread while its generation runs. Returns the generations made.
fn stress_round(shared: usize, path: Arc<CString>, rounds: u64) -> usize {
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for t in 0..4u64 {
        let done = done.clone();
        workers.push(std::thread::spawn(move || {
            for i in 0..rounds {
                let s = generate_on(shared, t * 1000 + i, &AtomicBool::new(false));
                assert!(s == MIRAGE_OK || s == MIRAGE_ERR_CANCELLED, "shared context: status {s}: {}", last_error());
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in 0..2u64 {
        let (done, path) = (done.clone(), path.clone());
        workers.push(std::thread::spawn(move || {
            for i in 0..rounds / 2 {
                let ctx = open_ctx(&path);
                let started = Arc::new(AtomicBool::new(false));
                let runner = {
                    let started = started.clone();
                    std::thread::spawn(move || generate_on(ctx, t * 7 + i, &started))
                };
                while !started.load(Ordering::SeqCst) && !runner.is_finished() {
                    std::thread::yield_now();
                }
                // SAFETY: the context made above, whose generation has started (or ended): the library
                // cancels it and waits for it before freeing.
                unsafe { mirage_context_free(ctx as *mut MirageContext) };
                let s = runner.join().unwrap();
                assert!(s == MIRAGE_OK || s == MIRAGE_ERR_CANCELLED, "freed context: status {s}");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let canceller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(3 + k % 7));
                // SAFETY: the shared context lives until the end of the test.
                assert_eq!(unsafe { mirage_context_cancel(shared as *const MirageContext) }, MIRAGE_OK);
                k += 1;
            }
        })
    };
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    canceller.join().unwrap();
    done.load(Ordering::Relaxed)
}

/// Threads generating on one shared context and on their own, a canceller, and contexts freed while their
/// generations run: only OK and CANCELLED come back, nothing deadlocks (each round has a deadline), and
/// resident memory and the thread count are flat after the warm-up round.
#[test]
fn stress_generations_cancels_and_frees() {
    // In a process of its own (this test binary, run for this test alone), so that the resident memory and
    // thread counts are this test's, not those of the tests running beside it.
    if std::env::var_os("MIRAGE_STRESS_CHILD").is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "hostile::stress_generations_cancels_and_frees", "--nocapture", "--test-threads=1"])
            .env("MIRAGE_STRESS_CHILD", "1")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("1 passed"), "the stress process failed:\n{text}");
        // The harness may print "test ... " on the same line before it.
        if let Some(line) = text.lines().find_map(|l| l.find("hostile: stress").map(|i| &l[i..])) {
            println!("{line}");
        }
        return;
    }
    let (_tmp, dir) = tiny_diffusion_set();
    let path = Arc::new(CString::new(dir.to_str().unwrap()).unwrap());
    let shared = open_ctx(&path);
    let (rss0, threads0) = rss_and_threads();
    let p = path.clone();
    let warm = within_deadline("stress warm-up round", move || stress_round(shared, p, 10));
    let (rss1, threads1) = rss_and_threads();
    let p = path.clone();
    let main = within_deadline("stress round", move || stress_round(shared, p, 40));
    let (rss2, threads2) = rss_and_threads();
    // SAFETY: the shared context, no call running on it any more.
    unsafe { mirage_context_free(shared as *mut MirageContext) };
    println!(
        "hostile: stress: {} generations; RSS {:.1} MB at start, {:.1} MB after the warm-up ({warm}), {:.1} MB \
         after {main} more; threads {threads0} / {threads1} / {threads2}",
        warm + main,
        rss0 as f64 / 1e6,
        rss1 as f64 / 1e6,
        rss2 as f64 / 1e6
    );
    assert!(warm + main >= 250, "{} generations", warm + main);
    // Flat after warm-up: 4x more work may not grow resident memory by more than 32 MB.
    // Under AddressSanitizer (`make sanitize` sets MIRAGE_SANITIZER) freed memory sits in its quarantine, so
    // resident memory grows by design; LeakSanitizer checks for leaks at exit instead.
    if std::env::var_os("MIRAGE_SANITIZER").is_none() {
        assert!(rss2 <= rss1 + (32 << 20), "RSS grew from {rss1} to {rss2} bytes");
    }
    assert!(threads2 <= threads1 + 2, "threads grew from {threads1} to {threads2}");
}

/// Every saved fuzz input, seeds (`fuzz/corpus/<target>/`) and inputs that once failed a target
/// (`fuzz/regressions/<target>/`), through the very code the target runs (fuzz/harness/, included below):
/// the normal test command replays them with no fuzz build. Each target must have seeds.
#[test]
fn fuzz_corpora_and_regressions_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let _ = harness::tokenize::DIR.set(crate::util::text_encoder_dir());
    let mut counts = Vec::new();
    for (target, run) in harness::TARGETS {
        let mut replayed = 0;
        for dir in [root.join("corpus").join(target), root.join("regressions").join(target)] {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries {
                let path = entry.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                let what = path.display().to_string();
                within_deadline(&what, move || run(&bytes));
                replayed += 1;
            }
        }
        assert!(replayed >= 3, "the seeds of fuzz target {target} are missing under {}", root.display());
        counts.push(format!("{target} {replayed}"));
    }
    let _ = std::fs::remove_dir_all(harness::common::scratch_root());
    println!("fuzz replay: {}", counts.join(", "));
}
