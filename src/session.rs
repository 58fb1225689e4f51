//! One ONNX Runtime session the way every model of mirage uses it (the VAE halves, the U-Net, the text
//! encoder): created from bytes whose sha256 the caller has checked, its input and output names compared
//! with what the set declares, and run behind a mutex.

use std::borrow::Cow;
use std::sync::Mutex;

use ort::session::SessionInputValue;
use ort::value::{DynTensor, Tensor, TensorElementType};

use crate::error::{Error, Result};
use crate::runtime::{self, Provider};

/// One input of a run, in the order the model declares its inputs.
#[derive(Clone, PartialEq)]
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
    state: Mutex<State>,
    provider: Provider,
    /// The session captures CUDA graphs ([`runtime::LoadedSession::graphs`]): runs through a binding replay
    /// one graph per shape, every other run skips them.
    graphs: bool,
    /// The element type of each declared input, in order: feeds are converted to it (f32 -> f16 for a
    /// float16 export, i64 -> i32 for an int32 token input).
    input_types: Vec<ort::value::TensorElementType>,
    /// The element type of each declared output (what a bound output is allocated as).
    output_types: Vec<ort::value::TensorElementType>,
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
    ///
    /// `source`: bytes, or a file ONNX Runtime reads itself, whose contents the caller vouches for. With `cache`
    /// (the digest the contents were verified against) the optimized graph may come from the session cache
    /// ([`crate::session_cache`]).
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
        let types = |outlets: &[ort::value::Outlet]| {
            outlets
                .iter()
                .map(|o| match o.dtype() {
                    ort::value::ValueType::Tensor { ty, .. } => *ty,
                    _ => ort::value::TensorElementType::Undefined,
                })
                .collect()
        };
        let (input_types, output_types) = (types(loaded.inputs()), types(loaded.outputs()));
        Ok(OnnxModel {
            provider: loaded.provider(),
            graphs: loaded.graphs(),
            state: Mutex::new(State { bound: Vec::new(), bind_failed: false, session: loaded }),
            input_types,
            output_types,
            what,
            inputs,
            outputs,
        })
    }

    /// Name, element type and shape (-1 = dynamic) of each input, then of each output, as the model declares
    /// them (for interfaces that are read from the model, not from a manifest: diffusers folders).
    pub(crate) fn interface(&self) -> (Vec<TensorInfo>, Vec<TensorInfo>) {
        let state = self.lock();
        let session = &state.session;
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

    /// How many outputs the model declares.
    pub(crate) fn output_count(&self) -> usize {
        self.outputs.len()
    }

    /// The execution provider the session really got.
    pub(crate) fn provider(&self) -> Provider {
        self.provider
    }

    /// The model's state, locked. A panic while the lock was held leaves a session ONNX Runtime still
    /// considers valid, and bindings that are refilled before every use.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_count(&self, feeds: &[Feed]) -> Result<()> {
        if feeds.len() != self.inputs.len() {
            return Err(Error::Inference(format!(
                "{}: {} inputs given, {} expected",
                self.what,
                feeds.len(),
                self.inputs.len()
            )));
        }
        Ok(())
    }

    /// Runs the model on `feeds` (one per declared input, in order); returns every declared output in order.
    pub(crate) fn run(&self, feeds: Vec<Feed>) -> Result<Vec<Output>> {
        self.check_count(&feeds)?;
        self.run_unlocked(&mut self.lock(), feeds)
    }

    /// [`OnnxModel::run`] through a binding that the model keeps between calls (ONNX Runtime's IO
    /// binding), for a model run many times over with inputs of the same shapes, some of them unchanged:
    /// the U-Net across the steps of a generation, where the text embeddings stay and only the sample and
    /// the noise level move. Each input and output of a given set of shapes has a tensor allocated once on
    /// the session's device (GPU memory on CUDA and TensorRT, host memory on the CPU), and an input is
    /// written (and copied to the device) only when its values differ from those it holds. On a session
    /// that captures CUDA graphs the tensors never move, so the graph captured at the shapes' first runs is
    /// replayed. `out_shapes` are the shapes of the declared outputs; a model whose outputs have other
    /// shapes fails as a run error. The result is the same as [`OnnxModel::run`]'s, value for value (tested).
    /// If the binding cannot be made (the device refuses the allocation), the model logs it once and runs
    /// without one from then on.
    pub(crate) fn run_bound(&self, feeds: Vec<Feed>, out_shapes: &[Vec<i64>]) -> Result<Vec<Output>> {
        self.check_count(&feeds)?;
        if out_shapes.len() != self.outputs.len() {
            return Err(Error::Inference(format!(
                "{}: {} output shapes given, {} outputs declared",
                self.what,
                out_shapes.len(),
                self.outputs.len()
            )));
        }
        // Checked here, so that a failure to bind below can only be the device's.
        let shapes: Vec<Vec<i64>> =
            feeds.iter().map(|f| f.shape().to_vec()).chain(out_shapes.iter().cloned()).collect();
        for shape in &shapes {
            let count =
                shape.iter().try_fold(1usize, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d)));
            if count.is_none_or(|c| c > crate::limits::MAX_CALL_VALUES) {
                return Err(Error::Inference(format!("{}: cannot bind a tensor of shape {shape:?}", self.what)));
            }
        }
        let mut state = self.lock();
        let state = &mut *state;
        if state.bind_failed {
            return self.run_unlocked(state, feeds);
        }
        let i = match state.bound.iter().position(|b| b.shapes == shapes) {
            Some(i) => i,
            None => match self.bind(state, shapes) {
                Ok(i) => i,
                Err(e) => {
                    crate::log_at!(crate::log::Level::Warn, "{}: no IO binding ({e}); running without one", self.what);
                    state.bind_failed = true;
                    return self.run_unlocked(state, feeds);
                }
            },
        };
        let bound = &mut state.bound[i];
        bound.last_use = next_use();
        for (k, ((feed, slot), name)) in feeds.into_iter().zip(bound.inputs.iter_mut()).zip(&self.inputs).enumerate() {
            if slot.held.as_ref() == Some(&feed) {
                continue;
            }
            slot.held = None; // until the new values are in
            let typed = Typed::of(feed.clone(), self.input_types[k], name)?;
            slot.fill(&typed, name)?;
            slot.held = Some(feed);
        }
        let outputs = match &bound.options {
            Some(options) => state.session.run_binding_with_options(&bound.binding, options)?,
            None => state.session.run_binding(&bound.binding)?,
        };
        drop(outputs); // they are the bound output tensors
        bound.outputs.iter_mut().map(|slot| output(slot.fetch()?)).collect()
    }

    /// [`OnnxModel::run`] with the state already locked.
    fn run_unlocked(&self, state: &mut State, feeds: Vec<Feed>) -> Result<Vec<Output>> {
        let mut feed: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(feeds.len());
        for ((f, name), &ty) in feeds.into_iter().zip(&self.inputs).zip(&self.input_types) {
            feed.push((name.as_str().into(), Typed::of(f, ty, name)?.tensor()?));
        }
        // Not through a binding: on a session with CUDA graphs, no graph may be captured or replayed for it.
        let options = if self.graphs { Some(no_graph()?) } else { None };
        let outputs = match &options {
            Some(options) => state.session.run_with_options(feed, options)?,
            None => state.session.run(feed)?,
        };
        self.outputs
            .iter()
            .map(|name| {
                output(outputs.get(name).ok_or_else(|| Error::Inference(format!("{}: no output {name:?}", self.what)))?)
            })
            .collect()
    }

    /// Makes the binding for `shapes` (the inputs', then the outputs'), in `state.bound`; returns its index.
    /// At most [`KEEP_BOUND`] are kept, the least recently used going first, except those that captured a
    /// CUDA graph: the graph refers to their tensors, which must live as long as the session (at most
    /// [`MAX_GRAPHS`] of them; further shapes run without a graph).
    fn bind(&self, state: &mut State, shapes: Vec<Vec<i64>>) -> Result<usize> {
        let graphed = state.bound.iter().filter(|b| b.graph_id.is_some()).count();
        let graph_id = (self.graphs && graphed < MAX_GRAPHS).then_some(graphed as i64);
        if graph_id.is_none() {
            while state.bound.iter().filter(|b| b.graph_id.is_none()).count() >= KEEP_BOUND {
                let oldest = state
                    .bound
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.graph_id.is_none())
                    .min_by_key(|(_, b)| b.last_use)
                    .map(|(i, _)| i);
                match oldest {
                    Some(i) => drop(state.bound.remove(i)),
                    None => break,
                }
            }
        }
        let session = &state.session;
        let device = Device::of(self.provider, session)?;
        let mut binding = session.create_binding()?;
        let n_in = self.inputs.len();
        let mut inputs = Vec::with_capacity(n_in);
        for ((name, &ty), shape) in self.inputs.iter().zip(&self.input_types).zip(&shapes[..n_in]) {
            let slot = Slot::new(&device, bound_type(ty), shape)?;
            binding.bind_input(name.as_str(), &slot.on_device)?;
            inputs.push(slot);
        }
        let mut outputs = Vec::with_capacity(self.outputs.len());
        for ((name, &ty), shape) in self.outputs.iter().zip(&self.output_types).zip(&shapes[n_in..]) {
            let mut slot = Slot::new(&device, bound_type(ty), shape)?;
            binding.bind_output(name.as_str(), &mut slot.on_device)?;
            outputs.push(slot);
        }
        let options = match (graph_id, self.graphs) {
            (Some(id), _) => Some(graph_options(id)?),
            (None, true) => Some(no_graph()?),
            (None, false) => None,
        };
        state.bound.push(Bound { shapes, binding, inputs, outputs, options, graph_id, last_use: next_use() });
        Ok(state.bound.len() - 1)
    }
}

/// A model's session with the bindings kept for [`OnnxModel::run_bound`]. The bindings come first: they
/// drop before the session, whose model bytes must outlive everything that refers to the session.
struct State {
    bound: Vec<Bound>,
    /// A binding could not be made for this session: it runs without.
    bind_failed: bool,
    session: runtime::LoadedSession,
}

/// Bindings kept per model without a CUDA graph (two jobs of different batch sizes interleaving their
/// steps each keep theirs).
const KEEP_BOUND: usize = 4;
/// CUDA graphs captured per session at most (one per set of shapes).
const MAX_GRAPHS: usize = 8;

/// One set of shapes' binding: the session's inputs and outputs, bound to tensors that stay put.
struct Bound {
    shapes: Vec<Vec<i64>>,
    binding: ort::session::IoBinding,
    inputs: Vec<Slot>,
    outputs: Vec<Slot>,
    /// The run options that name the CUDA graph to capture or replay (or none, -1), on a session with graphs.
    options: Option<ort::session::RunOptions>,
    graph_id: Option<i64>,
    last_use: u64,
}

// SAFETY: ONNX Runtime's IO binding and the tensors bound to it are plain heap objects, not tied to the
// thread that made them; mirage touches them only with the model's mutex held, one thread at a time.
unsafe impl Send for Bound {}

/// A counter for least-recently-used order.
fn next_use() -> u64 {
    static USES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    USES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Where a session's bound tensors live: host memory for a CPU session; GPU memory for CUDA and TensorRT,
/// filled from and read into page-locked host tensors (one copy each way per changed input and per output).
struct Device {
    on_device: ort::memory::Allocator,
    host: Option<ort::memory::Allocator>,
}

impl Device {
    fn of(provider: Provider, session: &ort::session::Session) -> Result<Device> {
        use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
        Ok(match provider {
            Provider::Cuda | Provider::TensorRt => Device {
                on_device: Allocator::new(
                    session,
                    MemoryInfo::new(AllocationDevice::CUDA, 0, AllocatorType::Device, MemoryType::Default)?,
                )?,
                host: Some(Allocator::new(
                    session,
                    MemoryInfo::new(AllocationDevice::CUDA_PINNED, 0, AllocatorType::Device, MemoryType::CPUOutput)?,
                )?),
            },
            Provider::Cpu | Provider::Auto => Device { on_device: Allocator::default(), host: None },
        })
    }
}

/// One bound tensor, with its host-side twin when the device's memory is not the host's.
struct Slot {
    on_device: DynTensor,
    host: Option<DynTensor>,
    /// The feed the tensor holds now (inputs): an unchanged input is not written again.
    held: Option<Feed>,
}

impl Slot {
    /// `shape` has no negative dimension (checked by [`OnnxModel::run_bound`]).
    fn new(device: &Device, ty: TensorElementType, shape: &[i64]) -> Result<Slot> {
        let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let on_device = DynTensor::new(&device.on_device, ty, dims.clone())?;
        let host = device.host.as_ref().map(|a| DynTensor::new(a, ty, dims)).transpose()?;
        Ok(Slot { on_device, host, held: None })
    }

    /// Writes `typed` into the tensor (through its host twin, then one copy to the device).
    fn fill(&mut self, typed: &Typed, name: &str) -> Result<()> {
        let target = self.host.as_mut().unwrap_or(&mut self.on_device);
        typed.write_into(target, name)?;
        if let Some(host) = &self.host {
            host.copy_into(&mut self.on_device)?;
        }
        Ok(())
    }

    /// The tensor's values where the host can read them (copied from the device first when they are there).
    fn fetch(&mut self) -> Result<&DynTensor> {
        match &mut self.host {
            Some(host) => {
                self.on_device.copy_into(&mut *host)?;
                Ok(host)
            }
            None => Ok(&self.on_device),
        }
    }
}

/// The element type a bound tensor of a declared type gets: what [`Typed::of`] makes for it.
fn bound_type(declared: TensorElementType) -> TensorElementType {
    match declared {
        TensorElementType::Float16 | TensorElementType::Int64 | TensorElementType::Int32 => declared,
        _ => TensorElementType::Float32,
    }
}

/// Run options that capture (first runs) or replay the CUDA graph `id`.
fn graph_options(id: i64) -> Result<ort::session::RunOptions> {
    let mut o = ort::session::RunOptions::new()?;
    o.set("gpu_graph_id", id.to_string())?;
    Ok(o)
}

/// Run options that neither capture nor replay a CUDA graph (ONNX Runtime's `gpu_graph_id` -1).
fn no_graph() -> Result<ort::session::RunOptions> {
    graph_options(-1)
}

/// An output's values as f32 (a float16 export's widened), with its shape.
fn output<T: ort::value::TensorValueTypeMarker + ?Sized>(value: &ort::value::Value<T>) -> Result<Output> {
    let (shape, data) = match value.try_extract_tensor::<f32>() {
        Ok((shape, data)) => (shape, data.to_vec()),
        Err(_) => {
            // A float16 export's outputs, widened.
            let (shape, data) = value.try_extract_tensor::<half::f16>()?;
            (shape, data.iter().map(|v| v.to_f32()).collect())
        }
    };
    Ok(Output { shape: shape.iter().map(|&d| d.max(0) as usize).collect(), data })
}

impl Feed {
    fn shape(&self) -> &[i64] {
        match self {
            Feed::F32 { shape, .. } | Feed::I64 { shape, .. } => shape,
        }
    }
}

/// A feed's values converted to the element type the model declares for its input.
enum Typed {
    F32(Vec<i64>, Vec<f32>),
    F16(Vec<i64>, Vec<half::f16>),
    I64(Vec<i64>, Vec<i64>),
    I32(Vec<i64>, Vec<i32>),
}

impl Typed {
    /// f32 -> f16 for a float16 export, f32 -> i64 for a timestep declared int64 (optimum's U-Nets: numpy's
    /// astype, truncation toward zero), i64 -> i32 for an int32 token input (refused when it does not fit).
    fn of(feed: Feed, ty: TensorElementType, name: &str) -> Result<Typed> {
        use TensorElementType as T;
        Ok(match (feed, ty) {
            (Feed::F32 { shape, data }, T::Float16) => {
                Typed::F16(shape, data.into_iter().map(half::f16::from_f32).collect())
            }
            (Feed::F32 { shape, data }, T::Int64) => Typed::I64(shape, data.into_iter().map(|v| v as i64).collect()),
            (Feed::F32 { shape, data }, _) => Typed::F32(shape, data),
            (Feed::I64 { shape, data }, T::Int32) => {
                let data = data
                    .into_iter()
                    .map(|v| i32::try_from(v).map_err(|_| Error::invalid(format!("{name}: {v} does not fit in int32"))))
                    .collect::<Result<Vec<i32>>>()?;
                Typed::I32(shape, data)
            }
            (Feed::I64 { shape, data }, _) => Typed::I64(shape, data),
        })
    }

    /// An owned tensor of the values, for [`OnnxModel::run`].
    fn tensor(self) -> Result<SessionInputValue<'static>> {
        Ok(match self {
            Typed::F32(shape, data) => Tensor::from_array((shape, data))?.into(),
            Typed::F16(shape, data) => Tensor::from_array((shape, data))?.into(),
            Typed::I64(shape, data) => Tensor::from_array((shape, data))?.into(),
            Typed::I32(shape, data) => Tensor::from_array((shape, data))?.into(),
        })
    }

    /// Copies the values into `target`, a host tensor of the same element type and size.
    fn write_into(&self, target: &mut DynTensor, name: &str) -> Result<()> {
        fn put<T: ort::value::PrimitiveTensorElementType + Copy + std::fmt::Debug>(
            target: &mut DynTensor,
            data: &[T],
            name: &str,
        ) -> Result<()> {
            let (_, slice) = target.try_extract_tensor_mut::<T>()?;
            if slice.len() != data.len() {
                return Err(Error::Inference(format!(
                    "{name}: {} values for a bound tensor of {}",
                    data.len(),
                    slice.len()
                )));
            }
            slice.copy_from_slice(data);
            Ok(())
        }
        match self {
            Typed::F32(_, d) => put(target, d, name),
            Typed::F16(_, d) => put(target, d, name),
            Typed::I64(_, d) => put(target, d, name),
            Typed::I32(_, d) => put(target, d, name),
        }
    }
}

#[cfg(all(test, feature = "export"))]
mod tests {
    use super::*;
    use crate::export::unet::{random_unet_weights, unet_bytes, UNetArch};

    /// A tiny random text-conditioned U-Net (x [n, 2, 4, 4], noise_variance [n, 1], context [n, 3, 8],
    /// pooled [n, 8]) on the CPU.
    fn tiny_unet() -> OnnxModel {
        let arch = UNetArch::tiny_text(2, 4, 4, 8, 3);
        let bytes = unet_bytes(&arch, &random_unet_weights(&arch, 5), false).expect("unet bytes");
        OnnxModel::create_as_declared(runtime::ModelSource::Bytes(&bytes), "tiny unet".into(), Some(Provider::Cpu))
            .expect("session")
    }

    fn feeds(n: usize, seed: u32, level: f32, text_seed: u32) -> Vec<Feed> {
        let values = |len: usize, s: u32| -> Vec<f32> {
            (0..len)
                .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(s) % 1000) as f32 / 500.0 - 1.0)
                .collect()
        };
        let n64 = n as i64;
        vec![
            Feed::F32 { shape: vec![n64, 2, 4, 4], data: values(n * 32, seed) },
            Feed::F32 { shape: vec![n64, 1], data: vec![level; n] },
            Feed::F32 { shape: vec![n64, 3, 8], data: values(n * 24, text_seed) },
            Feed::F32 { shape: vec![n64, 8], data: values(n * 8, text_seed + 1) },
        ]
    }

    fn data(out: Vec<Output>) -> Vec<f32> {
        out.into_iter().next().expect("one output").data
    }

    /// The bound run gives exactly the plain run's values: across steps where only the sample and level move,
    /// when the text changes under the same shapes, across batch sizes (more of them than are kept, so that
    /// bindings are dropped and made again), and coming back to an earlier one.
    #[test]
    fn bound_runs_match_plain_runs_value_for_value() {
        let model = tiny_unet();
        let mut calls = Vec::new();
        for step in 0..4 {
            calls.push((1, step, 0.9 - 0.2 * step as f32, 7)); // a generation: the text stays
        }
        calls.push((1, 9, 0.5, 8)); // another prompt, same shapes
        calls.push((1, 9, 0.5, 7)); // and back
        for n in [2, 3, 4, 5, 6] {
            calls.push((n, n as u32, 0.3, 11)); // more shapes than KEEP_BOUND
        }
        calls.push((2, 2, 0.3, 11)); // an evicted shape again
        calls.push((1, 3, 0.7, 7));
        for (n, seed, level, text) in calls {
            let plain = data(model.run(feeds(n, seed, level, text)).expect("run"));
            let shape = vec![vec![n as i64, 2, 4, 4]];
            let bound = data(model.run_bound(feeds(n, seed, level, text), &shape).expect("bound run"));
            assert_eq!(plain.len(), n * 32);
            assert_eq!(plain, bound, "n {n}, seed {seed}, level {level}, text {text}");
        }
        let state = model.lock();
        assert!(state.bound.len() <= KEEP_BOUND && !state.bind_failed);
    }

    /// Wrong output shapes or feed counts are errors, not crashes, and the model still runs after them.
    #[test]
    fn bound_runs_refuse_wrong_shapes() {
        let model = tiny_unet();
        assert!(model.run_bound(feeds(1, 1, 0.5, 1), &[vec![1, 2, 4, 5]]).is_err());
        assert!(model.run_bound(feeds(1, 1, 0.5, 1), &[vec![1, 2, 4, -1]]).is_err());
        assert!(model.run_bound(feeds(1, 1, 0.5, 1), &[]).is_err());
        assert!(model.run_bound(feeds(1, 1, 0.5, 1)[..3].to_vec(), &[vec![1, 2, 4, 4]]).is_err());
        let plain = data(model.run(feeds(1, 1, 0.5, 1)).expect("run"));
        let bound = data(model.run_bound(feeds(1, 1, 0.5, 1), &[vec![1, 2, 4, 4]]).expect("bound run"));
        assert_eq!(plain, bound);
    }
}
