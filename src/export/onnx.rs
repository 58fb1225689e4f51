//! A small builder of ONNX graphs over the protobuf messages of `onnx-protobuf`.
//!
//! It knows just enough ONNX to write our models: f32 initializers, graph inputs and outputs with a
//! dynamic batch dimension, nodes with int/float/string attributes, and one helper per operator our
//! exporters use. Values are referred to by name (`String`); every node helper returns the fresh, unique
//! name of its output, so an exporter reads like the `forward` it mirrors:
//!
//! ```
//! # fn main() -> mirage::Result<()> {
//! use mirage::export::onnx::GraphBuilder;
//! let mut b = GraphBuilder::new("double");
//! let x = b.input("x", &[-1, 4])?; // [N, 4]; -1 becomes the named dimension "N"
//! let two = b.scalar_f32("two", 2.0)?;
//! let y = b.mul(&x, &two)?; // [N, 4]
//! b.output(&y, "y", &[-1, 4])?;
//! let bytes = mirage::export::onnx::encode(&b.finish()?)?;
//! assert!(!bytes.is_empty());
//! # Ok(()) }
//! ```
//!
//! The output is byte-deterministic: the same calls in the same order give the same bytes (the
//! messages hold only vectors, never hash maps, and names come from one counter), which lets the
//! manifest's sha256 identify a model.
//!
//! Adding an operator is one small method over [`GraphBuilder::node`]: the later U-Net
//! (GroupNormalization, Concat, Resize, MatMul, Softmax, Transpose) and the BERT text encoder (Gather,
//! LayerNormalization, Erf, ReduceMean, Div, Sqrt, Where, Cast) fit this shape; non-f32 constants go
//! through [`GraphBuilder::const_i64`] or a sibling of it.

use std::collections::BTreeSet;

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::Dimension;
use onnx_protobuf::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};
use protobuf::{EnumOrUnknown, Message, MessageField};

use crate::error::{Error, Result};

/// ONNX IR version of the files we write. 8 is what opset 17 came with (ONNX 1.12), and every ONNX
/// Runtime since 1.12 reads it.
pub const IR_VERSION: i64 = 8;

/// Default-domain opset of the files we write. 17 is the first with LayerNormalization (the text
/// encoder needs it) and is supported by ONNX Runtime and TensorRT alike.
pub const OPSET_VERSION: i64 = 17;

/// The name of the dynamic batch dimension in graph inputs and outputs (written as -1 in shapes).
pub const BATCH_DIM: &str = "N";

/// The value of one node attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Floats(Vec<f32>),
    String(String),
}

/// One dimension of a graph input or output declared with [`GraphBuilder::typed_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size (> 0).
    Fixed(i64),
    /// A dynamic size, named so that inputs and outputs sharing it say so (ONNX's `dim_param`).
    Named(&'static str),
}

/// Element type of a graph input or output declared with [`GraphBuilder::typed_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    F32,
    I64,
    /// Signed 8-bit integers: quantised weights (see [`GraphBuilder::initializer_i8`]).
    I8,
    /// IEEE half precision: weights stored at 16 bits (see [`GraphBuilder::initializer_f16`]).
    F16,
}

/// Builds one ONNX graph; [`GraphBuilder::finish`] wraps it into a model.
#[derive(Debug)]
pub struct GraphBuilder {
    name: String,
    doc: String,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    /// Every value name defined so far (inputs, initializers, node outputs): a node may only read these,
    /// and a new name must not be among them (ONNX graphs are in SSA form).
    defined: BTreeSet<String>,
    /// Source of fresh names; one counter for the whole graph keeps the output deterministic.
    next_id: usize,
}

impl GraphBuilder {
    /// An empty graph called `name` (the name is stored in the file, nothing reads it).
    pub fn new(name: &str) -> Self {
        GraphBuilder {
            name: name.to_string(),
            doc: String::new(),
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            defined: BTreeSet::new(),
            next_id: 0,
        }
    }

    /// Sets the graph's doc string (shown by Netron and friends).
    pub fn set_doc(&mut self, doc: &str) {
        self.doc = doc.to_string();
    }

    /// Whether a value of this name exists in the graph so far.
    pub fn has_value(&self, name: &str) -> bool {
        self.defined.contains(name)
    }

    fn define(&mut self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(Error::model("onnx export: empty value name"));
        }
        if !self.defined.insert(name.to_string()) {
            return Err(Error::model(format!("onnx export: value {name:?} defined twice")));
        }
        Ok(())
    }

    /// A name not used yet, made from `hint` and the graph's counter.
    pub fn fresh_name(&mut self, hint: &str) -> String {
        loop {
            let name = format!("{hint}_{}", self.next_id);
            self.next_id += 1;
            if !self.defined.contains(&name) {
                return name;
            }
        }
    }

    /// Declares a float graph input. `shape` uses -1 for the dynamic batch dimension ([`BATCH_DIM`]).
    pub fn input(&mut self, name: &str, shape: &[i64]) -> Result<String> {
        let info = value_info(name, shape)?;
        self.define(name)?;
        self.inputs.push(info);
        Ok(name.to_string())
    }

    /// Declares the graph output `name` with `shape`, holding `value`. When `value` has another name an
    /// Identity node renames it (graph outputs must be node outputs or inputs of that very name).
    pub fn output(&mut self, value: &str, name: &str, shape: &[i64]) -> Result<()> {
        let info = value_info(name, shape)?;
        if value != name {
            self.require(value)?;
            self.define(name)?;
            self.nodes.push(node_proto("Identity", &format!("{name}/Identity"), &[value], &[name], Vec::new()));
        } else {
            self.require(value)?;
        }
        self.outputs.push(info);
        Ok(())
    }

    /// Declares a graph input of element type `elem` whose dimensions may be named (symbolic), e.g.
    /// BERT's `input_ids` int64 [B, L] with both batch and sequence length dynamic.
    pub fn typed_input(&mut self, name: &str, elem: ElemType, dims: &[Dim]) -> Result<String> {
        let info = typed_value_info(name, elem, dims)?;
        self.define(name)?;
        self.inputs.push(info);
        Ok(name.to_string())
    }

    /// [`GraphBuilder::output`] with an element type and named dimensions (see [`GraphBuilder::typed_input`]).
    pub fn typed_output(&mut self, value: &str, name: &str, elem: ElemType, dims: &[Dim]) -> Result<()> {
        let info = typed_value_info(name, elem, dims)?;
        self.require(value)?;
        if value != name {
            self.define(name)?;
            self.nodes.push(node_proto("Identity", &format!("{name}/Identity"), &[value], &[name], Vec::new()));
        }
        self.outputs.push(info);
        Ok(())
    }

    /// Adds an f32 initializer (a weight) of the given shape; `data` is row-major.
    pub fn initializer(&mut self, name: &str, shape: &[i64], data: &[f32]) -> Result<String> {
        // raw_data (little-endian bytes) is the compact encoding; float_data would cost a varint tag per value.
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.raw_initializer(name, shape, data.len(), DataType::FLOAT, raw)
    }

    /// Adds an initializer of `count` values of `data_type` given as its little-endian `raw_data`, after
    /// checking the count against the shape and the name against those already defined.
    fn raw_initializer(
        &mut self,
        name: &str,
        shape: &[i64],
        count: usize,
        data_type: DataType,
        raw: Vec<u8>,
    ) -> Result<String> {
        let n = element_count(name, shape)?;
        if n != count {
            return Err(Error::model(format!(
                "onnx export: initializer {name:?} of shape {shape:?} needs {n} values, got {count}"
            )));
        }
        self.define(name)?;
        let mut t = TensorProto::new();
        t.name = name.to_string();
        t.dims = shape.to_vec();
        t.data_type = data_type as i32;
        t.raw_data = raw;
        self.initializers.push(t);
        Ok(name.to_string())
    }

    /// Adds an int8 initializer (quantised weights) of the given shape; `data` is row-major. The values go in
    /// `raw_data`, one byte each: a quarter of the f32 bytes.
    pub fn initializer_i8(&mut self, name: &str, shape: &[i64], data: &[i8]) -> Result<String> {
        let raw = data.iter().map(|&v| v as u8).collect();
        self.raw_initializer(name, shape, data.len(), DataType::INT8, raw)
    }

    /// Adds a float16 initializer of the given shape from f32 values (each rounded to the nearest f16, ties
    /// to even: the same bytes on every machine); `data` is row-major, stored as little-endian `raw_data`.
    pub fn initializer_f16(&mut self, name: &str, shape: &[i64], data: &[f32]) -> Result<String> {
        let raw = data.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
        self.raw_initializer(name, shape, data.len(), DataType::FLOAT16, raw)
    }

    /// Adds an int64 initializer (shapes, pads, slice bounds) under a fresh name made from `hint`.
    pub fn const_i64(&mut self, hint: &str, shape: &[i64], data: &[i64]) -> Result<String> {
        let name = self.fresh_name(hint);
        let n = element_count(&name, shape)?;
        if n != data.len() {
            return Err(Error::model(format!("onnx export: constant {name:?} needs {n} values, got {}", data.len())));
        }
        self.define(&name)?;
        let mut t = TensorProto::new();
        t.name = name.clone();
        t.dims = shape.to_vec();
        t.data_type = DataType::INT64 as i32;
        t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(t);
        Ok(name)
    }

    /// Adds a 1-D int64 constant.
    pub fn ints(&mut self, hint: &str, data: &[i64]) -> Result<String> {
        self.const_i64(hint, &[data.len() as i64], data)
    }

    /// Adds a rank-0 f32 constant under a fresh name made from `hint`.
    pub fn scalar_f32(&mut self, hint: &str, value: f32) -> Result<String> {
        let name = self.fresh_name(hint);
        self.initializer(&name, &[], &[value])
    }

    /// Checks that `value` exists (the empty name is ONNX's "optional input left out" and always passes).
    fn require(&self, value: &str) -> Result<()> {
        if !value.is_empty() && !self.defined.contains(value) {
            return Err(Error::model(format!("onnx export: value {value:?} is used before it is defined")));
        }
        Ok(())
    }

    /// Adds a node of type `op` with `n_outputs` outputs; returns their fresh names.
    pub fn node_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        n_outputs: usize,
        attrs: Vec<(&str, Attr)>,
    ) -> Result<Vec<String>> {
        for i in inputs {
            self.require(i)?;
        }
        let node_name = self.fresh_name(op);
        let outputs: Vec<String> = if n_outputs == 1 {
            vec![node_name.clone()]
        } else {
            (0..n_outputs).map(|k| format!("{node_name}:{k}")).collect()
        };
        for o in &outputs {
            self.define(o)?;
        }
        let out_refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
        self.nodes.push(node_proto(op, &node_name, inputs, &out_refs, attrs));
        Ok(outputs)
    }

    /// Adds a node of type `op` with one output; returns its fresh name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> Result<String> {
        let mut outs = self.node_n(op, inputs, 1, attrs)?;
        outs.pop().ok_or_else(|| Error::model("onnx export: node without output"))
    }

    // ---- operators -------------------------------------------------------------------------------------

    /// 2-D convolution, `x` [N, Cin, H, W], `w` [Cout, Cin/group, k, k], `b` [Cout] or none; the same
    /// stride and zero padding on both spatial axes (as torch's `Conv2d` with int arguments).
    pub fn conv(&mut self, x: &str, w: &str, b: Option<&str>, stride: i64, pad: i64, group: i64) -> Result<String> {
        let mut inputs = vec![x, w];
        inputs.extend(b);
        self.node(
            "Conv",
            &inputs,
            vec![
                ("strides", Attr::Ints(vec![stride, stride])),
                ("pads", Attr::Ints(vec![pad, pad, pad, pad])),
                ("group", Attr::Int(group)),
            ],
        )
    }

    /// 2-D transposed convolution, `w` [Cin, Cout/group, k, k] (torch's layout too). Output size
    /// (H - 1) * stride - 2 * pad + k, as torch's `ConvTranspose2d` without output padding.
    pub fn conv_transpose(
        &mut self,
        x: &str,
        w: &str,
        b: Option<&str>,
        stride: i64,
        pad: i64,
        group: i64,
    ) -> Result<String> {
        let mut inputs = vec![x, w];
        inputs.extend(b);
        self.node(
            "ConvTranspose",
            &inputs,
            vec![
                ("strides", Attr::Ints(vec![stride, stride])),
                ("pads", Attr::Ints(vec![pad, pad, pad, pad])),
                ("group", Attr::Int(group)),
            ],
        )
    }

    pub fn add(&mut self, a: &str, b: &str) -> Result<String> {
        self.node("Add", &[a, b], Vec::new())
    }

    pub fn mul(&mut self, a: &str, b: &str) -> Result<String> {
        self.node("Mul", &[a, b], Vec::new())
    }

    pub fn exp(&mut self, x: &str) -> Result<String> {
        self.node("Exp", &[x], Vec::new())
    }

    pub fn tanh(&mut self, x: &str) -> Result<String> {
        self.node("Tanh", &[x], Vec::new())
    }

    pub fn sigmoid(&mut self, x: &str) -> Result<String> {
        self.node("Sigmoid", &[x], Vec::new())
    }

    /// SiLU (swish), x * sigmoid(x): opset 17 has no single operator for it; ONNX Runtime fuses the pair.
    pub fn silu(&mut self, x: &str) -> Result<String> {
        let s = self.sigmoid(x)?;
        self.mul(x, &s)
    }

    /// Clamps to [min, max] (opset 11+ takes the bounds as inputs).
    pub fn clip(&mut self, x: &str, min: f32, max: f32) -> Result<String> {
        let lo = self.scalar_f32("clip_min", min)?;
        let hi = self.scalar_f32("clip_max", max)?;
        self.node("Clip", &[x, &lo, &hi], Vec::new())
    }

    /// Pads with a constant. `pads` is ONNX's layout: all begins, then all ends, one per axis
    /// ([x1_begin, x2_begin, ..., x1_end, x2_end, ...]) — not torch's reversed pairs.
    pub fn pad_constant(&mut self, x: &str, pads: &[i64], value: f32) -> Result<String> {
        let p = self.ints("pads", pads)?;
        let v = self.scalar_f32("pad_value", value)?;
        self.node("Pad", &[x, &p, &v], vec![("mode", Attr::String("constant".into()))])
    }

    /// Slices `axes` to [starts, ends) with step 1.
    pub fn slice(&mut self, x: &str, starts: &[i64], ends: &[i64], axes: &[i64]) -> Result<String> {
        if starts.len() != ends.len() || starts.len() != axes.len() {
            return Err(Error::model("onnx export: slice needs as many starts, ends and axes"));
        }
        let s = self.ints("starts", starts)?;
        let e = self.ints("ends", ends)?;
        let a = self.ints("axes", axes)?;
        self.node("Slice", &[x, &s, &e, &a], Vec::new())
    }

    /// Reshapes to `shape` (0 copies the input's dimension, -1 is inferred: ONNX's rules).
    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> Result<String> {
        let s = self.ints("shape", shape)?;
        self.node("Reshape", &[x, &s], Vec::new())
    }

    /// Stores every f32 initializer of at least `min_values` values (the weight tensors; biases and norm
    /// parameters stay f32) as float16 under `{name}.f16`, with a Cast back to f32 named `name` at the head of
    /// the graph: half the bytes on disk, the same f32 arithmetic (ONNX Runtime folds the Casts into f32
    /// initializers when it creates the session). Refuses values f16 cannot hold (not finite, or beyond
    /// 65504). Returns how many initializers were converted. [`read_initializers`] reads them back.
    pub fn weights_to_f16(&mut self, min_values: usize) -> Result<usize> {
        // Everything is checked before anything changes: a refusal leaves the graph as it was.
        let mut chosen = Vec::new();
        for (k, t) in self.initializers.iter().enumerate() {
            if t.data_type != DataType::FLOAT as i32 || element_count(&t.name, &t.dims)? < min_values {
                continue;
            }
            let values = f32_values(t)?;
            if let Some(v) = values.iter().find(|v| !v.is_finite() || v.abs() > f32::from(half::f16::MAX)) {
                return Err(Error::model(format!("onnx export: {:?} holds {v}, which f16 cannot hold", t.name)));
            }
            if self.defined.contains(&format!("{}{F16_SUFFIX}", t.name)) {
                return Err(Error::model(format!("onnx export: {:?} already has an f16 twin", t.name)));
            }
            chosen.push((k, values));
        }
        let mut casts = Vec::with_capacity(chosen.len());
        for (k, values) in &chosen {
            let name = self.initializers[*k].name.clone();
            let f16 = format!("{name}{F16_SUFFIX}");
            self.define(&f16)?;
            let t = &mut self.initializers[*k];
            t.name = f16.clone();
            t.data_type = DataType::FLOAT16 as i32;
            t.raw_data = values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
            t.float_data.clear();
            let node_name = self.fresh_name("Cast");
            // to = 1: FLOAT.
            casts.push(node_proto("Cast", &node_name, &[&f16], &[&name], vec![("to", Attr::Int(1))]));
        }
        self.nodes.splice(0..0, casts);
        Ok(chosen.len())
    }

    /// Wraps the graph into a model: IR version [`IR_VERSION`], default-domain opset [`OPSET_VERSION`],
    /// producer "mirage".
    pub fn finish(self) -> Result<ModelProto> {
        if self.inputs.is_empty() || self.outputs.is_empty() {
            return Err(Error::model(format!("onnx export: graph {:?} needs inputs and outputs", self.name)));
        }
        let mut graph = GraphProto::new();
        graph.name = self.name;
        graph.doc_string = self.doc;
        graph.node = self.nodes;
        graph.initializer = self.initializers;
        graph.input = self.inputs;
        graph.output = self.outputs;

        let mut opset = OperatorSetIdProto::new();
        opset.domain = String::new();
        opset.version = OPSET_VERSION;

        let mut model = ModelProto::new();
        model.ir_version = IR_VERSION;
        model.opset_import = vec![opset];
        model.producer_name = "mirage".into();
        model.producer_version = crate::VERSION.into();
        model.graph = MessageField::some(graph);
        Ok(model)
    }
}

/// Serialises a model to the bytes of a `.onnx` file.
pub fn encode(model: &ModelProto) -> Result<Vec<u8>> {
    model.write_to_bytes().map_err(|e| Error::model(format!("onnx export: protobuf encoding failed: {e}")))
}

/// Name suffix of a weight stored as float16 by [`GraphBuilder::weights_to_f16`].
pub const F16_SUFFIX: &str = ".f16";

/// The float32 initializers of an ONNX model (the reverse of [`GraphBuilder::initializer`]): name ->
/// (shape, values). Our exporters name them by the trainer's VarStore paths, so this reads an exported model
/// back into its tch module. Weights stored as f16 by [`GraphBuilder::weights_to_f16`] come back as f32 under
/// their own names; other initializers (int64 constants, int8, other f16) are skipped.
pub fn read_initializers(bytes: &[u8]) -> Result<super::vae::Weights> {
    let model = ModelProto::parse_from_bytes(bytes).map_err(|e| Error::model(format!("onnx: not a model ({e})")))?;
    let mut out = super::vae::Weights::new();
    for t in &model.graph.initializer {
        let name = match t.name.strip_suffix(F16_SUFFIX) {
            Some(base) if t.data_type == DataType::FLOAT16 as i32 => base,
            _ if t.data_type == DataType::FLOAT as i32 => t.name.as_str(),
            _ => continue,
        };
        out.insert(name.to_string(), (t.dims.clone(), f32_values(t)?));
    }
    Ok(out)
}

/// The values of an f32 or f16 initializer as f32, checked against its shape.
fn f32_values(t: &TensorProto) -> Result<Vec<f32>> {
    let count = element_count(&t.name, &t.dims)?;
    let values: Vec<f32> = if t.data_type == DataType::FLOAT16 as i32 {
        t.raw_data.chunks_exact(2).map(|b| f32::from(half::f16::from_le_bytes([b[0], b[1]]))).collect()
    } else if t.raw_data.is_empty() {
        t.float_data.clone()
    } else {
        t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    };
    if values.len() != count {
        return Err(Error::model(format!("onnx: initializer {:?} holds {} values for {count}", t.name, values.len())));
    }
    Ok(values)
}

fn element_count(name: &str, shape: &[i64]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d)
            .ok()
            .and_then(|d| acc.checked_mul(d))
            .ok_or_else(|| Error::model(format!("onnx export: {name:?} has an invalid shape {shape:?}")))
    })
}

/// A float tensor's ValueInfo; -1 dimensions become the named dimension [`BATCH_DIM`].
fn value_info(name: &str, shape: &[i64]) -> Result<ValueInfoProto> {
    let mut tshape = TensorShapeProto::new();
    for &d in shape {
        let mut dim = Dimension::new();
        match d {
            -1 => dim.set_dim_param(BATCH_DIM.to_string()),
            d if d > 0 => dim.set_dim_value(d),
            _ => return Err(Error::model(format!("onnx export: {name:?} has an invalid dimension {d} in {shape:?}"))),
        }
        tshape.dim.push(dim);
    }
    let mut tensor = type_proto::Tensor::new();
    tensor.elem_type = DataType::FLOAT as i32;
    tensor.shape = MessageField::some(tshape);
    let mut ty = TypeProto::new();
    ty.set_tensor_type(tensor);
    let mut info = ValueInfoProto::new();
    info.name = name.to_string();
    info.type_ = MessageField::some(ty);
    Ok(info)
}

/// A tensor's ValueInfo with an explicit element type and fixed or named dimensions.
fn typed_value_info(name: &str, elem: ElemType, dims: &[Dim]) -> Result<ValueInfoProto> {
    let mut tshape = TensorShapeProto::new();
    for &d in dims {
        let mut dim = Dimension::new();
        match d {
            Dim::Fixed(v) if v > 0 => dim.set_dim_value(v),
            Dim::Named(p) if !p.is_empty() => dim.set_dim_param(p.to_string()),
            _ => return Err(Error::model(format!("onnx export: {name:?} has an invalid dimension {d:?} in {dims:?}"))),
        }
        tshape.dim.push(dim);
    }
    let mut tensor = type_proto::Tensor::new();
    tensor.elem_type = match elem {
        ElemType::F32 => DataType::FLOAT,
        ElemType::I64 => DataType::INT64,
        ElemType::I8 => DataType::INT8,
        ElemType::F16 => DataType::FLOAT16,
    } as i32;
    tensor.shape = MessageField::some(tshape);
    let mut ty = TypeProto::new();
    ty.set_tensor_type(tensor);
    let mut info = ValueInfoProto::new();
    info.name = name.to_string();
    info.type_ = MessageField::some(ty);
    Ok(info)
}

fn node_proto(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<(&str, Attr)>) -> NodeProto {
    let mut node = NodeProto::new();
    node.op_type = op.to_string();
    node.name = name.to_string();
    node.input = inputs.iter().map(|s| s.to_string()).collect();
    node.output = outputs.iter().map(|s| s.to_string()).collect();
    node.attribute = attrs.into_iter().map(|(k, v)| attribute(k, v)).collect();
    node
}

fn attribute(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    let ty = match value {
        Attr::Int(i) => {
            a.i = i;
            AttributeType::INT
        }
        Attr::Ints(v) => {
            a.ints = v;
            AttributeType::INTS
        }
        Attr::Float(f) => {
            a.f = f;
            AttributeType::FLOAT
        }
        Attr::Floats(v) => {
            a.floats = v;
            AttributeType::FLOATS
        }
        Attr::String(s) => {
            a.s = s.into_bytes();
            AttributeType::STRING
        }
    };
    a.type_ = EnumOrUnknown::new(ty);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_model(scale: f32) -> Result<Vec<u8>> {
        let mut b = GraphBuilder::new("t");
        let x = b.input("x", &[-1, 2, 4, 4])?;
        let w = b.initializer("conv.weight", &[3, 2, 3, 3], &[scale; 54])?;
        let bias = b.initializer("conv.bias", &[3], &[0.1, 0.2, 0.3])?;
        let h = b.conv(&x, &w, Some(&bias), 1, 1, 1)?; // [N, 3, 4, 4]
        let h = b.silu(&h)?;
        let h = b.pad_constant(&h, &[0, 0, 1, 1, 0, 0, 1, 1], -1.0)?; // [N, 3, 6, 6]
        let h = b.slice(&h, &[1, 1], &[5, 5], &[2, 3])?; // [N, 3, 4, 4]
        b.output(&h, "y", &[-1, 3, 4, 4])?;
        encode(&b.finish()?)
    }

    #[test]
    fn same_calls_give_the_same_bytes() {
        let a = small_model(0.5).unwrap();
        let b = small_model(0.5).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, small_model(0.25).unwrap());
        let m = ModelProto::parse_from_bytes(&a).unwrap();
        assert_eq!(m.ir_version, IR_VERSION);
        assert_eq!(m.opset_import[0].version, OPSET_VERSION);
        assert_eq!(m.producer_name, "mirage");
        let g = m.graph.as_ref().unwrap();
        assert_eq!(g.input[0].name, "x");
        assert_eq!(g.output[0].name, "y");
        // Graph outputs are produced by a node of that name (here the renaming Identity).
        assert!(g.node.iter().any(|n| n.output.iter().any(|o| o == "y")));
    }

    #[test]
    fn int8_initializers_hold_one_byte_per_value() {
        let mut b = GraphBuilder::new("t");
        let ids = b.typed_input("ids", ElemType::I64, &[Dim::Named("N")]).unwrap();
        let table = b.initializer_i8("table", &[3, 2], &[-127, 0, 1, 127, -1, 5]).unwrap();
        assert!(b.initializer_i8("short", &[3, 2], &[1]).is_err());
        let rows = b.node("Gather", &[&table, &ids], vec![("axis", Attr::Int(0))]).unwrap();
        b.typed_output(&rows, "rows", ElemType::I8, &[Dim::Named("N"), Dim::Fixed(2)]).unwrap();
        let m = ModelProto::parse_from_bytes(&encode(&b.finish().unwrap()).unwrap()).unwrap();
        let g = m.graph.as_ref().unwrap();
        let t = &g.initializer[0];
        assert_eq!((t.data_type, t.dims.clone()), (DataType::INT8 as i32, vec![3, 2]));
        assert_eq!(t.raw_data, vec![0x81, 0, 1, 0x7f, 0xff, 5]);
        let out = g.output[0].type_.as_ref().unwrap().tensor_type().elem_type;
        assert_eq!(out, DataType::INT8 as i32);
    }

    #[test]
    fn f16_initializers_round_to_nearest() {
        let mut b = GraphBuilder::new("t");
        let x = b.typed_input("x", ElemType::F16, &[Dim::Fixed(3)]).unwrap();
        // 1 + 2^-11 is halfway between two f16 values: ties to even (1.0); 65520 overflows to infinity.
        let w = b.initializer_f16("w", &[3], &[1.0 + 1.0 / 2048.0, -2.5, 0.1]).unwrap();
        assert!(b.initializer_f16("short", &[2], &[1.0]).is_err());
        let y = b.add(&x, &w).unwrap();
        b.typed_output(&y, "y", ElemType::F16, &[Dim::Fixed(3)]).unwrap();
        let m = ModelProto::parse_from_bytes(&encode(&b.finish().unwrap()).unwrap()).unwrap();
        let t = &m.graph.as_ref().unwrap().initializer[0];
        assert_eq!(t.data_type, DataType::FLOAT16 as i32);
        let got: Vec<u16> = t.raw_data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        assert_eq!(got, vec![0x3c00, 0xc100, 0x2e66]);
    }

    /// Weights of at least `min_values` values go to f16 with a Cast at the head of the graph; smaller ones
    /// stay f32; reading back gives every weight under its own name, rounded to f16 where stored so.
    #[test]
    fn weights_to_f16_halves_the_large_weights_and_reads_back() {
        let mut b = GraphBuilder::new("t");
        let x = b.input("x", &[-1, 4]).unwrap();
        let w = b.initializer("w", &[4, 4], &[0.1; 16]).unwrap();
        let bias = b.initializer("b", &[4], &[0.5; 4]).unwrap();
        let y = b.node("MatMul", &[&x, &w], vec![]).unwrap();
        let y = b.add(&y, &bias).unwrap();
        b.output(&y, "y", &[-1, 4]).unwrap();
        assert_eq!(b.weights_to_f16(16).unwrap(), 1);
        let bytes = encode(&b.finish().unwrap()).unwrap();
        let m = ModelProto::parse_from_bytes(&bytes).unwrap();
        let g = m.graph.as_ref().unwrap();
        assert_eq!(g.node[0].op_type, "Cast");
        assert_eq!((g.node[0].input[0].as_str(), g.node[0].output[0].as_str()), ("w.f16", "w"));
        let types: Vec<(String, i32)> = g.initializer.iter().map(|t| (t.name.clone(), t.data_type)).collect();
        assert_eq!(
            types,
            vec![("w.f16".to_string(), DataType::FLOAT16 as i32), ("b".to_string(), DataType::FLOAT as i32)]
        );
        let back = read_initializers(&bytes).unwrap();
        assert_eq!(back["w"], (vec![4, 4], vec![f32::from(half::f16::from_f32(0.1)); 16]));
        assert_eq!(back["b"], (vec![4], vec![0.5; 4]));
        // What f16 cannot hold is refused, not turned into infinity, and the graph is left as it was.
        let mut b = GraphBuilder::new("t");
        b.initializer("small", &[2], &[1.0, 2.0]).unwrap();
        b.initializer("big", &[2], &[1.0, 7e4]).unwrap();
        assert!(b.weights_to_f16(1).unwrap_err().to_string().contains("f16 cannot hold"));
        assert!(b.initializers.iter().all(|t| t.data_type == DataType::FLOAT as i32) && b.nodes.is_empty());
    }

    #[test]
    fn rejects_undefined_inputs_duplicates_and_bad_shapes() {
        let mut b = GraphBuilder::new("t");
        b.input("x", &[-1, 2]).unwrap();
        assert!(b.add("x", "nope").unwrap_err().to_string().contains("nope"));
        assert!(b.input("x", &[1]).is_err());
        assert!(b.initializer("w", &[2, 2], &[0.0; 3]).is_err());
        assert!(b.initializer("w2", &[-2], &[]).is_err());
        assert!(b.input("z", &[0, 2]).is_err());
        let y = b.tanh("x").unwrap();
        let y2 = b.tanh("x").unwrap();
        assert_ne!(y, y2, "node outputs get fresh names");
    }
}
