//! One error type for the whole crate. The C API maps each variant to one `MirageStatus` value
//! (see `capi::status`); [`Error::detail`], the text without the kind, becomes the message of
//! `mirage_last_error`.

use std::path::PathBuf;

/// Everything that can go wrong in mirage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A caller passed something unusable: NULL, a wrong size, a NaN, a value out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The ONNX Runtime shared library could not be found or loaded, or is of the wrong version.
    #[error("ONNX Runtime could not be loaded: {0}")]
    RuntimeLoad(String),

    /// The runtime was already initialised with other options (ONNX Runtime allows one environment per process).
    #[error("runtime already initialised: {0}")]
    RuntimeAlreadyInitialised(String),

    /// A model directory, manifest or model file is missing.
    #[error("model file not found: {}: {reason}", crate::limits::quote_path(.path))]
    ModelNotFound { path: PathBuf, reason: String },

    /// A manifest or model file exists but is unusable: bad JSON, wrong format version, wrong shapes,
    /// sha256 mismatch, a file ONNX Runtime rejects.
    #[error("invalid model: {0}")]
    InvalidModel(String),

    /// The model set lacks the part an operation needs (e.g. decode on a set without a VAE).
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// ONNX Runtime failed while running a model.
    #[error("inference failed: {0}")]
    Inference(String),

    /// Reading or writing a file failed.
    #[error("i/o error on {}: {source}", crate::limits::quote_path(.path))]
    Io { path: PathBuf, source: std::io::Error },

    /// An image could not be decoded or encoded.
    #[error("image error: {0}")]
    Image(String),

    /// The operation was cancelled by the host.
    #[error("cancelled")]
    Cancelled,

    /// A bounded queue is full (a context's job queue): try again once some of its work has ended.
    #[error("busy: {0}")]
    Busy(String),
}

/// `Result` with mirage's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// Shorthand for [`Error::InvalidModel`].
    pub fn model(msg: impl Into<String>) -> Self {
        Error::InvalidModel(msg.into())
    }

    /// An invalid-argument message with the caller's spelling of the field in front: the pipeline's and the
    /// runtime's checks start their messages with the field's name ("steps is 0, ..."), and the C API says
    /// "params->steps is 0, ...", the CLI "--steps is 0, ...". Other errors pass unchanged.
    pub fn prefixed(self, prefix: &str) -> Self {
        match self {
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("{prefix}{m}")),
            other => other,
        }
    }

    /// The message without the kind in front ("params->steps is 0, ..." rather than "invalid argument:
    /// params->steps is 0, ..."): what `mirage_last_error` returns, beside a status that already names the
    /// kind (`mirage_status_str`), so that a host printing both says it once.
    pub fn detail(&self) -> String {
        match self {
            Error::InvalidArgument(m)
            | Error::RuntimeLoad(m)
            | Error::RuntimeAlreadyInitialised(m)
            | Error::InvalidModel(m)
            | Error::Unsupported(m)
            | Error::Inference(m)
            | Error::Image(m)
            | Error::Busy(m) => m.clone(),
            Error::ModelNotFound { path, reason } => format!("{}: {reason}", crate::limits::quote_path(path)),
            Error::Io { path, source } => format!("{}: {source}", crate::limits::quote_path(path)),
            Error::Cancelled => "the host cancelled the operation".to_string(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

impl From<ort::Error> for Error {
    fn from(e: ort::Error) -> Self {
        // ONNX Runtime's messages name nodes and shapes of the model, which a hostile model can make huge.
        Error::Inference(crate::limits::clip(&e.to_string()))
    }
}
