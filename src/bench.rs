//! Measuring, for `mirage bench` (feature `cli`): timed calls, the arithmetic of a model run and the
//! machine's matrix-multiply rate, so that a sampler step's time can be set beside what the hardware does.
//!
//! - [`count_flops`]: the FLOPs of one run of a model, read off ONNX Runtime's own profile of that run (the
//!   shapes every convolution and matrix product really had), with a multiply-add counted as 2 FLOPs. Only
//!   Conv, ConvTranspose, MatMul and Gemm are counted: normalisations, activations and additions are a few
//!   per cent of a U-Net's arithmetic and bound by memory, not by the multiply units.
//! - [`sgemm_gflops`]: ONNX Runtime's own single-precision matrix product (MLAS) on an n x n x n problem,
//!   best of a few runs: the rate a convolution-heavy model can at most approach on this machine.
//! - [`time_ms`], [`peak_rss`]: medians of timed calls, and this process's peak resident memory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::export::onnx::{encode, GraphBuilder};
use crate::runtime::{self, Provider, Tune};

/// The arithmetic of one model run.
#[derive(Clone, Debug, Default)]
pub struct Flops {
    /// FLOPs of the counted operators (multiply-add = 2).
    pub total: f64,
    /// The same by operator type (Conv, ConvTranspose, MatMul, Gemm).
    pub by_op: BTreeMap<String, f64>,
    /// Nodes the profile showed, and how many of them were counted.
    pub nodes: usize,
    pub counted: usize,
}

/// One input of a model run: its name and value.
pub type Feed = (String, ort::value::DynValue);

/// The FLOPs of one run of the model `bytes` on `feeds`. The model runs once on a CPU session with basic
/// graph optimizations only, so that its nodes keep their operators and shapes (the layout rewrites and
/// fusions of the full level would rename them), with ONNX Runtime's profiler on; the profile is read and
/// deleted.
pub fn count_flops(bytes: &[u8], what: &str, feeds: &[Feed]) -> Result<Flops> {
    static SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let prefix = std::env::temp_dir().join(format!("mirage-profile-{}-{n}", std::process::id()));
    let tune = Tune { basic: true, profile_to: Some(prefix), ..Tune::default() };
    let mut session = runtime::global()?.cpu_session(runtime::ModelSource::Bytes(bytes), what, &tune)?;
    let inputs: Vec<(&str, ort::session::SessionInputValue<'_>)> =
        feeds.iter().map(|(n, v)| (n.as_str(), v.into())).collect();
    session.run(inputs)?;
    let file = PathBuf::from(session.end_profiling()?);
    let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e));
    let _ = std::fs::remove_file(&file);
    flops_of_profile(&text?)
}

/// Sums the FLOPs of the node events of an ONNX Runtime profile (a JSON array of trace events; a node's
/// kernel event is named `<node>_kernel_time` and carries `op_name`, `input_type_shape` and
/// `output_type_shape` in its `args`).
pub fn flops_of_profile(json: &str) -> Result<Flops> {
    let events: serde_json::Value =
        serde_json::from_str(json).map_err(|e| Error::Inference(format!("ONNX Runtime profile: {e}")))?;
    let events = events.as_array().ok_or_else(|| Error::Inference("ONNX Runtime profile: not a JSON array".into()))?;
    let mut out = Flops::default();
    for e in events {
        let name = e.get("name").and_then(|v| v.as_str()).unwrap_or("");
        if e.get("cat").and_then(|v| v.as_str()) != Some("Node") || !name.ends_with("_kernel_time") {
            continue;
        }
        out.nodes += 1;
        let args = &e["args"];
        let op = args.get("op_name").and_then(|v| v.as_str()).unwrap_or("");
        let shapes = |key: &str| -> Vec<Vec<f64>> {
            args.get(key)
                .and_then(|v| v.as_array())
                .map(|list| {
                    list.iter()
                        .map(|t| {
                            // {"float": [1, 4, 8, 8]}: one entry, keyed by the element type.
                            t.as_object()
                                .and_then(|o| o.values().next())
                                .and_then(|d| d.as_array())
                                .map(|d| d.iter().filter_map(|x| x.as_f64()).collect())
                                .unwrap_or_default()
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let (ins, outs) = (shapes("input_type_shape"), shapes("output_type_shape"));
        let prod = |s: &[f64]| s.iter().product::<f64>();
        let tail = |s: &Vec<f64>| s.get(1..).map_or(0.0, prod);
        let flops = match (op, ins.as_slice(), outs.first()) {
            // W [Cout, Cin/group, kh, kw]: each output value is Cin/group * kh * kw multiply-adds.
            ("Conv" | "FusedConv", [_, w, ..], Some(y)) => 2.0 * prod(y) * tail(w),
            // W [Cin, Cout/group, kh, kw]: each input value feeds Cout/group * kh * kw of them.
            ("ConvTranspose", [x, w, ..], Some(_)) => 2.0 * prod(x) * tail(w),
            // A [..., M, K]: each output value is K multiply-adds.
            ("MatMul" | "FusedMatMul", [a, ..], Some(y)) => 2.0 * prod(y) * a.last().copied().unwrap_or(0.0),
            // Y [M, N]; A holds M x K values whether transposed or not.
            ("Gemm", [a, ..], Some(y)) if !y.is_empty() && y[0] > 0.0 => 2.0 * prod(y) * prod(a) / y[0],
            _ => continue,
        };
        out.counted += 1;
        out.total += flops;
        *out.by_op.entry(op.to_string()).or_default() += flops;
    }
    if out.nodes == 0 {
        return Err(Error::Inference("ONNX Runtime profile: no node events (profiling off?)".into()));
    }
    Ok(out)
}

/// ONNX Runtime's single-precision matrix product on this machine, in GFLOP/s: the best of `runs` runs of
/// an n x n by n x n MatMul on a CPU session with the runtime's thread settings.
pub fn sgemm_gflops(n: usize, runs: usize) -> Result<f64> {
    if !(16..=8192).contains(&n) || runs == 0 {
        return Err(Error::invalid("sgemm: n must be 16..=8192 and runs at least 1"));
    }
    let d = n as i64;
    let mut g = GraphBuilder::new("sgemm");
    let a = g.input("a", &[d, d])?;
    let values = crate::rng::Noise::new(7).normals(n * n);
    let b = g.initializer("b", &[d, d], &values)?;
    let y = g.node("MatMul", &[&a, &b], vec![])?;
    g.output(&y, "y", &[d, d])?;
    let bytes = encode(&g.finish()?)?;
    let mut session = runtime::global()?.session(&bytes, "bench: sgemm", Some(Provider::Cpu))?;
    let a = ort::value::Tensor::from_array((vec![d, d], crate::rng::Noise::new(8).normals(n * n)))?.into_dyn();
    let mut best = f64::INFINITY;
    for i in 0..runs + 2 {
        let t = std::time::Instant::now();
        session.run(vec![("a", ort::session::SessionInputValue::from(&a))])?;
        if i >= 2 {
            best = best.min(t.elapsed().as_secs_f64());
        }
    }
    Ok(2.0 * (n as f64).powi(3) / best / 1e9)
}

/// Times `f` `iters` times after 3 untimed calls: [median, p10, p90] in milliseconds.
pub fn time_ms(iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<[f64; 3]> {
    if iters == 0 {
        return Err(Error::invalid("bench: at least one timed call"));
    }
    for _ in 0..3 {
        f()?;
    }
    let mut ms = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = std::time::Instant::now();
        f()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let q = |f: f64| ms[((ms.len() - 1) as f64 * f).round() as usize];
    Ok([q(0.5), q(0.1), q(0.9)])
}

/// This process's peak resident memory (VmHWM), in bytes; 0 where /proc is missing.
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_flops_by_operator() {
        // Shapes as ONNX Runtime writes them; fence events and uncounted operators are skipped.
        let json = r#"[
          {"cat":"Session","name":"model_run","args":{}},
          {"cat":"Node","name":"c_fence_before","args":{"op_name":"Conv"}},
          {"cat":"Node","name":"c_kernel_time","args":{"op_name":"Conv",
            "input_type_shape":[{"float":[2,4,8,8]},{"float":[16,4,3,3]},{"float":[16]}],
            "output_type_shape":[{"float":[2,16,8,8]}]}},
          {"cat":"Node","name":"m_kernel_time","args":{"op_name":"MatMul",
            "input_type_shape":[{"float":[2,4,16,32]},{"float":[2,4,32,16]}],
            "output_type_shape":[{"float":[2,4,16,16]}]}},
          {"cat":"Node","name":"g_kernel_time","args":{"op_name":"Gemm",
            "input_type_shape":[{"float":[3,5]},{"float":[7,5]},{"float":[7]}],
            "output_type_shape":[{"float":[3,7]}]}},
          {"cat":"Node","name":"t_kernel_time","args":{"op_name":"ConvTranspose",
            "input_type_shape":[{"float":[1,8,4,4]},{"float":[8,2,2,2]}],
            "output_type_shape":[{"float":[1,2,8,8]}]}},
          {"cat":"Node","name":"s_kernel_time","args":{"op_name":"Sigmoid",
            "input_type_shape":[{"float":[2,16,8,8]}],"output_type_shape":[{"float":[2,16,8,8]}]}}
        ]"#;
        let f = flops_of_profile(json).unwrap();
        let conv = 2.0 * (2 * 16 * 8 * 8) as f64 * (4 * 3 * 3) as f64;
        let matmul = 2.0 * (2 * 4 * 16 * 16) as f64 * 32.0;
        let gemm = 2.0 * 21.0 * 5.0;
        let convt = 2.0 * (8 * 4 * 4) as f64 * (2 * 2 * 2) as f64;
        assert_eq!(f.by_op["Conv"], conv);
        assert_eq!(f.by_op["MatMul"], matmul);
        assert_eq!(f.by_op["Gemm"], gemm);
        assert_eq!(f.by_op["ConvTranspose"], convt);
        assert_eq!(f.total, conv + matmul + gemm + convt);
        assert_eq!((f.nodes, f.counted), (5, 4));
        assert!(flops_of_profile("[]").is_err());
        assert!(flops_of_profile("{").is_err());
    }
}
