//! One ONNX Runtime session the way every model of mirage uses it (the VAE halves, the U-Net, the text
//! encoder): created from bytes whose sha256 the caller has checked, its input and output names compared
//! with what the set declares, and run behind a mutex.

use std::borrow::Cow;
use std::sync::Mutex;

use ort::session::SessionInputValue;
use ort::value::Tensor;

use crate::error::{Error, Result};
use crate::runtime::{self, Provider};

/// One input of a run, in the order the model declares its inputs.
pub(crate) enum Feed {
    F32 { shape: Vec<i64>, data: Vec<f32> },
    I64 { shape: Vec<i64>, data: Vec<i64> },
}

/// Declared tensor shapes, one per input or output (-1 = any size).
pub(crate) type Shapes<'a> = &'a [&'a [i64]];

/// One declared input or output of a model: its name, element type (None: not a tensor) and shape.
#[derive(Debug, Clone)]
pub(crate) struct TensorInfo {
    pub name: String,
    pub ty: Option<ort::value::TensorElementType>,
    pub shape: Vec<i64>,
}

/// One f32 output of a run.
pub(crate) struct Output {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A session with its declared interface. ONNX Runtime's `run` needs `&mut`, so the session sits behind
/// its own mutex: calls from several threads are safe and run one after the other on this model.
pub(crate) struct OnnxModel {
    session: Mutex<runtime::LoadedSession>,
    provider: Provider,
    /// The element type of each declared input, in order: feeds are converted to it (f32 -> f16 for a
    /// float16 export, i64 -> i32 for an int32 token input).
    input_types: Vec<ort::value::TensorElementType>,
    /// How messages name the model, e.g. "unet (unet.onnx)".
    what: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl OnnxModel {
    /// Creates the session on `provider` (None = the runtime's default) and refuses a model whose input or
    /// output names differ from `inputs` / `outputs`, as declared by `declared_by` (e.g. "manifest.json"):
    /// a file that matches its sha256 but not its declared interface was exported wrongly, and is better
    /// refused here than failing obscurely at its first run. With `shapes` (inputs, then outputs; -1 = any
    /// size) every declared tensor must also be f32 of that rank, with each dimension the model fixes equal to
    /// the declared one (a model that fixes what is declared dynamic, e.g. a batch of 1, is refused too).
    /// The session of `source` (bytes, or a file ONNX Runtime reads itself, whose contents the caller vouches
    /// for), as [`OnnxModel::create_verified`] makes it: with `cache` (the digest the contents were verified
    /// against), through the session cache.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_from(
        source: runtime::ModelSource,
        cache: Option<runtime::CacheAs>,
        what: String,
        provider: Option<Provider>,
        inputs: Vec<String>,
        outputs: Vec<String>,
        shapes: Option<(Shapes, Shapes)>,
        declared_by: &str,
    ) -> Result<OnnxModel> {
        let rt = runtime::global()?;
        let loaded = match cache {
            Some(cache) => rt.session_cached(source, cache, &what, provider)?,
            None => rt.session_from(source, &what, provider)?,
        };
        Self::checked(loaded, what, Some((inputs, outputs)), shapes, declared_by)
    }

    /// With `sha256`, the digest the caller verified the bytes against, their optimized graph may come from the
    /// session cache ([`crate::session_cache`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_verified(
        bytes: &[u8],
        sha256: Option<&str>,
        what: String,
        provider: Option<Provider>,
        inputs: Vec<String>,
        outputs: Vec<String>,
        shapes: Option<(Shapes, Shapes)>,
        declared_by: &str,
    ) -> Result<OnnxModel> {
        let rt = runtime::global()?;
        let loaded = match sha256 {
            Some(sha) => rt.session_verified(bytes, sha, &what, provider)?,
            None => rt.session(bytes, &what, provider)?,
        };
        Self::checked(loaded, what, Some((inputs, outputs)), shapes, declared_by)
    }

    /// The model of `loaded`, its names checked against `names` (None: the model's own are taken).
    fn checked(
        loaded: runtime::LoadedSession,
        what: String,
        declared: Option<(Vec<String>, Vec<String>)>,
        shapes: Option<(Shapes, Shapes)>,
        declared_by: &str,
    ) -> Result<OnnxModel> {
        let names = |o: &[ort::value::Outlet]| o.iter().map(|x| x.name().to_string()).collect::<Vec<_>>();
        let (got_in, got_out) = (names(loaded.inputs()), names(loaded.outputs()));
        let (inputs, outputs) = declared.unwrap_or_else(|| (got_in.clone(), got_out.clone()));
        if got_in != inputs || got_out != outputs {
            // Names come from the files: clipped, a hostile model or manifest may make them huge.
            return Err(Error::model(crate::limits::clip(&format!(
                "{what}: the model's inputs {got_in:?} / outputs {got_out:?} differ from {declared_by}'s {inputs:?} / {outputs:?}"
            ))));
        }
        if let Some((want_in, want_out)) = shapes {
            let outlets = loaded.inputs().iter().zip(want_in).chain(loaded.outputs().iter().zip(want_out));
            for (outlet, want) in outlets {
                let ok = match outlet.dtype() {
                    ort::value::ValueType::Tensor { ty: ort::value::TensorElementType::Float32, shape, .. } => {
                        shape.len() == want.len()
                            && shape.iter().zip(want.iter()).all(|(&got, &w)| got == -1 || got == w)
                    }
                    _ => false,
                };
                if !ok {
                    return Err(Error::model(crate::limits::clip(&format!(
                        "{what}: the model's {:?} is {:?}; {declared_by} declares an f32 tensor of shape {want:?} \
                         (-1 = any size)",
                        outlet.name(),
                        outlet.dtype()
                    ))));
                }
            }
        }
        let input_types = loaded
            .inputs()
            .iter()
            .map(|o| match o.dtype() {
                ort::value::ValueType::Tensor { ty, .. } => *ty,
                _ => ort::value::TensorElementType::Undefined,
            })
            .collect();
        Ok(OnnxModel { provider: loaded.provider(), session: Mutex::new(loaded), input_types, what, inputs, outputs })
    }

    /// Name, element type and shape (-1 = dynamic) of each input, then of each output, as the model declares
    /// them (for interfaces that are read from the model, not from a manifest: diffusers folders).
    pub(crate) fn interface(&self) -> (Vec<TensorInfo>, Vec<TensorInfo>) {
        let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let info = |o: &ort::value::Outlet| {
            let (ty, shape) = match o.dtype() {
                ort::value::ValueType::Tensor { ty, shape, .. } => (Some(*ty), shape.iter().copied().collect()),
                _ => (None, Vec::new()),
            };
            TensorInfo { name: o.name().to_string(), ty, shape }
        };
        (session.inputs().iter().map(info).collect(), session.outputs().iter().map(info).collect())
    }

    /// A session whose interface is the model's own (its declared input and output names, in order): for
    /// models described by the model itself rather than a manifest (diffusers folders); the caller checks
    /// the interface ([`OnnxModel::interface`]).
    pub(crate) fn create_as_declared(
        source: runtime::ModelSource,
        what: String,
        provider: Option<Provider>,
    ) -> Result<OnnxModel> {
        let loaded = runtime::global()?.session_from(source, &what, provider)?;
        Self::checked(loaded, what, None, None, "the model")
    }

    /// The execution provider the session really got.
    pub(crate) fn provider(&self) -> Provider {
        self.provider
    }

    /// Runs the model on `feeds` (one per declared input, in order); returns every declared output in order.
    pub(crate) fn run(&self, feeds: Vec<Feed>) -> Result<Vec<Output>> {
        if feeds.len() != self.inputs.len() {
            return Err(Error::Inference(format!(
                "{}: {} inputs given, {} expected",
                self.what,
                feeds.len(),
                self.inputs.len()
            )));
        }
        let mut feed: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(feeds.len());
        for ((f, name), &ty) in feeds.into_iter().zip(&self.inputs).zip(&self.input_types) {
            use ort::value::TensorElementType as T;
            let value: SessionInputValue<'_> = match (f, ty) {
                (Feed::F32 { shape, data }, T::Float16) => {
                    let data: Vec<half::f16> = data.into_iter().map(half::f16::from_f32).collect();
                    Tensor::from_array((shape, data))?.into()
                }
                (Feed::F32 { shape, data }, T::Int64) => {
                    // A timestep declared int64 (optimum's U-Nets): numpy's astype, truncation toward zero.
                    let data: Vec<i64> = data.into_iter().map(|v| v as i64).collect();
                    Tensor::from_array((shape, data))?.into()
                }
                (Feed::F32 { shape, data }, _) => Tensor::from_array((shape, data))?.into(),
                (Feed::I64 { shape, data }, T::Int32) => {
                    let data = data
                        .into_iter()
                        .map(|v| {
                            i32::try_from(v).map_err(|_| Error::invalid(format!("{name}: {v} does not fit in int32")))
                        })
                        .collect::<Result<Vec<i32>>>()?;
                    Tensor::from_array((shape, data))?.into()
                }
                (Feed::I64 { shape, data }, _) => Tensor::from_array((shape, data))?.into(),
            };
            feed.push((name.as_str().into(), value));
        }
        // A panic while the lock was held leaves a session ONNX Runtime still considers valid.
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session.run(feed)?;
        self.outputs
            .iter()
            .map(|name| {
                let value =
                    outputs.get(name).ok_or_else(|| Error::Inference(format!("{}: no output {name:?}", self.what)))?;
                let (shape, data) = match value.try_extract_tensor::<f32>() {
                    Ok((shape, data)) => (shape, data.to_vec()),
                    Err(_) => {
                        // A float16 export's outputs, widened.
                        let (shape, data) = value.try_extract_tensor::<half::f16>()?;
                        (shape, data.iter().map(|v| v.to_f32()).collect())
                    }
                };
                Ok(Output { shape: shape.iter().map(|&d| d.max(0) as usize).collect(), data })
            })
            .collect()
    }
}
