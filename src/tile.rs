//! Tileable output: a load-time rewrite of an ONNX model so that every 2-D convolution pads circularly
//! (wrap-around) instead of with zeros.
//!
//! # Why
//!
//! A convolution padded with zeros sees a wall at each edge of the image, and a network learns to draw
//! borders there: its images do not tile. Padded circularly, each convolution sees the opposite edge
//! instead, as if the image lay on a torus. Every other layer of our models (SiLU, GroupNorm, attention
//! over positions, average pooling and nearest upsampling by 2, per-channel adds) already commutes with
//! rolling the image, so the whole rewritten network is equivariant to rolls by multiples of its total
//! downsampling factor: rolling the input by `f` pixels rolls the output by the matching amount. Sampled
//! from noise with such networks, images (and the VAE's decodes of their latents) wrap seamlessly, i.e. they
//! are seamless textures.
//!
//! # Rules
//!
//! [`circular`] parses the model, rewrites the nodes of its main graph and writes it back. It needs IR
//! version 4 or newer and a default-domain (`""` / `"ai.onnx"`) opset of at least [`MIN_OPSET`] (11: Slice
//! with its bounds as inputs and negative indices); an older model is refused. It never needs static
//! shapes: every new node indexes from the start or from the end of an axis, so H and W may be dynamic.
//!
//! 1. **Conv** with `pads` = [top, left, bottom, right] (any strides, dilations, group): before the
//!    convolution, x becomes, along axis 2, `Concat(Slice(x, -top, MAX), x, Slice(x, 0, bottom))` (a side
//!    whose pad is 0 is left out), then the same along axis 3 with left and right; the convolution's pads
//!    become zeros. A pad larger than its dimension is not checked: ONNX Runtime's shapes then differ.
//! 2. **ConvTranspose** with `pads` (strides s, kernel k; dilations 1, no `output_padding`, no
//!    `output_shape`): it runs with zero pads and without its bias, which gives along each axis the full
//!    output of length `L = (H - 1) s + k`. With pads pt (begin) and pb (end) on that axis, the circular
//!    output of length `Lout = L - pt - pb` is `y[j] = sum of full[m] over every m with (m - pt) mod Lout ==
//!    j`: the middle `full[pt .. L - pb]`, whose first pb values get the tail `full[L - pb .. L]` added and
//!    whose last pt values get the head `full[0 .. pt]` added. This is the adjoint of the circular strided
//!    convolution, as the zero-padded transposed convolution is the adjoint of the zero-padded one. It is
//!    built from Slice, Add and Concat, axis 2 then axis 3, the tail and the head folded in one after the
//!    other (so that it stays right when they overlap: it needs only pt <= Lout and pb <= Lout). The bias,
//!    if any, is added at the end as `Add(y, Reshape(bias, [-1, 1, 1]))`.
//! 3. A Conv or ConvTranspose whose pads are absent or all zero is left as it is. So is every other node,
//!    the opset imports, the IR version and all metadata. Hence the rewrite is idempotent: a rewritten
//!    model has no padded convolution left, and [`circular`] then returns its input unchanged.
//! 4. New nodes, values and initializers are named [`NAME_PREFIX`] plus a counter, skipping every name
//!    already in the model (subgraphs included). Slice bounds are int64 initializers, shared between the
//!    nodes that need the same ones. Nodes are inserted right before the convolution they feed (Conv) or
//!    right after the one they read (ConvTranspose), which keeps the node list topologically sorted; a
//!    ConvTranspose's original output name is kept for the final value, so its readers are untouched.
//!
//! # Refused (an [`Error::InvalidModel`] naming the node)
//!
//! `auto_pad` `SAME_UPPER`, `SAME_LOWER` (or anything but `NOTSET` and `VALID`, which pads nothing): the pads
//! then depend on the input's size, and only explicit pads can be made circular. Padded convolutions that
//! are not 2-D (`pads` not of length 4), negative pads, and ConvTransposes with dilations, `output_padding`
//! or `output_shape`. Models older than IR 4 or opset 11, and bytes that are not an ONNX model.
//!
//! # Limits
//!
//! Only the main graph is rewritten: convolutions inside subgraphs (If, Loop, Scan bodies) and in
//! model-local functions keep their zero padding. Convolutions of other domains (e.g. `com.microsoft`'s
//! fused ones) are not touched either. Each rewritten Conv costs two to six more nodes (Slice and Concat,
//! copies of its input) and each ConvTranspose about ten (copies of its output), which ONNX Runtime does
//! not fuse away: the emoji U-Net (16 padded 3x3 convolutions on 8x8 latents) runs some 20-30% slower on a
//! CPU (batch 2).

use std::collections::{BTreeMap, BTreeSet};

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};
use protobuf::{EnumOrUnknown, Message};

use crate::error::{Error, Result};
use crate::limits::{clip, clip_to, quote};

/// The oldest default-domain opset the rewrite accepts: 11 is where Slice takes its bounds as inputs with
/// negative indices, and where Concat, Add and Reshape have the forms it writes.
pub const MIN_OPSET: i64 = 11;

/// The oldest IR version accepted: before 4, every initializer had to be a graph input too.
pub const MIN_IR_VERSION: i64 = 4;

/// The start of the names of every node, value and initializer the rewrite adds.
pub const NAME_PREFIX: &str = "mirage_tile_";

/// What [`circular_with_report`] rewrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Conv nodes whose padding became circular.
    pub convs: usize,
    /// ConvTranspose nodes whose padding became circular.
    pub conv_transposes: usize,
}

impl Report {
    /// All rewritten convolutions.
    pub fn total(&self) -> usize {
        self.convs + self.conv_transposes
    }
}

/// Returns the model with every 2-D Conv and ConvTranspose of its main graph padding circularly (see the
/// module's documentation for the rules). A model with nothing to rewrite comes back byte for byte.
pub fn circular(model: &[u8]) -> Result<Vec<u8>> {
    circular_with_report(model).map(|(bytes, _)| bytes)
}

/// [`circular`], also saying how many convolutions it rewrote.
pub fn circular_with_report(model: &[u8]) -> Result<(Vec<u8>, Report)> {
    let mut proto = ModelProto::parse_from_bytes(model)
        .map_err(|e| Error::model(format!("tileable: not an ONNX model: {}", clip(&e.to_string()))))?;
    let report = rewrite(&mut proto)?;
    if report.total() == 0 {
        return Ok((model.to_vec(), report));
    }
    let bytes = proto
        .write_to_bytes()
        .map_err(|e| Error::model(format!("tileable: writing the rewritten model failed: {}", clip(&e.to_string()))))?;
    Ok((bytes, report))
}

/// Rewrites the main graph of `model` in place.
fn rewrite(model: &mut ModelProto) -> Result<Report> {
    if model.ir_version < MIN_IR_VERSION {
        return Err(Error::model(format!(
            "tileable: the model has IR version {}; circular padding needs {MIN_IR_VERSION} or newer",
            model.ir_version
        )));
    }
    let opset = model.opset_import.iter().find(|o| is_default_domain(&o.domain)).map(|o| o.version);
    match opset {
        None => return Err(Error::model("tileable: the model imports no default-domain (ai.onnx) opset")),
        Some(v) if v < MIN_OPSET => {
            return Err(Error::model(format!(
                "tileable: the model uses opset {v}; circular padding needs opset {MIN_OPSET} or newer"
            )))
        }
        Some(_) => {}
    }
    let graph = model.graph.as_mut().ok_or_else(|| Error::model("tileable: the model has no graph"))?;

    let mut out = Emitter::new(graph);
    let mut report = Report::default();
    for (index, node) in std::mem::take(&mut graph.node).into_iter().enumerate() {
        let ours = is_default_domain(&node.domain);
        if ours && node.op_type == "Conv" {
            report.convs += usize::from(out.conv(node, index)?);
        } else if ours && node.op_type == "ConvTranspose" {
            report.conv_transposes += usize::from(out.conv_transpose(node, index)?);
        } else {
            out.nodes.push(node);
        }
    }
    graph.node = out.nodes;
    graph.initializer.extend(out.initializers);
    Ok(report)
}

fn is_default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

/// The explicit 2-D pads of a Conv or ConvTranspose, after the checks both share: `None` when absent or all
/// zero (nothing to do), else [top, left, bottom, right].
fn pads_2d(node: &NodeProto, who: &str) -> Result<Option<[i64; 4]>> {
    if let Some(a) = attribute(node, "auto_pad") {
        let value = String::from_utf8_lossy(&a.s);
        // VALID pads nothing; NOTSET (or the empty default) means the explicit `pads`.
        if !matches!(value.as_ref(), "" | "NOTSET" | "VALID") {
            return Err(Error::model(format!(
                "tileable: {who} uses auto_pad {}; only explicit pads can be made circular",
                clip_to(&value.escape_debug().to_string(), 32)
            )));
        }
    }
    let Some(pads) = ints(node, "pads", who)? else { return Ok(None) };
    if pads.iter().any(|&p| p < 0) {
        return Err(Error::model(format!("tileable: {who} has negative pads {}", short_ints(pads))));
    }
    if pads.iter().all(|&p| p == 0) {
        return Ok(None);
    }
    match pads {
        &[t, l, b, r] => Ok(Some([t, l, b, r])),
        _ => Err(Error::model(format!(
            "tileable: {who} has pads {}; only 2-D convolutions (4 pads) can be made circular",
            short_ints(pads)
        ))),
    }
}

/// The node's attribute `name`, if any.
fn attribute<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// The ints of the node's attribute `name`, if any; an attribute of that name of another type is refused.
fn ints<'a>(node: &'a NodeProto, name: &str, who: &str) -> Result<Option<&'a [i64]>> {
    match attribute(node, name) {
        None => Ok(None),
        Some(a) if a.type_ == EnumOrUnknown::new(AttributeType::INTS) => Ok(Some(&a.ints)),
        Some(_) => Err(Error::model(format!("tileable: {who} has an attribute {name} that is not a list of ints"))),
    }
}

/// A list of ints from the file for a message: at most a few, with the count when cut.
fn short_ints(v: &[i64]) -> String {
    if v.len() <= 8 {
        format!("{v:?}")
    } else {
        format!("{:?}... ({} values)", &v[..8], v.len())
    }
}

/// How messages name a node: its name, quoted and clipped, or its index when it has none; and its type.
fn describe(node: &NodeProto, index: usize) -> String {
    let name = if node.name.is_empty() { format!("#{index}") } else { quote(&node.name) };
    format!("node {name} ({})", node.op_type)
}

/// Sets the node's `pads` to zeros, keeping the attribute (and its position).
fn zero_pads(node: &mut NodeProto) {
    if let Some(a) = node.attribute.iter_mut().find(|a| a.name == "pads") {
        a.ints.iter_mut().for_each(|p| *p = 0);
    }
}

/// Every name of a graph and of its subgraphs: values, nodes, initializers.
fn all_names(graph: &GraphProto) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    // An explicit stack: the depth of nested subgraphs comes from the file (protobuf's parser bounds it).
    let mut stack = vec![graph];
    while let Some(g) = stack.pop() {
        for v in g.input.iter().chain(&g.output).chain(&g.value_info) {
            names.insert(v.name.clone());
        }
        for t in &g.initializer {
            names.insert(t.name.clone());
        }
        for s in &g.sparse_initializer {
            names.extend(s.values.as_ref().map(|t| t.name.clone()));
            names.extend(s.indices.as_ref().map(|t| t.name.clone()));
        }
        for n in &g.node {
            names.insert(n.name.clone());
            names.extend(n.input.iter().chain(&n.output).cloned());
            for a in &n.attribute {
                stack.extend(a.g.as_ref());
                stack.extend(&a.graphs);
            }
        }
    }
    names
}

/// Builds the new node list of a graph: fresh names, shared int64 initializers, one helper per node kind.
struct Emitter {
    /// Every name in use; fresh names are added as they are made.
    names: BTreeSet<String>,
    next_id: usize,
    /// The int64 initializers made so far, by value, so that equal Slice bounds are one tensor.
    consts: BTreeMap<Vec<i64>, String>,
    initializers: Vec<TensorProto>,
    nodes: Vec<NodeProto>,
}

impl Emitter {
    fn new(graph: &GraphProto) -> Self {
        Emitter {
            names: all_names(graph),
            next_id: 0,
            consts: BTreeMap::new(),
            initializers: Vec::new(),
            nodes: Vec::with_capacity(graph.node.len()),
        }
    }

    /// A name used nowhere in the model yet.
    fn fresh(&mut self) -> String {
        loop {
            let name = format!("{NAME_PREFIX}{}", self.next_id);
            self.next_id += 1;
            if self.names.insert(name.clone()) {
                return name;
            }
        }
    }

    /// A 1-D int64 initializer holding `values` (made once per distinct value).
    fn ints(&mut self, values: &[i64]) -> String {
        if let Some(name) = self.consts.get(values) {
            return name.clone();
        }
        let name = self.fresh();
        let mut t = TensorProto::new();
        t.name = name.clone();
        t.dims = vec![values.len() as i64];
        t.data_type = DataType::INT64 as i32;
        t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(t);
        self.consts.insert(values.to_vec(), name.clone());
        name
    }

    /// Appends a node of the default domain; returns its (fresh) output.
    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh();
        let mut n = NodeProto::new();
        n.op_type = op.to_string();
        n.name = out.clone();
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = vec![out.clone()];
        n.attribute = attrs;
        self.nodes.push(n);
        out
    }

    /// `x[start..end]` along `axis` (ONNX's clamping and negative indices).
    fn slice(&mut self, x: &str, axis: i64, start: i64, end: i64) -> String {
        let s = self.ints(&[start]);
        let e = self.ints(&[end]);
        let a = self.ints(&[axis]);
        self.node("Slice", &[x, &s, &e, &a], Vec::new())
    }

    fn concat(&mut self, parts: &[String], axis: i64) -> String {
        let mut a = AttributeProto::new();
        a.name = "axis".into();
        a.i = axis;
        a.type_ = EnumOrUnknown::new(AttributeType::INT);
        let inputs: Vec<&str> = parts.iter().map(String::as_str).collect();
        self.node("Concat", &inputs, vec![a])
    }

    fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", &[a, b], Vec::new())
    }

    /// `x` padded circularly along `axis`: its last `begin` entries before it, its first `end` after it.
    fn wrap(&mut self, x: &str, axis: i64, begin: i64, end: i64) -> String {
        if begin == 0 && end == 0 {
            return x.to_string();
        }
        let mut parts = Vec::with_capacity(3);
        if begin > 0 {
            parts.push(self.slice(x, axis, -begin, i64::MAX));
        }
        parts.push(x.to_string());
        if end > 0 {
            parts.push(self.slice(x, axis, 0, end));
        }
        self.concat(&parts, axis)
    }

    /// The unpadded transposed convolution's output `full` folded circularly along `axis`: the middle
    /// `full[begin .. L - end]`, plus the tail `full[L - end ..]` on its first `end` entries, plus the head
    /// `full[.. begin]` on its last `begin` entries.
    fn fold(&mut self, full: &str, axis: i64, begin: i64, end: i64) -> String {
        if begin == 0 && end == 0 {
            return full.to_string();
        }
        let head = (begin > 0).then(|| self.slice(full, axis, 0, begin));
        let tail = (end > 0).then(|| self.slice(full, axis, -end, i64::MAX));
        let mut y = self.slice(full, axis, begin, if end > 0 { -end } else { i64::MAX });
        if let Some(tail) = tail {
            let first = self.slice(&y, axis, 0, end);
            let first = self.add(&first, &tail);
            let rest = self.slice(&y, axis, end, i64::MAX);
            y = self.concat(&[first, rest], axis);
        }
        if let Some(head) = head {
            let rest = self.slice(&y, axis, 0, -begin);
            let last = self.slice(&y, axis, -begin, i64::MAX);
            let last = self.add(&last, &head);
            y = self.concat(&[rest, last], axis);
        }
        y
    }

    /// Emits a Conv, rewritten when it is padded; returns whether it was.
    fn conv(&mut self, mut node: NodeProto, index: usize) -> Result<bool> {
        let who = describe(&node, index);
        let Some([top, left, bottom, right]) = pads_2d(&node, &who)? else {
            self.nodes.push(node);
            return Ok(false);
        };
        let x = match node.input.first() {
            Some(x) if !x.is_empty() => x.clone(),
            _ => return Err(Error::model(format!("tileable: {who} has no input"))),
        };
        let x = self.wrap(&x, 2, top, bottom);
        let x = self.wrap(&x, 3, left, right);
        node.input[0] = x;
        zero_pads(&mut node);
        self.nodes.push(node);
        Ok(true)
    }

    /// Emits a ConvTranspose, rewritten when it is padded; returns whether it was.
    fn conv_transpose(&mut self, mut node: NodeProto, index: usize) -> Result<bool> {
        let who = describe(&node, index);
        let Some([top, left, bottom, right]) = pads_2d(&node, &who)? else {
            self.nodes.push(node);
            return Ok(false);
        };
        if ints(&node, "dilations", &who)?.is_some_and(|d| d.iter().any(|&v| v != 1)) {
            return Err(Error::model(format!("tileable: {who} is dilated; only dilation 1 can be made circular")));
        }
        if ints(&node, "output_padding", &who)?.is_some_and(|p| p.iter().any(|&v| v != 0)) {
            return Err(Error::model(format!("tileable: {who} has output_padding; it cannot be made circular")));
        }
        if attribute(&node, "output_shape").is_some() {
            return Err(Error::model(format!(
                "tileable: {who} has output_shape; only explicit pads can be made circular"
            )));
        }
        let out = match node.output.as_slice() {
            [out] if !out.is_empty() => out.clone(),
            _ => return Err(Error::model(format!("tileable: {who} must have exactly one output"))),
        };
        // The bias goes on after the fold: added to every full position, it would count twice where the
        // head and the tail are folded back.
        let bias = node.input.get(2).filter(|b| !b.is_empty()).cloned();
        node.input.truncate(2);
        zero_pads(&mut node);
        let full = self.fresh();
        node.output[0] = full.clone();
        self.nodes.push(node);

        let y = self.fold(&full, 2, top, bottom);
        let mut y = self.fold(&y, 3, left, right);
        if let Some(bias) = bias {
            let shape = self.ints(&[-1, 1, 1]);
            let b = self.node("Reshape", &[&bias, &shape], Vec::new());
            y = self.add(&y, &b);
        }
        // The last node emitted made `y` (some pad is non-zero, so `fold` emitted nodes) and nothing reads
        // it yet: it takes the original output name, so the ConvTranspose's readers need no change.
        match self.nodes.last_mut() {
            Some(last) if last.output.len() == 1 && last.output[0] == y => last.output[0] = out,
            _ => return Err(Error::model(format!("tileable: {who}: internal error folding the output"))),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onnx_protobuf::OperatorSetIdProto;
    use protobuf::MessageField;

    fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
        let mut a = AttributeProto::new();
        a.name = name.into();
        a.ints = v.to_vec();
        a.type_ = EnumOrUnknown::new(AttributeType::INTS);
        a
    }

    fn model(op: &str, name: &str, pads: &[i64], bias: bool) -> ModelProto {
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = name.into();
        n.input = vec!["x".into(), "w".into()];
        if bias {
            n.input.push("b".into());
        }
        n.output = vec!["y".into()];
        n.attribute = vec![attr_ints("pads", pads)];
        let mut g = GraphProto::new();
        g.node = vec![n];
        let mut o = OperatorSetIdProto::new();
        o.version = 17;
        let mut m = ModelProto::new();
        m.ir_version = 8;
        m.opset_import = vec![o];
        m.graph = MessageField::some(g);
        m
    }

    fn ops(m: &ModelProto) -> Vec<String> {
        m.graph.node.iter().map(|n| n.op_type.clone()).collect()
    }

    #[test]
    fn conv_gets_slices_and_concats_before_it() {
        let mut m = model("Conv", "c", &[1, 0, 2, 1], false);
        let r = rewrite(&mut m).unwrap();
        assert_eq!(r, Report { convs: 1, conv_transposes: 0 });
        // Axis 2: two slices and a concat; axis 3 (right only): one slice and a concat.
        assert_eq!(ops(&m), ["Slice", "Slice", "Concat", "Slice", "Concat", "Conv"]);
        let conv = m.graph.node.last().unwrap();
        assert_eq!(conv.input[0], m.graph.node[4].output[0]);
        assert_eq!(attribute(conv, "pads").unwrap().ints, [0, 0, 0, 0]);
        // Equal bounds share one initializer (2 is both an end and an axis here).
        let names: BTreeSet<_> = m.graph.initializer.iter().map(|t| t.name.clone()).collect();
        assert_eq!(names.len(), m.graph.initializer.len());
        assert_eq!(names.len(), 6); // -1, MAX, 2, 0, 3, 1
                                    // A second pass finds nothing to do.
        assert_eq!(rewrite(&mut m).unwrap(), Report::default());
    }

    #[test]
    fn conv_transpose_keeps_its_output_name_and_adds_the_bias_last() {
        let mut m = model("ConvTranspose", "ct", &[1, 1, 1, 1], true);
        let r = rewrite(&mut m).unwrap();
        assert_eq!(r, Report { convs: 0, conv_transposes: 1 });
        let nodes = &m.graph.node;
        assert_eq!(nodes[0].op_type, "ConvTranspose");
        assert_eq!(nodes[0].input, ["x", "w"]);
        let last = nodes.last().unwrap();
        assert_eq!((last.op_type.as_str(), last.output[0].as_str()), ("Add", "y"));
        // Every value is defined once, before it is read.
        let mut defined: BTreeSet<String> = ["x", "w", "b"].map(String::from).into();
        defined.extend(m.graph.initializer.iter().map(|t| t.name.clone()));
        for n in nodes {
            assert!(n.input.iter().all(|i| defined.contains(i)), "{n:?}");
            for o in &n.output {
                assert!(defined.insert(o.clone()), "{o} defined twice");
            }
        }
    }

    #[test]
    fn fresh_names_skip_existing_ones() {
        let mut m = model("Conv", "mirage_tile_1", &[1, 1, 1, 1], false);
        m.graph.as_mut().unwrap().node[0].input[1] = "mirage_tile_0".into();
        rewrite(&mut m).unwrap();
        let made: Vec<&str> = m.graph.initializer.iter().map(|t| t.name.as_str()).collect();
        assert!(!made.contains(&"mirage_tile_0") && !made.contains(&"mirage_tile_1"), "{made:?}");
    }

    #[test]
    fn unpadded_and_foreign_convs_are_left_alone() {
        let mut m = model("Conv", "c", &[0, 0, 0, 0], false);
        let before = m.clone();
        assert_eq!(rewrite(&mut m).unwrap(), Report::default());
        assert_eq!(m, before);
        let mut m = model("Conv", "c", &[1, 1, 1, 1], false);
        m.graph.as_mut().unwrap().node[0].domain = "com.microsoft".into();
        assert_eq!(rewrite(&mut m).unwrap(), Report::default());
        let mut m = model("Conv", "c", &[0, 0, 0, 0], false);
        let mut valid = AttributeProto::new();
        valid.name = "auto_pad".into();
        valid.s = b"VALID".to_vec();
        valid.type_ = EnumOrUnknown::new(AttributeType::STRING);
        m.graph.as_mut().unwrap().node[0].attribute = vec![valid];
        assert_eq!(rewrite(&mut m).unwrap(), Report::default());
    }

    #[test]
    fn refusals_name_the_node_briefly() {
        let long = "n".repeat(10_000);
        let cases: [(ModelProto, &str); 4] = [
            (model("Conv", &long, &[1, 1], false), "only 2-D convolutions"),
            (model("Conv", "c", &[1, -1, 1, 1], false), "negative pads"),
            (
                {
                    let mut m = model("ConvTranspose", "ct", &[1, 1, 1, 1], false);
                    m.graph.as_mut().unwrap().node[0].attribute.push(attr_ints("dilations", &[2, 2]));
                    m
                },
                "dilated",
            ),
            (
                {
                    let mut m = model("ConvTranspose", "ct", &[1, 1, 1, 1], false);
                    m.graph.as_mut().unwrap().node[0].attribute.push(attr_ints("output_padding", &[1, 1]));
                    m
                },
                "output_padding",
            ),
        ];
        for (mut m, want) in cases {
            let e = rewrite(&mut m).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("tileable: node") && e.len() < 300, "{e}");
        }
    }
}
