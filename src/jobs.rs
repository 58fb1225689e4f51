//! Jobs: a diffusion call that never blocks the thread that asked for it. A [`Job`] owns a prepared
//! [`Plan`] and the model set it runs on; the thread that wants it done advances it in whole sampler steps,
//! within a step count and a time budget ([`Job::advance`]: a game loop spending a few milliseconds a
//! frame), while any thread polls its state and progress, reads its latest preview, cancels it, waits for
//! it or takes its result, none of which waits for a step to finish. Stepping a job to the end gives
//! exactly the images of the blocking call with the same parameters (it is the same plan).
//!
//! One thread steps a job at a time (a second `advance` meanwhile is refused, not queued); the others only
//! read the state under a short lock. Library-owned worker threads that advance queued jobs, and the C API
//! (`mirage_job_*`), build on this.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::model_set::ModelSet;
use crate::pipeline::{Hooks, Plan};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Created; no step has run yet.
    Queued,
    /// At least one step has run, not all.
    Running,
    /// Every step has run: the result waits to be taken (or has been).
    Done,
    /// A step failed: the error waits to be taken (or has been).
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl JobState {
    /// Whether the job has ended (done, failed or cancelled): nothing will run any more.
    pub fn is_ended(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Cancelled)
    }
}

/// A snapshot of a job: its state and sampler steps done of all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobStatus {
    pub state: JobState,
    pub steps_done: usize,
    pub steps: usize,
}

/// The latest preview of a job: after which step, and the clean-image estimate of the running batch as
/// model-space images.
#[derive(Debug, Clone)]
pub struct Preview {
    pub step: usize,
    pub images: Arc<Vec<f32>>,
}

/// A diffusion call running without blocking its caller; see the module doc. Cloning gives another handle
/// on the same job.
#[derive(Clone)]
pub struct Job {
    shared: Arc<Shared>,
}

struct Shared {
    set: Arc<ModelSet>,
    /// Set by [`Job::cancel`]; read before every step and by the hooks inside one.
    cancel: AtomicBool,
    /// Whether each step computes a preview (one VAE decode per step).
    previews: bool,
    inner: Mutex<Inner>,
    /// Signalled whenever the state or the progress changes.
    changed: Condvar,
}

struct Inner {
    state: JobState,
    steps_done: usize,
    steps: usize,
    /// The plan, while no thread is stepping it and the job has not ended.
    plan: Option<Plan>,
    /// A thread is inside `advance` (holding the plan).
    stepping: bool,
    preview: Option<Preview>,
    /// The result once the job has ended, until it is taken.
    result: Option<Result<Vec<f32>>>,
    taken: bool,
}

impl Job {
    /// A job that will run `plan` on `set` (the set the plan was prepared on). With `previews`, every step
    /// also decodes the current estimate, which [`Job::preview`] returns.
    pub fn new(set: Arc<ModelSet>, plan: Plan, previews: bool) -> Job {
        let steps = plan.steps();
        let inner = Inner {
            state: JobState::Queued,
            steps_done: 0,
            steps,
            plan: Some(plan),
            stepping: false,
            preview: None,
            result: None,
            taken: false,
        };
        Job {
            shared: Arc::new(Shared {
                set,
                cancel: AtomicBool::new(false),
                previews,
                inner: Mutex::new(inner),
                changed: Condvar::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock is held leaves nothing half-written that the fields do not describe.
        self.shared.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state and progress, at once (a short lock, never held across a step).
    pub fn status(&self) -> JobStatus {
        let g = self.lock();
        JobStatus { state: g.state, steps_done: g.steps_done, steps: g.steps }
    }

    /// Cancels the job: a queued job ends at once; a running one ends before its next step, or within the
    /// running step when it next reports (so within one step). Cancelling an ended job does nothing.
    pub fn cancel(&self) {
        self.shared.cancel.store(true, Ordering::SeqCst);
        let mut g = self.lock();
        if !g.state.is_ended() && !g.stepping {
            end(&mut g, Err(Error::Cancelled));
            self.shared.changed.notify_all();
        }
    }

    /// Waits until the job has ended or `timeout` has passed (None: no limit); returns whether it has
    /// ended. Only useful while another thread advances it.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut g = self.lock();
        while !g.state.is_ended() {
            g = match deadline {
                None => self.shared.changed.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.shared.changed.wait_timeout(g, left).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
        true
    }

    /// The latest preview, if the job was made with previews and a step has run.
    pub fn preview(&self) -> Option<Preview> {
        self.lock().preview.clone()
    }

    /// The result of an ended job, exactly once: its model-space images, or the error it ended with
    /// (`Error::Cancelled` for a cancelled job). Before the end, and after the first take, an
    /// `Error::InvalidArgument` saying so.
    pub fn take(&self) -> Result<Vec<f32>> {
        let mut g = self.lock();
        if !g.state.is_ended() {
            return Err(Error::invalid(format!(
                "the job has not ended ({} of {} steps done): poll or wait for it first",
                g.steps_done, g.steps
            )));
        }
        if g.taken {
            return Err(Error::invalid("the job's result was already taken"));
        }
        g.taken = true;
        g.result.take().expect("an ended job holds its result until taken")
    }

    /// Runs whole sampler steps on the calling thread: at most `max_steps`, and no new step once `budget`
    /// (None: none) would be exceeded, judged by the duration of the previous step; at least one step runs
    /// when `max_steps > 0` and the job has not ended, so that every call makes progress. After the last
    /// step the result is ready to take. Returns the steps run (0 for an ended job).
    ///
    /// Errors: `Error::InvalidArgument` when another thread is advancing the job at the same moment. A step
    /// that fails, or a cancel, ends the job (its error is then what [`Job::take`] returns), not this call.
    pub fn advance(&self, max_steps: usize, budget: Option<Duration>) -> Result<usize> {
        let start = Instant::now();
        let mut plan = {
            let mut g = self.lock();
            if g.state.is_ended() || max_steps == 0 {
                return Ok(0);
            }
            if g.stepping {
                return Err(Error::invalid("another thread is advancing this job"));
            }
            g.stepping = true;
            g.plan.take().expect("a job that has not ended holds its plan")
        };
        let shared = &self.shared;
        let mut ran = 0;
        let mut last_step = Duration::ZERO;
        // Why the loop stopped: None = a limit (the job goes on), Some = the job ended with this error.
        let stopped: Option<Error> = loop {
            if shared.cancel.load(Ordering::SeqCst) {
                break Some(Error::Cancelled);
            }
            if plan.is_done()
                || ran == max_steps
                || (ran > 0 && budget.is_some_and(|b| start.elapsed() + last_step > b))
            {
                break None;
            }
            let t = Instant::now();
            let mut latest = None;
            let mut preview = |_: usize, images: &[f32]| {
                latest = Some(images.to_vec());
                true
            };
            let step = plan.step(
                &shared.set,
                &mut Hooks {
                    progress: None,
                    preview: if shared.previews { Some(&mut preview) } else { None },
                    cancel: Some(&shared.cancel),
                },
            );
            last_step = t.elapsed();
            ran += 1;
            if let Err(e) = step {
                break Some(e);
            }
            let mut g = self.lock();
            g.state = JobState::Running;
            g.steps_done = plan.steps_done();
            if let Some(images) = latest {
                g.preview = Some(Preview { step: plan.steps_done(), images: Arc::new(images) });
            }
            drop(g);
            shared.changed.notify_all();
        };
        let steps_done = plan.steps_done();
        let result = match stopped {
            Some(e) => Some(Err(e)),
            None if plan.is_done() => Some(plan.finish()),
            None => {
                let mut g = self.lock();
                g.stepping = false;
                g.plan = Some(plan);
                None
            }
        };
        if let Some(result) = result {
            let mut g = self.lock();
            g.stepping = false;
            g.steps_done = steps_done;
            end(&mut g, result);
        }
        shared.changed.notify_all();
        Ok(ran)
    }
}

/// Ends a job with `result` (its plan, if any, is dropped).
fn end(g: &mut Inner, result: Result<Vec<f32>>) {
    g.state = match &result {
        Ok(_) => JobState::Done,
        Err(Error::Cancelled) => JobState::Cancelled,
        Err(_) => JobState::Failed,
    };
    if g.state == JobState::Done {
        g.steps_done = g.steps;
    }
    g.plan = None;
    g.result = Some(result);
}
