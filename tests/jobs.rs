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
