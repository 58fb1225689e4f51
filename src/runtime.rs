//! Finding and loading libonnxruntime, and choosing an execution provider for each session.
//!
//! ONNX Runtime allows one environment per process, so the runtime is a process-wide singleton:
//! [`init`] sets it up once with [`RuntimeOptions`]; [`global`] returns it (initialising with defaults).
//!
//! The library is searched in this order, first hit wins:
//! 1. the explicit path in the options (only that one is tried when given),
//! 2. `ORT_DYLIB_PATH`,
//! 3. beside libmirage itself (hosts ship both files together) and beside the executable,
//! 4. the project's setup folder `.deps/onnxruntime/lib/` (where `scripts/setup.sh ort` puts it).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::ep::ExecutionProvider;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;

use crate::error::{Error, Result};
use crate::log::Level;
use crate::log_at;

/// The ONNX Runtime version this build is made and tested for.
pub const ORT_VERSION: &str = "1.31.1";
const ORT_LIB_NAME: &str = "libonnxruntime.so.1.31.1";

/// Which execution provider a session should run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    /// The fastest one available: TensorRT, then CUDA, then CPU.
    #[default]
    Auto,
    TensorRt,
    Cuda,
    Cpu,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::Auto => "auto",
            Provider::TensorRt => "tensorrt",
            Provider::Cuda => "cuda",
            Provider::Cpu => "cpu",
        }
    }

    pub fn parse(s: &str) -> Result<Provider> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Provider::Auto),
            "tensorrt" | "trt" => Ok(Provider::TensorRt),
            "cuda" => Ok(Provider::Cuda),
            "cpu" => Ok(Provider::Cpu),
            other => {
                Err(Error::invalid(format!("unknown execution provider {other:?} (auto | tensorrt | cuda | cpu)")))
            }
        }
    }
}

/// How to set up ONNX Runtime for this process.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuntimeOptions {
    /// Explicit path of libonnxruntime; None = search (see the module doc).
    pub ort_library: Option<PathBuf>,
    /// Default provider for sessions.
    pub provider: Provider,
    /// Fail instead of falling back to CPU when the requested provider is unavailable.
    pub strict: bool,
    /// Threads per session for intra-op parallelism, at most [`crate::limits::MAX_THREADS`]; 0 = ONNX
    /// Runtime's default (one per core).
    pub intra_threads: usize,
    /// TensorRT: build fp16 engines.
    pub tensorrt_fp16: bool,
    /// TensorRT: folder for the engine and timing caches (None = no cache, engines are rebuilt per process).
    pub tensorrt_cache_dir: Option<PathBuf>,
    /// Folder of the load cache: verified model-file digests ([`crate::digests`]) and, on CPU, optimized
    /// graphs ([`crate::session_cache`]); None = hash every file and optimize every graph on every load.
    pub digest_cache_dir: Option<PathBuf>,
    /// Keep encoded prompts in the load cache folder's `prompts/` ([`crate::prompt_cache`]): a prompt drawn
    /// before is not encoded again, and a text-to-image set creates its text encoder's session only when a
    /// prompt is not in the cache. Needs `digest_cache_dir`; off by default.
    pub prompt_cache: bool,
    /// CUDA: capture the U-Net's run as a CUDA graph at each batch shape's first steps and replay it
    /// afterwards (ONNX Runtime's `enable_cuda_graph`, with the inputs and outputs bound to tensors that stay
    /// on the device: [`crate::session`]). A model ONNX Runtime cannot capture gets a session without graphs
    /// (logged). Off by default; no effect on TensorRT (not yet tried there) or the CPU.
    pub cuda_graph: bool,
}

impl RuntimeOptions {
    /// Checks the values a host could get wrong. Messages start with the field's name.
    pub fn validate(&self) -> Result<()> {
        crate::limits::check_threads(self.intra_threads, "intra_threads")
    }
}

/// The digest cache folder of the initialised runtime, if it has one (none before `init`).
pub fn digest_cache_dir() -> Option<&'static Path> {
    RUNTIME.get().and_then(|rt| rt.options.digest_cache_dir.as_deref())
}

/// The default provider of the initialised runtime's sessions (Auto before `init`).
pub fn default_provider() -> Provider {
    RUNTIME.get().map_or(Provider::Auto, |rt| rt.options.provider)
}

/// The load cache folder that keeps encoded prompts ([`crate::prompt_cache`]), when the initialised runtime
/// has one and `prompt_cache` is on.
pub fn prompt_cache_dir() -> Option<&'static Path> {
    RUNTIME.get().filter(|rt| rt.options.prompt_cache).and_then(|rt| rt.options.digest_cache_dir.as_deref())
}

/// The loaded ONNX Runtime.
pub struct Runtime {
    /// ONNX Runtime's environment: made by [`init`], or on a thread of its own after [`start`] (see there);
    /// [`Runtime::env`] waits for it.
    env: OnceLock<std::result::Result<ort::environment::Environment, String>>,
    /// The thread making `env` after [`start`], until somebody waits for it.
    pending: Mutex<Option<std::thread::JoinHandle<std::result::Result<ort::environment::Environment, String>>>>,
    options: RuntimeOptions,
    library: PathBuf,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Initialises the process-wide runtime. Calling it again with the same options returns the same runtime;
/// with other options it is an error (ONNX Runtime cannot be reloaded in one process).
pub fn init(options: &RuntimeOptions) -> Result<&'static Runtime> {
    open(options, false)
}

/// [`init`] that returns once the library is loaded, with ONNX Runtime's environment still being made on a
/// thread of its own (about 20 ms of one core on the CI machine: mostly registering its operator schemas), so
/// that what a start does next without ONNX Runtime (reading manifests, checking digests, building a
/// tokenizer, mapping cached graphs) runs beside it. Sessions wait for the environment; an error making it
/// is theirs to return.
///
/// Only for a program that ends with `_exit`, not `exit` (the CLI): the C++ destructors `exit` runs would
/// pull ONNX Runtime's statics from under that thread if the program ended before it did. Hosts, which may
/// exit or unload mirage at any time, get [`init`].
pub fn start(options: &RuntimeOptions) -> Result<&'static Runtime> {
    open(options, true)
}

fn open(options: &RuntimeOptions, background: bool) -> Result<&'static Runtime> {
    options.validate()?;
    let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rt) = RUNTIME.get() {
        if rt.options == *options {
            if !background {
                rt.env()?;
            }
            return Ok(rt);
        }
        return Err(Error::RuntimeAlreadyInitialised(format!(
            "ONNX Runtime is already loaded from {} with other options; initialise the runtime once, before creating contexts",
            rt.library.display()
        )));
    }
    let library = load_library(options.ort_library.as_deref())?;
    let pending = if background {
        match std::thread::Builder::new().name("mirage-ort-env".into()).spawn(make_env) {
            Ok(handle) => Some(handle),
            Err(e) => {
                log_at!(Level::Debug, "no thread for ONNX Runtime's environment ({e}): it is made when first needed");
                None
            }
        }
    } else {
        None
    };
    log_at!(Level::Info, "ONNX Runtime loaded from {}", library.display());
    let rt = RUNTIME.get_or_init(|| Runtime {
        env: OnceLock::new(),
        pending: Mutex::new(pending),
        options: options.clone(),
        library,
    });
    if !background {
        rt.env()?;
    }
    Ok(rt)
}

/// ONNX Runtime's environment, with mirage's logger.
fn make_env() -> std::result::Result<ort::environment::Environment, String> {
    let t = std::time::Instant::now();
    let logger: ort::logging::LoggerFunction = std::sync::Arc::new(|level, category, _id, _loc, msg| {
        // The session cache saves optimized graphs on purpose, keyed by this CPU (crate::session_cache): ONNX
        // Runtime's warning that such a graph is hardware-specific is expected, not news for the host.
        if msg.starts_with("Serializing optimized model with Graph Optimization level greater than") {
            log_at!(Level::Debug, "onnxruntime [{category}]: {msg}");
            return;
        }
        let level = match level {
            ort::logging::LogLevel::Verbose => return,
            ort::logging::LogLevel::Info => Level::Debug,
            ort::logging::LogLevel::Warning => Level::Warn,
            ort::logging::LogLevel::Error | ort::logging::LogLevel::Fatal => Level::Error,
        };
        log_at!(level, "onnxruntime [{category}]: {msg}");
    });
    let env = ort::init()
        .with_name("mirage")
        .with_logger(logger)
        .build()
        .map_err(|e| format!("creating the ONNX Runtime environment failed: {e}"))?;
    env.set_log_level(ort_log_level());
    log_at!(Level::Debug, "ONNX Runtime environment made in {} ms", t.elapsed().as_millis());
    Ok(env)
}

/// The lowest level of ONNX Runtime's lines that mirage's log would deliver: ONNX Runtime formats every line
/// at or above its environment's level and hands it to the logger, so a level below what is delivered only
/// costs (ort makes the environment at VERBOSE, so every session's creation formatted its verbose lines for
/// the logger to drop: about 1 % of the text encoder's load thread in `perf`).
fn ort_log_level() -> ort::logging::LogLevel {
    if crate::log::enabled(Level::Debug) {
        ort::logging::LogLevel::Info // Info lines are delivered at Debug (see the logger)
    } else if crate::log::enabled(Level::Warn) {
        ort::logging::LogLevel::Warning
    } else {
        ort::logging::LogLevel::Error
    }
}

/// Tells ONNX Runtime's environment, once made, the lowest level mirage's log now delivers ([`crate::log`]
/// calls it when its sink changes). Sessions made afterwards log at that level.
pub(crate) fn sync_log_level() {
    if let Some(Ok(env)) = RUNTIME.get().and_then(|rt| rt.env.get()) {
        env.set_log_level(ort_log_level());
    }
}

/// The process-wide runtime, initialised with default options if nobody did it first.
pub fn global() -> Result<&'static Runtime> {
    match RUNTIME.get() {
        Some(rt) => Ok(rt),
        None => init(&RuntimeOptions::default()),
    }
}

/// Whether the runtime has been initialised in this process.
pub fn is_initialised() -> bool {
    RUNTIME.get().is_some()
}

/// ONNX Runtime's build description ("ORT Build Info: git-branch=rel-1.31.1, ...").
pub fn version_string() -> String {
    ort::info().to_string()
}

/// The folders and files tried, in order, when no explicit path is given.
pub fn library_candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        c.push(PathBuf::from(p));
    }
    for dir in [own_library_dir(), std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf))]
        .into_iter()
        .flatten()
    {
        c.push(dir.join(ORT_LIB_NAME));
        c.push(dir.join("libonnxruntime.so"));
    }
    c.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/onnxruntime/lib").join(ORT_LIB_NAME));
    c.dedup();
    c
}

fn load_library(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        // dlopen reads the file: a FIFO would block it forever, so only a regular file is tried.
        if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
            return Err(Error::RuntimeLoad(format!(
                "{}: not a regular file (missing, a directory, a FIFO or a device)",
                crate::limits::quote_path(path)
            )));
        }
        return match ort::init_from(path) {
            Ok(_) => Ok(path.to_path_buf()),
            Err(e) => Err(Error::RuntimeLoad(format!("{}: {e}", crate::limits::quote_path(path)))),
        };
    }
    let mut tried = Vec::new();
    for path in library_candidates() {
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            tried.push(format!("{} (not found)", crate::limits::quote_path(&path)));
            continue;
        }
        match ort::init_from(&path) {
            Ok(_) => return Ok(path),
            Err(e) => tried.push(format!("{} ({e})", crate::limits::quote_path(&path))),
        }
    }
    Err(Error::RuntimeLoad(format!(
        "no usable libonnxruntime {ORT_VERSION}; run `scripts/setup.sh ort`, set ORT_DYLIB_PATH, or pass the path explicitly. Tried: {}",
        tried.join("; ")
    )))
}

/// The folder that holds libmirage.so when we are loaded as a shared library (dladdr on one of our symbols).
fn own_library_dir() -> Option<PathBuf> {
    // SAFETY: Dl_info is a plain C struct of pointers and integers, for which all-zero bytes are valid.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address; info is a valid out-pointer.
    let ok = unsafe { libc::dladdr(own_library_dir as *const libc::c_void, &mut info) };
    if ok == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated path owned by the loader.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes()));
    path.parent().map(Path::to_path_buf)
}

/// Where a model is read from.
#[derive(Clone, Copy)]
pub enum ModelSource<'a> {
    /// Bytes the caller has read (and checked).
    Bytes(&'a [u8]),
    /// A file ONNX Runtime reads itself: for a model whose weights sit in external data files beside it,
    /// which ONNX Runtime finds relative to the model's path.
    File(&'a Path),
}

/// A session and the provider it really got. It derefs to the ONNX Runtime session.
///
/// A session loaded from the session cache's ORT-format model uses its bytes in place (ONNX Runtime's
/// `session.use_ort_model_bytes_directly` and `..._for_initializers`: no copy of the graph or the weights),
/// so they must outlive it. This type owns them: its fields are private (the session cannot be moved out
/// without them) and `session` is declared first, so it is dropped before `_model`.
pub struct LoadedSession {
    session: Session,
    provider: Provider,
    /// Made with CUDA graph capture on ([`RuntimeOptions::cuda_graph`]).
    graphs: bool,
    _model: Option<ModelBytes>,
}

/// The bytes of a model a session uses in place: read into memory, or the file mapped.
pub(crate) enum ModelBytes {
    Owned(Box<[u8]>),
    Mapped(crate::files::Mapped),
}

impl ModelBytes {
    fn bytes(&self) -> &[u8] {
        match self {
            ModelBytes::Owned(b) => b,
            ModelBytes::Mapped(m) => m.bytes(),
        }
    }
}

impl LoadedSession {
    pub(crate) fn new(session: Session, provider: Provider) -> LoadedSession {
        LoadedSession { session, provider, graphs: false, _model: None }
    }

    /// The provider the session really runs on.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Whether the session captures CUDA graphs: then every run names the graph it captures or replays
    /// (ONNX Runtime's run option `gpu_graph_id`; -1 for none), as [`crate::session::OnnxModel`] does.
    pub(crate) fn graphs(&self) -> bool {
        self.graphs
    }
}

impl std::ops::Deref for LoadedSession {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl std::ops::DerefMut for LoadedSession {
    fn deref_mut(&mut self) -> &mut Session {
        &mut self.session
    }
}

impl Runtime {
    /// ONNX Runtime's environment: waits for the thread making it after [`start`].
    fn env(&self) -> Result<&ort::environment::Environment> {
        let made = self.env.get_or_init(|| {
            let pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            match pending {
                Some(thread) => {
                    thread.join().unwrap_or_else(|_| Err("making ONNX Runtime's environment panicked".into()))
                }
                None => make_env(),
            }
        });
        made.as_ref().map_err(|e| Error::RuntimeLoad(e.clone()))
    }

    /// The path libonnxruntime was loaded from.
    pub fn library(&self) -> &Path {
        &self.library
    }

    pub fn options(&self) -> &RuntimeOptions {
        &self.options
    }

    /// Which providers this ONNX Runtime build offers (ORT's names).
    pub fn available_providers(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if ort::ep::TensorRT::is_available().unwrap_or(false) {
            v.push("tensorrt");
        }
        if ort::ep::CUDA::is_available().unwrap_or(false) {
            v.push("cuda");
        }
        v.push("cpu");
        v
    }

    /// Whether a session asked for on `provider` (None = the runtime's default) can only be a CPU one: CPU was
    /// asked for, or AUTO in a build that offers nothing else.
    pub fn cpu_only(&self, provider: Option<Provider>) -> bool {
        let want = provider.unwrap_or(self.options.provider);
        want == Provider::Cpu || (want == Provider::Auto && self.available_providers() == ["cpu"])
    }

    /// Creates a session from model bytes on the requested provider (None = the runtime's default),
    /// falling back to CPU unless strict. `what` names the model in log lines and errors.
    pub fn session(&self, bytes: &[u8], what: &str, provider: Option<Provider>) -> Result<LoadedSession> {
        self.session_from(ModelSource::Bytes(bytes), what, provider)
    }

    /// [`Runtime::session`] for bytes whose sha256 the caller has verified: on CPU, with a load cache folder
    /// (`digest_cache_dir`), ONNX Runtime's optimized form of the model is kept in its `sessions/` folder and
    /// loaded instead of optimizing the graph again ([`crate::session_cache`]).
    pub fn session_verified(
        &self,
        bytes: &[u8],
        sha256: &str,
        what: &str,
        provider: Option<Provider>,
    ) -> Result<LoadedSession> {
        self.session_verified_from(ModelSource::Bytes(bytes), sha256, what, provider)
    }

    /// [`Runtime::session_verified`] from bytes or from a file whose sha256 the caller has verified (or the
    /// load cache vouches for).
    pub fn session_verified_from(
        &self,
        source: ModelSource,
        sha256: &str,
        what: &str,
        provider: Option<Provider>,
    ) -> Result<LoadedSession> {
        self.session_cached(source, CacheAs { sha256, prepack: true }, what, provider)
    }

    /// [`Runtime::session_verified_from`], saying whether ONNX Runtime prepacks the model's weights, cached
    /// or not (see [`CacheAs`]).
    pub(crate) fn session_cached(
        &self,
        source: ModelSource,
        cache: CacheAs,
        what: &str,
        provider: Option<Provider>,
    ) -> Result<LoadedSession> {
        match (&self.options.digest_cache_dir, self.cpu_only(provider)) {
            (Some(dir), true) => {
                let loaded = crate::session_cache::session(self, dir, source, &cache, what)?;
                // The line every other path logs (scripts/gpu-check.sh reads the providers from it).
                log_at!(Level::Info, "{what}: session on {}", loaded.provider().name());
                Ok(loaded)
            }
            _ => self.session_from_with(source, what, provider, cache.prepack),
        }
    }

    /// A CPU session with the given graph tuning (see [`crate::session_cache`]).
    pub(crate) fn cpu_session(&self, source: ModelSource, what: &str, tune: &Tune) -> Result<LoadedSession> {
        self.try_session(source, what, Provider::Cpu, tune, false)
            .map(|s| LoadedSession::new(s, Provider::Cpu))
            .map_err(|e| cpu_error(e, what))
    }

    /// A CPU session for an already optimized ORT-format model that ONNX Runtime uses in place: no copy of
    /// its graph or weights (measured on the emoji U-Net: 54-58 ms against 65-75 ms, 9 MB less peak RSS).
    /// The returned session owns `model`.
    pub(crate) fn cpu_session_in_place(&self, model: ModelBytes, what: &str, prepack: bool) -> Result<LoadedSession> {
        let tune = Tune { preoptimized: true, no_prepack: !prepack, ..Tune::default() };
        let source = ModelSource::Bytes(model.bytes());
        let session = self.try_session(source, what, Provider::Cpu, &tune, true).map_err(|e| cpu_error(e, what))?;
        // Moving `model` moves a pointer, not the bytes ONNX Runtime refers to.
        Ok(LoadedSession { session, provider: Provider::Cpu, graphs: false, _model: Some(model) })
    }

    /// [`Runtime::session`] from bytes or from a file.
    pub fn session_from(&self, source: ModelSource, what: &str, provider: Option<Provider>) -> Result<LoadedSession> {
        self.session_from_with(source, what, provider, true)
    }

    /// [`Runtime::session_from`], saying whether ONNX Runtime prepacks the weights (see [`CacheAs`]).
    pub(crate) fn session_from_with(
        &self,
        source: ModelSource,
        what: &str,
        provider: Option<Provider>,
        prepack: bool,
    ) -> Result<LoadedSession> {
        let tune = Tune { no_prepack: !prepack, ..Tune::default() };
        let want = provider.unwrap_or(self.options.provider);
        let order: &[Provider] = match want {
            Provider::Auto => &[Provider::TensorRt, Provider::Cuda, Provider::Cpu],
            Provider::TensorRt => &[Provider::TensorRt, Provider::Cpu],
            Provider::Cuda => &[Provider::Cuda, Provider::Cpu],
            Provider::Cpu => &[Provider::Cpu],
        };
        let mut reasons = Vec::new();
        for &p in order {
            if p != Provider::Cpu && self.options.strict && want != Provider::Auto && p != want {
                continue;
            }
            if p == Provider::Cpu && self.options.strict && want != Provider::Auto && want != Provider::Cpu {
                return Err(Error::Unsupported(format!(
                    "{what}: execution provider {} unavailable and strict mode is on: {}",
                    want.name(),
                    reasons.join("; ")
                )));
            }
            // CUDA graphs where asked for; a model ONNX Runtime cannot capture (a node it leaves on the CPU,
            // control flow) is refused at session creation, and then made again without.
            // Only on CUDA: mirage captures one graph per batch shape, told apart by `gpu_graph_id`, and whether
            // TensorRT's provider keeps graphs apart by that id is not documented (not tried on a GPU yet).
            let mut graphs = self.options.cuda_graph && p == Provider::Cuda;
            let mut made = self.try_session(source, what, p, &Tune { cuda_graph: graphs, ..tune.clone() }, false);
            if graphs {
                if let Err(TryError::Unavailable(r)) = &made {
                    log_at!(Level::Warn, "{what}: no CUDA graphs on {} ({r}); trying without", p.name());
                    graphs = false;
                    made = self.try_session(source, what, p, &tune, false);
                }
            }
            match made {
                Ok(session) => {
                    if p != want && want != Provider::Auto {
                        log_at!(
                            Level::Warn,
                            "{what}: execution provider {} unavailable ({}); running on {}",
                            want.name(),
                            reasons.join("; "),
                            p.name()
                        );
                    }
                    log_at!(
                        Level::Info,
                        "{what}: session on {}{}",
                        p.name(),
                        if graphs { " (CUDA graphs)" } else { "" }
                    );
                    return Ok(LoadedSession { graphs, ..LoadedSession::new(session, p) });
                }
                Err(TryError::Unavailable(r)) => reasons.push(format!("{}: {r}", p.name())),
                Err(TryError::Model(e)) => return Err(e),
            }
        }
        Err(Error::Unsupported(format!("{what}: no execution provider could run it: {}", reasons.join("; "))))
    }

    fn try_session(
        &self,
        source: ModelSource,
        what: &str,
        p: Provider,
        tune: &Tune,
        in_place: bool,
    ) -> std::result::Result<Session, TryError> {
        let be = |e: ort::Error<SessionBuilder>| {
            TryError::Model(Error::InvalidModel(format!("{what}: {}", crate::limits::clip(&e.to_string()))))
        };
        let mut b = Session::builder(self.env().map_err(TryError::Model)?)
            .map_err(|e| TryError::Model(Error::Inference(e.to_string())))?;
        let level = if tune.preoptimized {
            GraphOptimizationLevel::Disable
        } else if tune.basic {
            GraphOptimizationLevel::Level1
        } else {
            GraphOptimizationLevel::Level3
        };
        b = b.with_optimization_level(level).map_err(be)?;
        if let Some(prefix) = &tune.profile_to {
            b = b.with_profiling(prefix).map_err(be)?;
        }
        if let Some(path) = &tune.save_to {
            b = b.with_config_entry("session.save_model_format", "ORT").map_err(be)?;
            b = b.with_optimized_model_path(path).map_err(be)?;
        }
        if self.options.intra_threads > 0 {
            b = b.with_intra_threads(self.options.intra_threads).map_err(be)?;
        }
        // The intra-op threads sleep when their work runs out instead of spinning (ONNX Runtime's default).
        // Every session has its own pool, and while a set loads its sessions in parallel the spinning threads
        // of the finished ones took the cores from the others: measured on this 2-core machine, the int8
        // emoji set's start went from 0.49 to 0.31 s of wall time (0.50 to 0.21 s of user time) and `mirage
        // bench`'s open from 516 to 380 ms, while its warm steps stayed within noise (batch 1 5.19 -> 5.12 ms,
        // batch 16 35.6 -> 32.1 ms). A host's own threads also keep the cores between steps.
        b = b.with_intra_op_spinning(false).map_err(be)?;
        if in_place {
            // Only for `cpu_session_in_place`, whose caller keeps the bytes alive as long as the session.
            for key in ["session.use_ort_model_bytes_directly", "session.use_ort_model_bytes_for_initializers"] {
                b = b.with_config_entry(key, "1").map_err(be)?;
            }
        }
        if tune.no_prepack {
            b = b.with_config_entry("session.disable_prepacking", "1").map_err(be)?;
        }
        match p {
            Provider::TensorRt => {
                if !ort::ep::TensorRT::is_available().unwrap_or(false) {
                    return Err(TryError::Unavailable("not in this ONNX Runtime build".into()));
                }
                let mut ep = ort::ep::TensorRT::default().with_fp16(self.options.tensorrt_fp16);
                if let Some(dir) = &self.options.tensorrt_cache_dir {
                    let d = dir.display().to_string();
                    ep = ep
                        .with_engine_cache(true)
                        .with_engine_cache_path(&d)
                        .with_timing_cache(true)
                        .with_timing_cache_path(&d);
                }
                ep.register(&mut b).map_err(|e| TryError::Unavailable(e.to_string()))?;
            }
            Provider::Cuda => {
                if !ort::ep::CUDA::is_available().unwrap_or(false) {
                    return Err(TryError::Unavailable("not in this ONNX Runtime build".into()));
                }
                ort::ep::CUDA::default()
                    .with_cuda_graph(tune.cuda_graph)
                    .register(&mut b)
                    .map_err(|e| TryError::Unavailable(e.to_string()))?;
            }
            Provider::Cpu | Provider::Auto => {}
        }
        let committed = match source {
            ModelSource::Bytes(bytes) => b.commit_from_memory(bytes),
            ModelSource::File(path) => b.commit_from_file(path),
        };
        committed.map_err(|e| {
            let msg = crate::limits::clip(&e.to_string());
            if p == Provider::Cpu {
                TryError::Model(Error::InvalidModel(format!("{what}: ONNX Runtime rejected the model: {msg}")))
            } else {
                TryError::Unavailable(msg)
            }
        })
    }
}

/// A model whose session may come from the session cache ([`crate::session_cache`]): the sha256 its
/// contents were verified against, and whether ONNX Runtime prepacks its weights, cached or not. Prepacking
/// copies matrix weights into ONNX Runtime's own layout when the session is made. The text encoder skips it:
/// its cached model is mapped and used in place, and the copy was most of its 90 MB of peak RSS and a tenth
/// of a second at start, while skipping it measured no slower per prompt (9-10.6 ms against 10.2-10.8 ms,
/// `mirage bench`). It skips it on every path (the products come out summed in a different order without
/// it), so that the same seed gives the same image with and without the caches. The U-Net and VAE keep it.
#[derive(Clone, Copy)]
pub(crate) struct CacheAs<'a> {
    pub sha256: &'a str,
    pub prepack: bool,
}

/// How a session's graph is prepared: optimized now (the default), already optimized (an ORT-format model
/// from the session cache), and whether to save the optimized form; for measuring (`crate::bench`), basic
/// optimizations only (no layout rewrites or fusions: the graph keeps its own operators and shapes) and a
/// profile written to files starting with `profile_to`.
#[derive(Default, Clone)]
pub(crate) struct Tune {
    pub preoptimized: bool,
    /// ONNX Runtime's `session.disable_prepacking`: weights stay where they are (for a model used in place).
    pub no_prepack: bool,
    pub save_to: Option<PathBuf>,
    pub basic: bool,
    pub profile_to: Option<PathBuf>,
    /// On CUDA: capture CUDA graphs.
    pub cuda_graph: bool,
}

enum TryError {
    Unavailable(String),
    Model(Error),
}

fn cpu_error(e: TryError, what: &str) -> Error {
    match e {
        TryError::Model(e) => e,
        TryError::Unavailable(r) => Error::Unsupported(format!("{what}: {r}")),
    }
}
