//! Jobs: a diffusion call that never blocks the thread that asked for it. A [`Job`] owns a prepared
//! [`Plan`] and the model set it runs on; the thread that wants it done advances it in whole sampler steps,
//! within a step count and a time budget ([`Job::advance`]: a game loop spending a few milliseconds a
//! frame), while any thread polls its state and progress, reads its latest preview, cancels it, waits for
//! it or takes its result, none of which waits for a step to finish. Stepping a job to the end gives
//! exactly the images of the blocking call with the same parameters (it is the same plan).
//!
//! One thread steps a job at a time (a second `advance` meanwhile is refused, not queued); the others only
//! read the state under a short lock. A job is either a diffusion [`Plan`] (many steps) or a one-shot
//! operation (VAE encode or decode: one step). [`Workers`] is a context's pool of library-owned threads that
//! advance submitted jobs; the C API (`mirage_job_*`) builds on both.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
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

/// What a job ends with: model-space images (diffusion, VAE decode) or latents (VAE encode).
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Model-space images [n, C, H, W].
    Images(Vec<f32>),
    /// `n` latent distributions of the set's latent shape (a VAE encode), flattened.
    Latents { mean: Vec<f32>, logvar: Vec<f32>, n: usize },
}

impl Output {
    /// The images, or an `InvalidArgument` for a job that made latents.
    pub fn into_images(self) -> Result<Vec<f32>> {
        match self {
            Output::Images(v) => Ok(v),
            Output::Latents { .. } => Err(Error::invalid("the job made latents, not images")),
        }
    }
}

/// A one-step operation run as a job (VAE encode or decode).
pub type OneShot = Box<dyn FnOnce(&ModelSet) -> Result<Output> + Send>;

/// What a job runs.
enum Work {
    Plan(Plan),
    /// Run once (its one step); then its output, until `finish`.
    Once {
        f: Option<OneShot>,
        out: Option<Result<Output>>,
    },
}

impl Work {
    fn steps(&self) -> usize {
        match self {
            Work::Plan(p) => p.steps(),
            Work::Once { .. } => 1,
        }
    }
    fn steps_done(&self) -> usize {
        match self {
            Work::Plan(p) => p.steps_done(),
            Work::Once { f, .. } => usize::from(f.is_none()),
        }
    }
    fn is_done(&self) -> bool {
        match self {
            Work::Plan(p) => p.is_done(),
            Work::Once { f, .. } => f.is_none(),
        }
    }
    fn step(&mut self, set: &ModelSet, hooks: &mut Hooks) -> Result<()> {
        match self {
            Work::Plan(p) => p.step(set, hooks),
            Work::Once { f, out } => {
                if let Some(f) = f.take() {
                    match f(set) {
                        Ok(o) => *out = Some(Ok(o)),
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
        }
    }
    fn finish(self) -> Result<Output> {
        match self {
            Work::Plan(p) => p.finish().map(Output::Images),
            Work::Once { out, .. } => out.unwrap_or_else(|| Err(Error::invalid("the operation has not run"))),
        }
    }
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
    /// The work, while no thread is stepping it and the job has not ended.
    plan: Option<Work>,
    /// A thread is inside `advance` (holding the plan).
    stepping: bool,
    preview: Option<Preview>,
    /// The result once the job has ended, until it is taken.
    result: Option<Result<Output>>,
    taken: bool,
}

impl Job {
    /// A job that will run `plan` on `set` (the set the plan was prepared on). With `previews`, every step
    /// also decodes the current estimate, which [`Job::preview`] returns.
    pub fn new(set: Arc<ModelSet>, plan: Plan, previews: bool) -> Job {
        Job::with_work(set, Work::Plan(plan), previews)
    }

    /// A job of one step that runs `f` on `set` (a VAE encode or decode).
    pub fn once(set: Arc<ModelSet>, f: OneShot) -> Job {
        Job::with_work(set, Work::Once { f: Some(f), out: None }, false)
    }

    fn with_work(set: Arc<ModelSet>, plan: Work, previews: bool) -> Job {
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

    /// The result of an ended job, exactly once: its output, or the error it ended with
    /// (`Error::Cancelled` for a cancelled job). Before the end, and after the first take, an
    /// `Error::InvalidArgument` saying so.
    pub fn take(&self) -> Result<Output> {
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
        g.result.take().unwrap_or_else(|| Err(Error::invalid("the job holds no result")))
    }

    /// [`Job::take`] for a job that makes images (every diffusion job, a decode).
    pub fn take_images(&self) -> Result<Vec<f32>> {
        self.take()?.into_images()
    }

    /// Ends a job that has not ended with `error` (a worker whose step panicked).
    fn fail(&self, error: Error) {
        let mut g = self.lock();
        if !g.state.is_ended() {
            g.stepping = false;
            end(&mut g, Err(error));
        }
        drop(g);
        self.shared.changed.notify_all();
    }

    /// Returns a result taken with [`Job::take`] that the caller could not deliver (its output buffers were
    /// refused): the next take gets it again.
    pub fn put_back(&self, output: Output) {
        let mut g = self.lock();
        if g.taken && g.result.is_none() {
            g.result = Some(Ok(output));
            g.taken = false;
        }
    }

    /// Whether each step keeps a preview.
    pub fn has_previews(&self) -> bool {
        self.shared.previews
    }

    /// The model set the job runs on.
    pub fn set(&self) -> &Arc<ModelSet> {
        &self.shared.set
    }

    /// Whether two handles are the same job.
    pub fn same(&self, other: &Job) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
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
            match g.plan.take() {
                Some(p) => p,
                None => return Err(Error::invalid("the job holds no work")),
            }
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
fn end(g: &mut Inner, result: Result<Output>) {
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

/// A context's worker threads: they advance submitted jobs to their end, in submission order. With one
/// worker (the default) a context runs one job at a time; with more, as many run side by side, their steps
/// interleaving on each model's session lock. Threads start with the first submission (a context that
/// never submits has none) and stop when the pool is dropped, which cancels every job it holds and waits
/// for each running one to return (within one step).
pub struct Workers {
    shared: Arc<PoolShared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    workers: usize,
}

struct PoolShared {
    state: Mutex<PoolState>,
    /// Signalled when a job is queued or the pool shuts down.
    work: Condvar,
    max_queued: usize,
}

#[derive(Default)]
struct PoolState {
    queue: VecDeque<Job>,
    running: Vec<Job>,
    shutdown: bool,
}

impl PoolShared {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Workers {
    /// A pool of `workers` threads (1 to [`crate::limits::MAX_WORKERS`]) holding at most `max_queued` jobs that
    /// have not started (1 to [`crate::limits::MAX_QUEUED_JOBS`]). Each field's message starts with its name.
    pub fn new(workers: usize, max_queued: usize) -> Result<Workers> {
        use crate::limits::{MAX_QUEUED_JOBS, MAX_WORKERS};
        if !(1..=MAX_WORKERS).contains(&workers) {
            return Err(Error::invalid(format!("workers is {workers}, out of range 1..={MAX_WORKERS}")));
        }
        if !(1..=MAX_QUEUED_JOBS).contains(&max_queued) {
            return Err(Error::invalid(format!("max_queued_jobs is {max_queued}, out of range 1..={MAX_QUEUED_JOBS}")));
        }
        let shared = Arc::new(PoolShared { state: Mutex::default(), work: Condvar::new(), max_queued });
        Ok(Workers { shared, threads: Mutex::default(), workers })
    }

    /// Queues `job` for the workers (starting them on the first call). `Error::Busy` when `max_queued` jobs
    /// are already waiting; `Error::Cancelled` once the pool is shutting down.
    pub fn submit(&self, job: Job) -> Result<()> {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut st = self.shared.lock();
            if st.shutdown {
                return Err(Error::Cancelled);
            }
            // Jobs cancelled while queued have ended: they hold no place in the queue.
            st.queue.retain(|j| !j.status().state.is_ended());
            if st.queue.len() >= self.shared.max_queued {
                return Err(Error::Busy(format!(
                    "the context already holds {} jobs that have not started (max_queued_jobs); wait for some to \
                     start or end, or cancel some",
                    st.queue.len()
                )));
            }
            st.queue.push_back(job);
        }
        self.shared.work.notify_one();
        while threads.len() < self.workers {
            let shared = self.shared.clone();
            let name = format!("mirage-worker-{}", threads.len());
            match std::thread::Builder::new().name(name).spawn(move || work(&shared)) {
                Ok(t) => threads.push(t),
                // The job is queued; the threads already there will run it. With none at all, say so.
                Err(e) if threads.is_empty() => {
                    let mut st = self.shared.lock();
                    if let Some(job) = st.queue.pop_back() {
                        job.cancel();
                    }
                    return Err(Error::Inference(format!("could not start a worker thread: {e}")));
                }
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Cancels every job the pool holds, queued or running (each running one within one step).
    pub fn cancel_all(&self) {
        let st = self.shared.lock();
        for job in st.queue.iter().chain(&st.running) {
            job.cancel();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.shutdown = true;
            let queued: Vec<Job> = st.queue.drain(..).collect();
            for job in queued.iter().chain(&st.running) {
                job.cancel();
            }
        }
        self.shared.work.notify_all();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            // A worker's panic is already contained: `advance` ran inside it and nothing else can panic.
            let _ = t.join();
        }
    }
}

/// A worker thread's loop: the oldest queued job, to its end, until shutdown.
fn work(shared: &PoolShared) {
    loop {
        let job = {
            let mut st = shared.lock();
            loop {
                if st.shutdown {
                    return;
                }
                if let Some(job) = st.queue.pop_front() {
                    st.running.push(job.clone());
                    break job;
                }
                st = shared.work.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        // A panic inside a step must not kill the worker and strand the queue: it ends the job instead.
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.advance(usize::MAX, None)));
        if stepped.is_err() {
            job.fail(Error::Inference("internal error: a job step panicked (please report this as a bug)".into()));
        }
        let mut st = shared.lock();
        st.running.retain(|j| !j.same(&job));
    }
}
