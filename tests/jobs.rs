//! Jobs (src/jobs.rs): a diffusion call advanced in whole steps on a budget while other threads poll,
//! preview, cancel, wait and take; the images are the blocking call's.

use std::sync::Arc;
use std::time::Duration;

use mirage::jobs::{Job, JobState, JobStatus};
use mirage::model_set::ModelSet;
use mirage::pipeline::{self, DiffusionParams, Hooks};
use mirage::Error;

use crate::util::tiny_diffusion_set;

fn params(steps: usize, seed: u64, count: usize) -> DiffusionParams {
    DiffusionParams { steps, seed, count, ..Default::default() }
}

fn set() -> (tempfile::TempDir, Arc<ModelSet>) {
    let (tmp, dir) = tiny_diffusion_set();
    (tmp, Arc::new(ModelSet::open(&dir).unwrap()))
}

fn job(set: &Arc<ModelSet>, p: &DiffusionParams, previews: bool) -> Job {
    Job::new(set.clone(), pipeline::plan_generate(set, p, None).unwrap(), previews)
}

#[test]
fn a_job_stepped_on_a_budget_gives_the_blocking_images_once() {
    let (_tmp, set) = set();
    let p = params(7, 3, 2);
    let blocking = pipeline::generate(&set, &p, &mut Hooks::default()).unwrap();
    let j = job(&set, &p, false);
    assert_eq!(j.status(), JobStatus { state: JobState::Queued, steps_done: 0, steps: 7 });
    let early = j.take().unwrap_err().to_string();
    assert!(early.contains("has not ended (0 of 7 steps done)"), "{early}");
    // Frame by frame: 2 steps, then a budget so small that only the one step every call makes runs.
    assert_eq!(j.advance(2, None).unwrap(), 2);
    assert_eq!(j.status(), JobStatus { state: JobState::Running, steps_done: 2, steps: 7 });
    assert_eq!(j.advance(usize::MAX, Some(Duration::from_nanos(1))).unwrap(), 1);
    assert_eq!(j.status().steps_done, 3);
    assert_eq!(j.advance(0, None).unwrap(), 0, "max_steps 0 runs nothing");
    // The rest; the call that runs the last step also finishes the job.
    assert_eq!(j.advance(usize::MAX, Some(Duration::from_secs(60))).unwrap(), 4);
    assert_eq!(j.status(), JobStatus { state: JobState::Done, steps_done: 7, steps: 7 });
    assert_eq!(j.advance(5, None).unwrap(), 0, "an ended job does not run");
    assert!(j.wait(Some(Duration::ZERO)));
    assert_eq!(j.take_images().unwrap(), blocking);
    let again = j.take().unwrap_err().to_string();
    assert!(again.contains("already taken"), "{again}");
}

#[test]
fn cancel_ends_a_queued_job_at_once_and_a_running_one_within_a_step() {
    let (_tmp, set) = set();
    let queued = job(&set, &params(5, 1, 1), false);
    queued.cancel();
    assert_eq!(queued.status().state, JobState::Cancelled);
    assert!(matches!(queued.take(), Err(Error::Cancelled)));
    assert_eq!(queued.advance(3, None).unwrap(), 0);

    // A thread steps a long job with no limit; this one cancels it once it is under way.
    let j = job(&set, &params(1000, 1, 1), false);
    let worker = {
        let j = j.clone();
        std::thread::spawn(move || j.advance(usize::MAX, None).unwrap())
    };
    while j.status().steps_done < 2 {
        std::thread::yield_now();
    }
    assert!(!j.wait(Some(Duration::from_millis(1))), "still running");
    j.cancel();
    assert!(j.wait(Some(Duration::from_secs(60))), "the cancel ends it");
    let ran = worker.join().unwrap();
    let s = j.status();
    assert_eq!(s.state, JobState::Cancelled);
    assert!(ran < 1000 && s.steps_done <= ran + 1, "{ran} steps ran, status {s:?}");
    assert!(matches!(j.take(), Err(Error::Cancelled)));
}

#[test]
fn one_thread_advances_a_job_at_a_time_and_previews_follow_the_steps() {
    let (_tmp, set) = set();
    let j = job(&set, &params(200, 2, 3), true);
    assert!(j.preview().is_none());
    let worker = {
        let j = j.clone();
        std::thread::spawn(move || j.advance(usize::MAX, None).unwrap())
    };
    while j.status().steps_done == 0 {
        std::thread::yield_now();
    }
    // The worker holds the job for its 200 steps: a second thread's advance is refused (or, if the job
    // ended meanwhile, runs nothing).
    if j.status().state == JobState::Running {
        match j.advance(1, None) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("another thread"), "{m}"),
            Ok(0) => assert!(j.status().state.is_ended(), "0 steps only for a job that ended meanwhile"),
            other => panic!("a second advance while one runs: {other:?}"),
        }
    }
    assert_eq!(worker.join().unwrap(), 200);
    let p = j.preview().expect("a preview after the steps");
    assert_eq!(p.step, 200);
    assert_eq!(p.images.len(), 3 * set.image_len());
    assert_eq!(j.take_images().unwrap().len(), 3 * set.image_len());
    // Without previews asked for, none is made.
    let plain = job(&set, &params(2, 2, 1), false);
    plain.advance(1, None).unwrap();
    assert!(plain.preview().is_none());
}

// ---- Through the C API: workers, the queue bound, host buffers, noise, tileable output, packs. ----

mod c_api {
    use std::ffi::CString;
    use std::ptr::{null, null_mut};
    use std::time::{Duration, Instant};

    use mirage::capi::*;

    use crate::hostile::last_error;
    use crate::util::tiny_diffusion_set;

    fn ok(s: MirageStatus) {
        assert_eq!(s, MIRAGE_OK, "{}", last_error());
    }

    fn err(s: MirageStatus, want: MirageStatus, needle: &str) {
        let msg = last_error();
        assert_eq!(s, want, "{msg}");
        assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
    }

    struct Ctx(*mut MirageContext);
    impl Drop for Ctx {
        fn drop(&mut self) {
            // SAFETY: made by mirage_context_new, freed once.
            unsafe { mirage_context_free(self.0) }
        }
    }

    fn context(dir: &std::path::Path, workers: u32, queue: u32) -> Ctx {
        let path = CString::new(dir.to_str().unwrap()).unwrap();
        // SAFETY: zeroed is valid for the struct; init fills it; valid pointers.
        unsafe {
            let mut p: MirageContextParams = std::mem::zeroed();
            ok(mirage_context_params_init(&mut p, size_of::<MirageContextParams>()));
            p.workers = workers;
            p.max_queued_jobs = queue;
            let mut ctx = null_mut();
            ok(mirage_context_new(path.as_ptr(), &p, &mut ctx));
            Ctx(ctx)
        }
    }

    fn params(steps: u32, seed: u64) -> MirageDiffusionParams {
        // SAFETY: zeroed is valid; init fills it.
        unsafe {
            let mut p: MirageDiffusionParams = std::mem::zeroed();
            ok(mirage_diffusion_params_init(&mut p, size_of::<MirageDiffusionParams>()));
            p.steps = steps;
            p.seed = seed;
            p
        }
    }

    fn job_params(manual: bool) -> MirageJobParams {
        // SAFETY: zeroed is valid; init fills it.
        unsafe {
            let mut p: MirageJobParams = std::mem::zeroed();
            ok(mirage_job_params_init(&mut p, size_of::<MirageJobParams>()));
            p.mode = if manual { MIRAGE_JOB_MANUAL } else { MIRAGE_JOB_WORKERS };
            p
        }
    }

    struct Job(*mut MirageJob);
    impl Drop for Job {
        fn drop(&mut self) {
            // SAFETY: made by a submit function, freed once.
            unsafe { mirage_job_free(self.0) }
        }
    }

    fn submit(ctx: &Ctx, p: &MirageDiffusionParams, manual: bool) -> Result<Job, MirageStatus> {
        let mut j = null_mut();
        // SAFETY: valid pointers.
        match unsafe { mirage_job_generate(ctx.0, p, &job_params(manual), &mut j) } {
            MIRAGE_OK => Ok(Job(j)),
            s => Err(s),
        }
    }

    fn poll(j: &Job) -> (MirageJobState, u32, u32) {
        let (mut st, mut step, mut total) = (0, 0, 0);
        // SAFETY: a live job.
        ok(unsafe { mirage_job_poll(j.0, &mut st, &mut step, &mut total) });
        (st, step, total)
    }

    fn wait(j: &Job, secs: u32) -> MirageJobState {
        let mut st = 0;
        // SAFETY: a live job.
        ok(unsafe { mirage_job_wait(j.0, secs * 1000, &mut st) });
        st
    }

    /// The pixels of every image of a batch (packed), then the batch freed.
    fn take_batch(b: *mut MirageImageBatch) -> Vec<Vec<u8>> {
        // SAFETY: a live batch, freed once here.
        unsafe {
            let v = (0..mirage_image_batch_count(b))
                .map(|i| {
                    let mut img: MirageImage = std::mem::zeroed();
                    ok(mirage_image_batch_get(b, i, &mut img));
                    std::slice::from_raw_parts(img.data, (img.stride * img.height) as usize).to_vec()
                })
                .collect();
            mirage_image_batch_free(b);
            v
        }
    }

    fn blocking(ctx: &Ctx, p: &MirageDiffusionParams) -> Vec<Vec<u8>> {
        let mut b = null_mut();
        // SAFETY: valid pointers.
        ok(unsafe { mirage_generate(ctx.0, p, &mut b) });
        take_batch(b)
    }

    fn take_images(j: &Job) -> Result<Vec<Vec<u8>>, MirageStatus> {
        let mut b = null_mut();
        // SAFETY: a live job.
        match unsafe { mirage_job_take_images(j.0, &mut b) } {
            MIRAGE_OK => Ok(take_batch(b)),
            s => Err(s),
        }
    }

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(120), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Jobs on the workers give the blocking call's bytes; a full queue says busy and keeps what it holds;
    /// a context cancel ends every job of its workers; a freed running job does not block.
    #[test]
    fn worker_jobs_match_blocking_calls_and_a_full_queue_is_busy() {
        let (_tmp, dir) = tiny_diffusion_set();
        let ctx = context(&dir, 1, 2);
        let p = params(6, 41);
        let j = submit(&ctx, &p, false).unwrap();
        assert_eq!(wait(&j, 120), MIRAGE_JOB_DONE);
        assert_eq!(poll(&j), (MIRAGE_JOB_DONE, 6, 6));
        assert_eq!(take_images(&j).unwrap(), blocking(&ctx, &p), "a worker job gives the blocking call's bytes");
        err(take_images(&j).unwrap_err(), MIRAGE_ERR_INVALID_ARGUMENT, "already taken");

        // One worker busy with a long job, two queued behind it, a fourth refused.
        let long = submit(&ctx, &params(1000, 1), false).unwrap();
        wait_until("the long job to start", || poll(&long).0 == MIRAGE_JOB_RUNNING);
        let queued: Vec<Job> = (0..2).map(|k| submit(&ctx, &params(1000, k), false).unwrap()).collect();
        assert_eq!(poll(&queued[1]).0, MIRAGE_JOB_QUEUED);
        let s = submit(&ctx, &params(3, 9), false).map(|_| ()).unwrap_err();
        err(s, MIRAGE_ERR_BUSY, "2 jobs that have not started");
        // SAFETY: the context is live.
        ok(unsafe { mirage_context_cancel(ctx.0) });
        for j in std::iter::once(&long).chain(&queued) {
            assert_eq!(wait(j, 60), MIRAGE_JOB_CANCELLED);
            err(take_images(j).unwrap_err(), MIRAGE_ERR_CANCELLED, "cancelled");
        }
        // The queue is free again, and a job freed while it runs returns at once.
        let running = submit(&ctx, &params(1000, 5), false).unwrap();
        wait_until("the job to start", || poll(&running).1 >= 1);
        let t = Instant::now();
        drop(running);
        assert!(t.elapsed() < Duration::from_millis(200), "mirage_job_free took {:?}", t.elapsed());
        let after = submit(&ctx, &params(2, 3), false).unwrap();
        assert_eq!(wait(&after, 120), MIRAGE_JOB_DONE);
        // A manual job cannot be waited into progress, a worker job cannot be advanced by the host.
        let mut ran = 7;
        // SAFETY: a live job.
        err(unsafe { mirage_job_advance(after.0, 1, 0, &mut ran) }, MIRAGE_ERR_INVALID_ARGUMENT, "workers");
        assert_eq!(ran, 7, "nothing written on failure");
        let manual = submit(&ctx, &params(3, 3), true).unwrap();
        assert_eq!(wait(&manual, 0), MIRAGE_JOB_QUEUED);
        // SAFETY: a live job.
        ok(unsafe { mirage_job_advance(manual.0, u32::MAX, 0, &mut ran) });
        assert_eq!(ran, 3);
        assert_eq!(take_images(&manual).unwrap(), blocking(&ctx, &params(3, 3)), "manual = blocking");
    }

    /// Absurd context settings are refused with their names; sane ones work.
    #[test]
    fn context_settings_are_checked() {
        let (_tmp, dir) = tiny_diffusion_set();
        let path = CString::new(dir.to_str().unwrap()).unwrap();
        for (workers, queue, needle) in [
            (0, 64, "params->workers is 0"),
            (20000, 64, "params->workers is 20000, out of range 1..=64"),
            (1, 0, "params->max_queued_jobs is 0"),
            (1, u32::MAX, "params->max_queued_jobs is 4294967295"),
        ] {
            // SAFETY: zeroed is valid; init fills it; valid pointers.
            unsafe {
                let mut p: MirageContextParams = std::mem::zeroed();
                ok(mirage_context_params_init(&mut p, size_of::<MirageContextParams>()));
                p.workers = workers;
                p.max_queued_jobs = queue;
                let mut ctx = null_mut();
                err(mirage_context_new(path.as_ptr(), &p, &mut ctx), MIRAGE_ERR_INVALID_ARGUMENT, needle);
                assert!(ctx.is_null());
            }
        }
        let _ok = context(&dir, 64, 4096);
    }

    /// A target refused leaves the result in the job; a good one gets exactly the blocking bytes, converted
    /// as documented (bottom-up BGRA with a padded stride; padding untouched).
    #[test]
    fn take_into_checks_every_target_first_and_converts_exactly() {
        let (_tmp, dir) = tiny_diffusion_set();
        let ctx = context(&dir, 1, 4);
        let (mut w, mut h, mut ch) = (0, 0, 0);
        // SAFETY: valid pointers.
        ok(unsafe { mirage_context_image_size(ctx.0, &mut w, &mut h, &mut ch) });
        let p = params(4, 8);
        let j = submit(&ctx, &p, true).unwrap();
        // SAFETY: a live job.
        ok(unsafe { mirage_job_advance(j.0, u32::MAX, 0, null_mut()) });
        let stride = w as usize * 4 + 12;
        let mut buf = vec![0xABu8; stride * h as usize];
        let good = MirageTarget {
            data: buf.as_mut_ptr().cast(),
            size: buf.len(),
            width: w,
            height: h,
            stride,
            format: MIRAGE_PIXEL_BGRA8,
            flags: MIRAGE_TARGET_BOTTOM_UP,
            filter: MIRAGE_FILTER_NEAREST,
        };
        let bad: Vec<(MirageTarget, &str)> = vec![
            (MirageTarget { stride: w as usize * 4 - 1, ..good }, "stride is"),
            (MirageTarget { size: buf.len() - 13, ..good }, "size is"),
            (MirageTarget { width: 0, ..good }, "width is 0"),
            (MirageTarget { height: MIRAGE_MAX_IMAGE_SIDE + 1, ..good }, "height is 4097"),
            (MirageTarget { data: null_mut(), ..good }, "data is NULL"),
            (MirageTarget { format: 99, ..good }, "format is 99"),
            (MirageTarget { flags: 8, ..good }, "unknown bits"),
            (MirageTarget { filter: 7, ..good }, "filter is 7"),
            (
                MirageTarget { format: MIRAGE_PIXEL_RGBA32F, stride: 0, data: buf[1..].as_mut_ptr().cast(), ..good },
                "aligned",
            ),
        ];
        for (t, needle) in &bad {
            // SAFETY: the target's buffer is `buf` (or refused before use).
            err(unsafe { mirage_job_take_into(j.0, t, 1) }, MIRAGE_ERR_INVALID_ARGUMENT, needle);
            assert!(buf.iter().all(|&b| b == 0xAB), "{needle}: a refused target was written");
        }
        // Two targets for one image: refused too, nothing written.
        let two = [good, good];
        // SAFETY: as above.
        err(unsafe { mirage_job_take_into(j.0, two.as_ptr(), 2) }, MIRAGE_ERR_INVALID_ARGUMENT, "made 1 images");
        // SAFETY: as above.
        ok(unsafe { mirage_job_take_into(j.0, &good, 1) });
        // SAFETY: as above.
        err(unsafe { mirage_job_take_into(j.0, &good, 1) }, MIRAGE_ERR_INVALID_ARGUMENT, "already taken");
        let want = &blocking(&ctx, &MirageDiffusionParams { format: MIRAGE_PIXEL_RGBA8, ..p })[0];
        for y in 0..h as usize {
            let row = &buf[(h as usize - 1 - y) * stride..][..stride];
            for x in 0..w as usize {
                let (s, d) = (&want[(y * w as usize + x) * 4..][..4], &row[x * 4..][..4]);
                assert_eq!([d[2], d[1], d[0], d[3]], [s[0], s[1], s[2], s[3]], "pixel {x},{y}");
            }
            assert!(row[w as usize * 4..].iter().all(|&b| b == 0xAB), "row {y}: padding written");
        }
    }

    /// Caller-given noise: the seed's own noise gives the seed's image; other noise another image; a wrong
    /// shape is refused with the set's shape; denoise refuses noise.
    #[test]
    fn initial_noise_from_the_caller() {
        let (_tmp, dir) = tiny_diffusion_set();
        let ctx = context(&dir, 1, 4);
        let mut shape = [0u32; 3];
        // SAFETY: valid pointers.
        ok(unsafe { mirage_context_latent_shape(ctx.0, shape.as_mut_ptr()) });
        let per: usize = shape.iter().map(|&d| d as usize).product();
        let latent = |values: Vec<f32>, n: u32, s: [u32; 3]| {
            let mut l = null_mut();
            let full = [n, s[0], s[1], s[2]];
            // SAFETY: valid pointers; the data is copied.
            ok(unsafe { mirage_latent_new(values.as_ptr(), values.len(), full.as_ptr(), &mut l) });
            l
        };
        let seeds = mirage::rng::Noise::new(77).try_normals(2 * per).unwrap();
        let same = latent(seeds.clone(), 2, shape);
        let p = MirageDiffusionParams { count: 2, ..params(4, 77) };
        let from_seed = blocking(&ctx, &p);
        assert_eq!(blocking(&ctx, &MirageDiffusionParams { noise: same, ..p }), from_seed);
        let other = latent(seeds.iter().map(|v| -v).collect(), 2, shape);
        assert_ne!(blocking(&ctx, &MirageDiffusionParams { noise: other, ..p }), from_seed);
        let mut b = null_mut();
        let wrong = latent(vec![0.0; 2 * per], 2, [shape[0] * 2, shape[1], shape[2] / 2]);
        // SAFETY: valid pointers.
        unsafe {
            err(
                mirage_generate(ctx.0, &MirageDiffusionParams { noise: wrong, ..p }, &mut b),
                MIRAGE_ERR_INVALID_ARGUMENT,
                "params->noise has shape",
            );
            let one = MirageDiffusionParams { noise: same, count: 1, ..p };
            err(mirage_generate(ctx.0, &one, &mut b), MIRAGE_ERR_INVALID_ARGUMENT, "params->noise holds");
            for l in [same, other, wrong] {
                mirage_latent_free(l);
            }
        }
    }

    /// Packs: a set packed gives the directory's bytes from a path and from memory; a pack cut or damaged
    /// anywhere is refused with what is wrong; two contexts on one set share it.
    #[test]
    fn packs_open_from_a_path_and_from_memory() {
        let (tmp, dir) = tiny_diffusion_set();
        let bytes = mirage::model_set::pack_set(&dir).unwrap();
        let file = tmp.path().join("set.mirage");
        std::fs::write(&file, &bytes).unwrap();
        let p = params(3, 5);
        let want = blocking(&context(&dir, 1, 4), &p);
        assert_eq!(blocking(&context(&file, 1, 4), &p), want, "pack file = directory");
        let mut ctx = null_mut();
        // SAFETY: valid pointers; the buffer is read during the call only.
        ok(unsafe { mirage_context_new_from_memory(bytes.as_ptr().cast(), bytes.len(), null(), &mut ctx) });
        let mem = Ctx(ctx);
        assert_eq!(blocking(&mem, &p), want, "pack in memory = directory");
        // A tileable generation needs the sessions prepared at open for a memory pack.
        let mut b = null_mut();
        let tiled = MirageDiffusionParams { tileable: true, ..p };
        // SAFETY: valid pointers.
        let s = unsafe { mirage_generate(mem.0, &tiled, &mut b) };
        if s != MIRAGE_OK {
            err(s, MIRAGE_ERR_UNSUPPORTED, "tileable");
        } else {
            take_batch(b);
        }
        drop(mem);
        // Damaged buffers: cut at many places, one byte flipped in many places, foreign bytes.
        let pack = mirage::pack::Pack::parse(&bytes).unwrap();
        let mut cuts: Vec<usize> = vec![0, 4, 8, 12, 16, 100, bytes.len() / 2, bytes.len() - 1];
        cuts.extend(pack.names().map(|n| bytes.len() - pack.size(n).unwrap() / 2));
        let mut cases = 0;
        for cut in cuts {
            let mut ctx = null_mut();
            // SAFETY: valid pointers.
            let s = unsafe { mirage_context_new_from_memory(bytes.as_ptr().cast(), cut, null(), &mut ctx) };
            err(s, MIRAGE_ERR_INVALID_MODEL, "pack");
            assert!(ctx.is_null());
            cases += 1;
        }
        for at in (0..bytes.len()).step_by(bytes.len() / 97 + 1) {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x5A;
            let mut ctx = null_mut();
            // SAFETY: valid pointers.
            let s = unsafe { mirage_context_new_from_memory(damaged.as_ptr().cast(), damaged.len(), null(), &mut ctx) };
            assert!(
                s == MIRAGE_ERR_INVALID_MODEL || s == MIRAGE_ERR_MODEL_NOT_FOUND,
                "byte {at}: {s} {}",
                last_error()
            );
            assert!(ctx.is_null());
            cases += 1;
        }
        let png = b"\x89PNG\r\n\x1a\n....";
        let mut ctx = null_mut();
        // SAFETY: valid pointers.
        err(
            unsafe { mirage_context_new_from_memory(png.as_ptr().cast(), png.len(), null(), &mut ctx) },
            MIRAGE_ERR_INVALID_MODEL,
            "not a mirage pack",
        );
        println!("jobs: packs: {} damaged buffers refused", cases + 1);
        // Sharing: a second open of the same set is the same sessions.
        let a = mirage::model_set::open_shared(&dir, None).unwrap();
        let b2 = mirage::model_set::open_shared(&dir, None).unwrap();
        assert!(std::sync::Arc::ptr_eq(&a, &b2), "two opens of one set share it");
        let f1 = mirage::model_set::open_shared(&file, None).unwrap();
        assert!(!std::sync::Arc::ptr_eq(&a, &f1), "a pack file is opened on its own");
    }
}

/// Stress through the C API: threads submitting jobs (workers and manual) on a shared context with 2 workers
/// and on contexts of their own, polling, previewing, cancelling and freeing them at random moments, taking
/// results into host buffers, and freeing their own contexts with jobs queued and running. Only the documented
/// statuses come back, nothing deadlocks (deadlines), and resident memory and the thread count are flat
/// after the warm-up round. In a process of its own, as hostile::stress_generations_cancels_and_frees.
#[test]
fn stress_jobs_on_shared_and_own_contexts() {
    use std::ffi::CString;
    use std::ptr::{null, null_mut};

    use mirage::capi::*;

    use crate::hostile::last_error;

    if std::env::var_os("MIRAGE_STRESS_CHILD").is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "jobs::stress_jobs_on_shared_and_own_contexts", "--nocapture", "--test-threads=1"])
            .env("MIRAGE_STRESS_CHILD", "1")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("1 passed"), "the stress process failed:\n{text}");
        if let Some(line) = text.lines().find_map(|l| l.find("jobs: stress").map(|i| &l[i..])) {
            println!("{line}");
        }
        return;
    }
    let (_tmp, dir) = crate::util::tiny_diffusion_set();
    let path = std::sync::Arc::new(CString::new(dir.to_str().unwrap()).unwrap());
    let open = |path: &CString, workers: u32| -> usize {
        // SAFETY: zeroed is valid; init fills it; valid pointers.
        unsafe {
            let mut p: MirageContextParams = std::mem::zeroed();
            mirage_context_params_init(&mut p, size_of::<MirageContextParams>());
            p.workers = workers;
            p.max_queued_jobs = 8;
            let mut ctx = null_mut();
            assert_eq!(mirage_context_new(path.as_ptr(), &p, &mut ctx), MIRAGE_OK, "{}", last_error());
            ctx as usize
        }
    };
    let shared = open(&path, 2);
    // One thread's work: `jobs` jobs on `ctx`, each handled one of five ways by the job's number.
    fn work(ctx: usize, thread: u64, jobs: u64) -> usize {
        let mut done = 0;
        for i in 0..jobs {
            let k = thread * 1000 + i;
            // SAFETY: valid pointers; `ctx` is live for the whole call (its owner frees it after).
            unsafe {
                let mut p: MirageDiffusionParams = std::mem::zeroed();
                mirage_diffusion_params_init(&mut p, size_of::<MirageDiffusionParams>());
                p.steps = 2 + (k % 4) as u32;
                p.seed = k;
                let mut jp: MirageJobParams = std::mem::zeroed();
                mirage_job_params_init(&mut jp, size_of::<MirageJobParams>());
                jp.mode = if k % 5 == 4 { MIRAGE_JOB_MANUAL } else { MIRAGE_JOB_WORKERS };
                jp.previews = k.is_multiple_of(3);
                let mut j = null_mut();
                let s = mirage_job_generate(ctx as *const MirageContext, &p, &jp, &mut j);
                if s == MIRAGE_ERR_BUSY {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                assert_eq!(s, MIRAGE_OK, "submit: {}", last_error());
                let (mut st, mut step, mut total) = (0, 0, 0);
                match k % 5 {
                    // Freed at once (cancelled, never waited for).
                    0 => {}
                    // Cancelled after a poll, then taken: cancelled, or done if it was that quick.
                    1 => {
                        assert_eq!(mirage_job_poll(j, &mut st, &mut step, &mut total), MIRAGE_OK);
                        assert_eq!(mirage_job_cancel(j), MIRAGE_OK);
                        mirage_job_wait(j, MIRAGE_WAIT_FOREVER, &mut st);
                        let mut b = null_mut();
                        let s = mirage_job_take_images(j, &mut b);
                        assert!(s == MIRAGE_OK || s == MIRAGE_ERR_CANCELLED, "take after cancel: {s}");
                        mirage_image_batch_free(b);
                    }
                    // Polled and previewed until it ends, then taken into a host buffer.
                    2 | 3 => {
                        loop {
                            assert_eq!(mirage_job_poll(j, &mut st, &mut step, &mut total), MIRAGE_OK);
                            if jp.previews {
                                let (mut b, mut s) = (null_mut(), 0);
                                assert_eq!(mirage_job_preview(j, MIRAGE_PIXEL_RGBA8, &mut b, &mut s), MIRAGE_OK);
                                mirage_image_batch_free(b);
                            }
                            if st >= MIRAGE_JOB_DONE {
                                break;
                            }
                            mirage_job_wait(j, 1, null_mut());
                        }
                        let mut buf = vec![0u8; 40 * 40 * 4];
                        let t = MirageTarget {
                            data: buf.as_mut_ptr().cast(),
                            size: buf.len(),
                            width: 40,
                            height: 40,
                            stride: 0,
                            format: MIRAGE_PIXEL_BGRA8,
                            flags: MIRAGE_TARGET_BOTTOM_UP | MIRAGE_TARGET_PREMULTIPLIED,
                            filter: MIRAGE_FILTER_BILINEAR,
                        };
                        let s = mirage_job_take_into(j, &t, 1);
                        assert!(s == MIRAGE_OK || s == MIRAGE_ERR_CANCELLED, "take_into: {s} {}", last_error());
                    }
                    // Manual: stepped on this thread with a small budget.
                    _ => loop {
                        let mut ran = 0;
                        assert_eq!(mirage_job_advance(j, u32::MAX, 500, &mut ran), MIRAGE_OK);
                        mirage_job_poll(j, &mut st, null_mut(), null_mut());
                        if st >= MIRAGE_JOB_DONE {
                            let mut b = null_mut();
                            assert_eq!(mirage_job_take_images(j, &mut b), MIRAGE_OK, "{}", last_error());
                            mirage_image_batch_free(b);
                            break;
                        }
                    },
                }
                mirage_job_free(j);
                done += 1;
            }
        }
        done
    }
    let round = move |jobs: u64| -> usize {
        let mut threads = Vec::new();
        for t in 0..3u64 {
            threads.push(std::thread::spawn(move || work(shared, t, jobs)));
        }
        for t in 3..5u64 {
            let path = path.clone();
            threads.push(std::thread::spawn(move || {
                let mut done = 0;
                for r in 0..3u64 {
                    let own = open(&path, 1 + (r % 2) as u32);
                    done += work(own, t * 10 + r, jobs / 3);
                    // A context freed with jobs queued behind a long running one: cancelled and joined.
                    // SAFETY: valid pointers.
                    unsafe {
                        let mut p: MirageDiffusionParams = std::mem::zeroed();
                        mirage_diffusion_params_init(&mut p, size_of::<MirageDiffusionParams>());
                        p.steps = 500;
                        let mut jobs_left = Vec::new();
                        for _ in 0..3 {
                            let mut j = null_mut();
                            if mirage_job_generate(own as *const MirageContext, &p, null(), &mut j) == MIRAGE_OK {
                                jobs_left.push(j);
                            }
                        }
                        mirage_context_free(own as *mut MirageContext);
                        for j in jobs_left {
                            let mut st = 0;
                            mirage_job_wait(j, MIRAGE_WAIT_FOREVER, &mut st);
                            assert_eq!(st, MIRAGE_JOB_CANCELLED, "a job of a freed context");
                            mirage_job_free(j);
                        }
                    }
                }
                done
            }));
        }
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    };
    let (rss0, threads0) = crate::hostile::rss_and_threads();
    let again = round.clone();
    let warm = crate::hostile::within_deadline("jobs stress warm-up", move || round(12));
    let (rss1, threads1) = crate::hostile::rss_and_threads();
    let main = crate::hostile::within_deadline("jobs stress round", move || again(60));
    let (rss2, threads2) = crate::hostile::rss_and_threads();
    // SAFETY: the shared context; no call runs on it any more.
    unsafe { mirage_context_free(shared as *mut MirageContext) };
    println!(
        "jobs: stress: {} jobs; RSS {:.1} MB at start, {:.1} MB after the warm-up ({warm}), {:.1} MB after {main} more; \
         threads {threads0} / {threads1} / {threads2}",
        warm + main,
        rss0 as f64 / 1e6,
        rss1 as f64 / 1e6,
        rss2 as f64 / 1e6
    );
    assert!(warm + main >= 300, "{} jobs", warm + main);
    // Under AddressSanitizer (`make sanitize` sets MIRAGE_SANITIZER) freed memory sits in its quarantine, so
    // resident memory grows by design; LeakSanitizer checks for leaks at exit instead.
    if std::env::var_os("MIRAGE_SANITIZER").is_none() {
        assert!(rss2 <= rss1 + (32 << 20), "RSS grew from {rss1} to {rss2} bytes");
    }
    assert!(threads2 <= threads1 + 2, "threads grew from {threads1} to {threads2}");
}

/// Two contexts on one shipped set share its sessions: the second open costs a manifest read, not a load.
/// Prints the figures of the closing note (`cargo test jobs::a_second_open -- --nocapture`).
#[test]
fn a_second_open_of_a_set_shares_the_first() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fashion");
    let t = std::time::Instant::now();
    let first = mirage::model_set::open_shared(&dir, None).unwrap();
    let t1 = t.elapsed();
    let t = std::time::Instant::now();
    let second = mirage::model_set::open_shared(&dir, None).unwrap();
    let t2 = t.elapsed();
    assert!(Arc::ptr_eq(&first, &second));
    let bytes = mirage::model_set::pack_set(&dir).unwrap();
    drop((first, second));
    let t = std::time::Instant::now();
    let from_memory = mirage::model_set::open_memory_shared(&bytes, None, false).unwrap();
    let t3 = t.elapsed();
    assert_eq!(from_memory.manifest().name, "fashion");
    println!(
        "jobs: sharing: models/fashion opened in {:.1} ms, a second open {:.2} ms (shared); from a {:.1} MB pack in \
         memory {:.1} ms",
        t1.as_secs_f64() * 1e3,
        t2.as_secs_f64() * 1e3,
        bytes.len() as f64 / 1e6,
        t3.as_secs_f64() * 1e3
    );
}
