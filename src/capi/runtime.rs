//! Process-wide set-up: where ONNX Runtime is, the default execution provider, and the log callback.

use std::ffi::{c_char, c_void, CString};
use std::path::PathBuf;
use std::sync::Arc;

use super::boundary::{self, init_params, read_params, utf8};
use super::status::MirageStatus;
use crate::error::{Error, Result};
use crate::log::{self, Level};
use crate::runtime::{self, Provider, RuntimeOptions};

/// An execution provider (the hardware backend ONNX Runtime runs a model on).
pub type MirageProvider = u32;

/// Whatever the level above says: for a context, the runtime's provider; for the runtime, AUTO.
pub const MIRAGE_PROVIDER_DEFAULT: MirageProvider = 0;
/// The fastest available: TensorRT, then CUDA, then CPU.
pub const MIRAGE_PROVIDER_AUTO: MirageProvider = 1;
/// NVIDIA TensorRT (falls back to CPU unless strict).
pub const MIRAGE_PROVIDER_TENSORRT: MirageProvider = 2;
/// NVIDIA CUDA (falls back to CPU unless strict).
pub const MIRAGE_PROVIDER_CUDA: MirageProvider = 3;
/// The CPU; always available.
pub const MIRAGE_PROVIDER_CPU: MirageProvider = 4;

/// The provider of a C value; `None` for `MIRAGE_PROVIDER_DEFAULT`.
pub(crate) fn provider_of(p: MirageProvider, name: &str) -> Result<Option<Provider>> {
    Ok(Some(match p {
        MIRAGE_PROVIDER_DEFAULT => return Ok(None),
        MIRAGE_PROVIDER_AUTO => Provider::Auto,
        MIRAGE_PROVIDER_TENSORRT => Provider::TensorRt,
        MIRAGE_PROVIDER_CUDA => Provider::Cuda,
        MIRAGE_PROVIDER_CPU => Provider::Cpu,
        other => return Err(Error::invalid(format!("{name} is {other}, not a MIRAGE_PROVIDER_* value"))),
    }))
}

/// The C value of a provider.
pub(crate) fn provider_value(p: Provider) -> MirageProvider {
    match p {
        Provider::Auto => MIRAGE_PROVIDER_AUTO,
        Provider::TensorRt => MIRAGE_PROVIDER_TENSORRT,
        Provider::Cuda => MIRAGE_PROVIDER_CUDA,
        Provider::Cpu => MIRAGE_PROVIDER_CPU,
    }
}

/// The name of a provider ("default", "auto", "tensorrt", "cuda", "cpu"), or "unknown". Static: do not free.
#[no_mangle]
pub extern "C" fn mirage_provider_name(provider: MirageProvider) -> *const c_char {
    boundary::run_or(c"unknown".as_ptr(), || match provider {
        MIRAGE_PROVIDER_DEFAULT => c"default".as_ptr(),
        MIRAGE_PROVIDER_AUTO => c"auto".as_ptr(),
        MIRAGE_PROVIDER_TENSORRT => c"tensorrt".as_ptr(),
        MIRAGE_PROVIDER_CUDA => c"cuda".as_ptr(),
        MIRAGE_PROVIDER_CPU => c"cpu".as_ptr(),
        _ => c"unknown".as_ptr(),
    })
}

/// Severity of a log line.
pub type MirageLogLevel = u32;

/// Detail for debugging (includes ONNX Runtime's informational lines).
pub const MIRAGE_LOG_DEBUG: MirageLogLevel = 0;
/// Milestones: the library loaded, the provider each session got.
pub const MIRAGE_LOG_INFO: MirageLogLevel = 1;
/// Something the host should know: e.g. a provider fell back to CPU.
pub const MIRAGE_LOG_WARN: MirageLogLevel = 2;
/// A failure (also returned as a status).
pub const MIRAGE_LOG_ERROR: MirageLogLevel = 3;

// The Rust levels carry the C values (log.rs says so); this keeps the two from drifting apart.
const _: () = assert!(
    Level::Debug as u32 == MIRAGE_LOG_DEBUG
        && Level::Info as u32 == MIRAGE_LOG_INFO
        && Level::Warn as u32 == MIRAGE_LOG_WARN
        && Level::Error as u32 == MIRAGE_LOG_ERROR
);

fn level_of(l: MirageLogLevel) -> Result<Level> {
    Ok(match l {
        MIRAGE_LOG_DEBUG => Level::Debug,
        MIRAGE_LOG_INFO => Level::Info,
        MIRAGE_LOG_WARN => Level::Warn,
        MIRAGE_LOG_ERROR => Level::Error,
        other => return Err(Error::invalid(format!("options->log_level is {other}, not a MIRAGE_LOG_* value"))),
    })
}

/// Receives one log line. `message` is UTF-8, NUL-terminated and valid only during the call; `user_data`
/// is the pointer given with the callback.
///
/// Called from whichever thread logs: the thread inside a mirage call, or an ONNX Runtime worker thread.
/// So it must be thread-safe, return quickly, not call back into mirage and not throw (C++) or longjmp.
pub type MirageLogCallback =
    Option<unsafe extern "C" fn(level: MirageLogLevel, message: *const c_char, user_data: *mut c_void)>;

/// How ONNX Runtime is set up for this process. Fill it with `mirage_runtime_options_init`, change the
/// fields you need, pass it to `mirage_runtime_init`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MirageRuntimeOptions {
    /// sizeof(MirageRuntimeOptions) as the host was compiled; set by `mirage_runtime_options_init`.
    pub struct_size: usize,
    /// Path of libonnxruntime (UTF-8), or NULL to search: ORT_DYLIB_PATH, then beside libmirage and the
    /// executable, then the project's `.deps/onnxruntime/lib`. Copied; need not outlive the call.
    pub ort_library_path: *const c_char,
    /// Default provider of every session (MIRAGE_PROVIDER_DEFAULT = AUTO).
    pub provider: MirageProvider,
    /// Fail with MIRAGE_ERR_UNSUPPORTED instead of falling back to CPU when the provider is unavailable.
    pub strict: bool,
    /// Threads per session for intra-op parallelism, 0 to MIRAGE_MAX_THREADS; 0 = ONNX Runtime's default (one per core).
    /// More threads than cores only slows every call down; larger values are refused.
    pub intra_threads: u32,
    /// Receives the library's log lines (and ONNX Runtime's); NULL = warnings and errors to stderr.
    pub log_callback: MirageLogCallback,
    /// Passed back unchanged to every `log_callback` call; mirage never dereferences it.
    pub log_user_data: *mut c_void,
    /// The lowest level delivered (default MIRAGE_LOG_WARN).
    pub log_level: MirageLogLevel,
    /// TensorRT: build fp16 engines.
    pub tensorrt_fp16: bool,
    /// TensorRT: folder (UTF-8) for the engine and timing caches, or NULL for none (engines are rebuilt
    /// in every process). Copied; need not outlive the call.
    pub tensorrt_cache_dir: *const c_char,
    /// Folder (UTF-8; made when first needed) of a cache of verified model-file digests, or NULL (the
    /// default) for none: every load then hashes every file. With it, a file whose device, inode, size,
    /// mtime and ctime are unchanged since its digest was verified is not hashed again (the text encoder's
    /// 90 MB cost about 0.1 s a start); a file changed in any way, even with its mtime restored, is hashed
    /// again. On CPU the folder's `sessions/` also keeps ONNX Runtime's optimized form of each verified model
    /// (ORT format, keyed by the model's sha256, ONNX Runtime's version and this CPU; about 100 ms less to
    /// create the emoji U-Net's session; the text encoder's is mapped and used in place: its session about
    /// 0.1 s instead of 0.25 s), at most 1 GiB of them. A damaged or unwritable cache only costs the hashing
    /// or the optimizing, never a load. The folder is the library's: do not truncate its files while a
    /// process uses them. Copied; need not outlive the call.
    pub digest_cache_dir: *const c_char,
    /// Keep encoded prompts in `digest_cache_dir`'s `prompts/` (ignored without that folder; default false).
    /// A prompt drawn before, with the same text encoder, tokenizer, context length, provider, ONNX Runtime
    /// and CPU, is taken from there instead of being encoded, and a text-to-image context creates its text
    /// encoder's session only when a prompt is not there (on the CPU; a context on a GPU provider makes it at
    /// once): a host with a fixed set of prompts never loads the encoder (on CPU about three quarters of a
    /// text-to-image set's start). The encoder's files are still checked when the context is created. Entries are embeddings of the prompts (not their text), damaged
    /// ones are never used, at most 2048 are kept. Added in version 3 of this struct.
    pub prompt_cache: bool,
    /// MIRAGE_RUNTIME_* bits, 0 by default; other bits are refused. Added in version 4 of this struct.
    /// MIRAGE_RUNTIME_CUDA_GRAPH: on CUDA, the U-Net's steps are captured as a CUDA graph per batch shape
    /// (at that shape's first steps) and replayed after; its inputs and outputs stay in tensors on the
    /// device. A model ONNX Runtime cannot capture runs without graphs (a warning is logged). No effect on
    /// TensorRT (not yet tried there) or the CPU.
    pub flags: u64,
}

/// `MirageRuntimeOptions::flags`: capture and replay CUDA graphs of the U-Net's steps (CUDA provider).
pub const MIRAGE_RUNTIME_CUDA_GRAPH: u64 = 1;

/// Fills `options` with the defaults (search for ONNX Runtime, AUTO provider, not strict, ORT's thread
/// count, log warnings to stderr, no TensorRT cache, no digest cache, no prompt cache). Pass `sizeof(MirageRuntimeOptions)` as `struct_size`: the library
/// writes exactly that many bytes, zeroing what it does not know, so a host built against an older or
/// newer header is handled (see `mirage_runtime_init`).
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT when `options` is NULL or `struct_size` is smaller than this
/// library's struct and not the size of an earlier version of it.
#[no_mangle]
pub unsafe extern "C" fn mirage_runtime_options_init(
    options: *mut MirageRuntimeOptions,
    struct_size: usize,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: the caller promises `options` holds `struct_size` writable bytes.
        unsafe { init_params(options, struct_size, "options") }
    })
}

/// A host callback with its user data, as the process-wide log sink.
struct HostLog {
    callback: unsafe extern "C" fn(MirageLogLevel, *const c_char, *mut c_void),
    user_data: *mut c_void,
}

// SAFETY: the pointer is the host's, passed back untouched; the header requires the callback to be callable
// from any thread with it.
unsafe impl Send for HostLog {}
// SAFETY: as for Send: mirage only ever passes the pointer back to the host's thread-safe callback.
unsafe impl Sync for HostLog {}

impl HostLog {
    fn deliver(&self, level: Level, message: &str) {
        let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
        // SAFETY: a valid NUL-terminated string that outlives the call; the host vouches for the callback.
        unsafe { (self.callback)(level as MirageLogLevel, text.as_ptr(), self.user_data) }
    }
}

/// Sets up the process-wide runtime: loads ONNX Runtime and installs the log callback. Optional: contexts
/// created without it use the defaults of `mirage_runtime_options_init`. Call it once, before the first
/// context, from one thread. Calling it again with the same runtime options (`ort_library_path`, `provider`,
/// `strict`, `intra_threads`, `tensorrt_fp16`, `tensorrt_cache_dir`, `flags`, ...) succeeds and replaces the log callback,
/// its user data and the level (a NULL callback restores stderr: how a host that unloads the code of its
/// callback, e.g. a scripting engine reloading, detaches it first); with other runtime options it fails with
/// MIRAGE_ERR_RUNTIME_ALREADY_INITIALISED (ONNX Runtime can be loaded once per process; a context created
/// first loads it with the defaults).
///
/// `options` is read during the call and not kept (its strings are copied); `log_user_data` is kept and
/// handed to `log_callback` until the process ends or another successful `mirage_runtime_init` replaces it.
///
/// `options->struct_size` (the rule of every params struct): the `sizeof` of an earlier version of the
/// struct (a host built against an older header) reads that version's fields and takes the defaults for the
/// fields added since; another size below this library's is refused; larger (a host built against a newer
/// header) is accepted only when every byte beyond the fields this library knows is zero, so a field the
/// host set is never silently ignored; over 4096 (an uninitialised field) is refused.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `options`, bad struct_size, provider or level values,
/// intra_threads over MIRAGE_MAX_THREADS, a path that is not UTF-8), MIRAGE_ERR_RUNTIME_LOAD, MIRAGE_ERR_RUNTIME_ALREADY_INITIALISED.
#[no_mangle]
pub unsafe extern "C" fn mirage_runtime_init(options: *const MirageRuntimeOptions) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: the caller promises a readable, initialised struct of `struct_size` bytes.
        let o = unsafe { read_params(options, "options") }?;
        let path = |p: *const c_char, name: &str| -> Result<Option<PathBuf>> {
            // SAFETY: a NUL-terminated string when not NULL (caller's promise).
            Ok(if p.is_null() { None } else { Some(PathBuf::from(unsafe { utf8(p, name) }?)) })
        };
        let rt = RuntimeOptions {
            ort_library: path(o.ort_library_path, "options->ort_library_path")?,
            provider: provider_of(o.provider, "options->provider")?.unwrap_or(Provider::Auto),
            strict: o.strict,
            intra_threads: o.intra_threads as usize,
            tensorrt_fp16: o.tensorrt_fp16,
            tensorrt_cache_dir: path(o.tensorrt_cache_dir, "options->tensorrt_cache_dir")?,
            digest_cache_dir: path(o.digest_cache_dir, "options->digest_cache_dir")?,
            prompt_cache: o.prompt_cache,
            cuda_graph: o.flags & MIRAGE_RUNTIME_CUDA_GRAPH != 0,
        };
        if o.flags & !MIRAGE_RUNTIME_CUDA_GRAPH != 0 {
            return Err(Error::invalid(format!(
                "options->flags: unknown bits {:#x}",
                o.flags & !MIRAGE_RUNTIME_CUDA_GRAPH
            )));
        }
        rt.validate().map_err(|e| e.prefixed("options->"))?;
        let level = level_of(o.log_level)?;
        let sink: Option<log::Sink> = o.log_callback.map(|callback| {
            let host = HostLog { callback, user_data: o.log_user_data };
            Arc::new(move |level: Level, msg: &str| host.deliver(level, msg)) as log::Sink
        });
        // The sink goes in before ONNX Runtime loads so that the host sees the loading lines too; if the
        // load fails, the default sink (stderr, warnings) is put back and the call has changed nothing.
        let first = !runtime::is_initialised();
        if first {
            log::set_sink(sink.clone(), level);
        }
        match runtime::init(&rt) {
            Ok(_) => {
                if !first {
                    log::set_sink(sink, level);
                }
                Ok(())
            }
            Err(e) => {
                if first {
                    log::set_sink(None, Level::Warn);
                }
                Err(e)
            }
        }
    })
}

impl boundary::Params for MirageRuntimeOptions {
    /// Version 1 (0.1.0 until the job API): up to `tensorrt_cache_dir`; version 2: up to `digest_cache_dir`;
    /// version 3: up to `prompt_cache`.
    const OLDER: &'static [(usize, usize)] = &[
        boundary::older_version!(MirageRuntimeOptions, tensorrt_cache_dir, *const c_char),
        boundary::older_version!(MirageRuntimeOptions, digest_cache_dir, *const c_char),
        boundary::older_version!(MirageRuntimeOptions, prompt_cache, bool),
    ];
    fn defaults(struct_size: usize) -> Self {
        MirageRuntimeOptions {
            struct_size,
            ort_library_path: std::ptr::null(),
            provider: MIRAGE_PROVIDER_DEFAULT,
            strict: false,
            intra_threads: 0,
            log_callback: None,
            log_user_data: std::ptr::null_mut(),
            log_level: MIRAGE_LOG_WARN,
            tensorrt_fp16: false,
            tensorrt_cache_dir: std::ptr::null(),
            digest_cache_dir: std::ptr::null(),
            prompt_cache: false,
            flags: 0,
        }
    }
}
