//! Neural-network building blocks over [`GraphBuilder`]'s public methods: the layers the U-Net needs
//! (GroupNorm, Linear, attention pieces, pooling, nearest upsampling) written as opset-17 operators, each
//! computing exactly what its torch counterpart computes, so that the parity tests can hold 1e-4.
//!
//! Weight names are read from a [`Weights`] map under the trainer's VarStore paths (`{prefix}.weight`,
//! `{prefix}.bias`) and become initializers of the same name.

use super::onnx::{Attr, GraphBuilder};
use super::vae::Weights;
use crate::error::{Error, Result};

/// torch's default GroupNorm epsilon (`nn::GroupNormConfig::eps`), used identically on both sides.
pub const GROUP_NORM_EPS: f32 = 1e-5;

impl GraphBuilder {
    /// Adds the weight `name` from `weights` as an initializer (once; a second use reads the same value).
    pub fn weight(&mut self, weights: &Weights, name: &str) -> Result<String> {
        if self.has_value(name) {
            return Ok(name.to_string());
        }
        let (shape, data) =
            weights.get(name).ok_or_else(|| Error::invalid(format!("onnx export: weight {name:?} is missing")))?;
        self.initializer(name, shape, data)
    }

    /// torch's `Conv2d` with square kernel, zero padding (k - 1) / 2 and the given stride:
    /// `{prefix}.weight` [Cout, Cin, k, k], `{prefix}.bias` [Cout].
    pub fn conv2d(&mut self, weights: &Weights, prefix: &str, x: &str, stride: i64) -> Result<String> {
        let w = self.weight(weights, &format!("{prefix}.weight"))?;
        let b = self.weight(weights, &format!("{prefix}.bias"))?;
        let k = weights.get(&w).map(|(s, _)| s.get(2).copied().unwrap_or(1)).unwrap_or(1);
        self.conv(x, &w, Some(&b), stride, (k - 1) / 2, 1)
    }

    /// torch's `Linear` on a 2-D input: x [N, in] -> [N, out] = x W^T + b with `{prefix}.weight` [out, in].
    /// Gemm with transB = 1 reads torch's layout as is.
    pub fn linear(&mut self, weights: &Weights, prefix: &str, x: &str) -> Result<String> {
        let w = self.weight(weights, &format!("{prefix}.weight"))?;
        let b = self.weight(weights, &format!("{prefix}.bias"))?;
        self.node("Gemm", &[x, &w, &b], vec![("transB", Attr::Int(1))])
    }

    /// torch's `Linear` on an input of any rank: x [..., in] -> [..., out] = x W^T + b. Gemm is 2-D only,
    /// so this is MatMul with the transposed weight (a Transpose of the initializer, which ONNX Runtime
    /// folds into a constant at load) plus the bias.
    pub fn linear_nd(&mut self, weights: &Weights, prefix: &str, x: &str) -> Result<String> {
        let w = self.weight(weights, &format!("{prefix}.weight"))?; // [out, in]
        let b = self.weight(weights, &format!("{prefix}.bias"))?; // [out]
        let wt = self.transpose(&w, &[1, 0])?; // [in, out]
        let y = self.matmul(x, &wt)?;
        self.add(&y, &b)
    }

    /// torch's `GroupNorm(groups, C)` on x [N, C, H, W] (H, W static), eps [`GROUP_NORM_EPS`], affine
    /// `{prefix}.weight`, `{prefix}.bias` [C]. Opset 17 has no GroupNormalization (it came in 18), so it is
    /// spelled out: reshape to [N, G, C/G*H*W], subtract the mean, divide by sqrt(biased variance + eps),
    /// reshape back, then the per-channel affine (weights reshaped to [C, 1, 1] to broadcast).
    pub fn group_norm(
        &mut self,
        weights: &Weights,
        prefix: &str,
        x: &str,
        groups: i64,
        chw: (i64, i64, i64),
    ) -> Result<String> {
        let (c, h, w) = chw;
        let g = self.reshape(x, &[0, groups, -1])?; // [N, G, C/G*H*W]
        let mean = self.node("ReduceMean", &[&g], vec![("axes", Attr::Ints(vec![2])), ("keepdims", Attr::Int(1))])?; // [N, G, 1]
        let d = self.node("Sub", &[&g, &mean], Vec::new())?; // [N, G, L]
        let sq = self.mul(&d, &d)?;
        let var = self.node("ReduceMean", &[&sq], vec![("axes", Attr::Ints(vec![2])), ("keepdims", Attr::Int(1))])?; // [N, G, 1]
        let eps = self.scalar_f32("gn_eps", GROUP_NORM_EPS)?;
        let ve = self.add(&var, &eps)?;
        let sd = self.node("Sqrt", &[&ve], Vec::new())?;
        let y = self.node("Div", &[&d, &sd], Vec::new())?; // [N, G, L]
        let y = self.reshape(&y, &[0, c, h, w])?; // [N, C, H, W]
        let gamma = self.weight(weights, &format!("{prefix}.weight"))?;
        let beta = self.weight(weights, &format!("{prefix}.bias"))?;
        let gamma = self.reshape(&gamma, &[c, 1, 1])?; // [C, 1, 1]
        let beta = self.reshape(&beta, &[c, 1, 1])?;
        let y = self.mul(&y, &gamma)?;
        self.add(&y, &beta)
    }

    /// 2x2 average pooling with stride 2 (torch's `avg_pool2d(x, 2)`): [N, C, H, W] -> [N, C, H/2, W/2].
    pub fn avg_pool2(&mut self, x: &str) -> Result<String> {
        self.node(
            "AveragePool",
            &[x],
            vec![("kernel_shape", Attr::Ints(vec![2, 2])), ("strides", Attr::Ints(vec![2, 2]))],
        )
    }

    /// Nearest-neighbour upsampling by 2 as torch's `upsample_nearest2d`: source index = floor(dst / 2),
    /// i.e. Resize with asymmetric coordinates and floor rounding. [N, C, H, W] -> [N, C, 2H, 2W].
    pub fn upsample_nearest2(&mut self, x: &str) -> Result<String> {
        let name = self.fresh_name("scales");
        let scales = self.initializer(&name, &[4], &[1.0, 1.0, 2.0, 2.0])?;
        // The empty name leaves out the optional roi input (unused by "asymmetric").
        self.node(
            "Resize",
            &[x, "", &scales],
            vec![
                ("mode", Attr::String("nearest".into())),
                ("coordinate_transformation_mode", Attr::String("asymmetric".into())),
                ("nearest_mode", Attr::String("floor".into())),
            ],
        )
    }

    /// Concatenation along `axis`.
    pub fn concat(&mut self, inputs: &[&str], axis: i64) -> Result<String> {
        self.node("Concat", inputs, vec![("axis", Attr::Int(axis))])
    }

    /// Permutes axes.
    pub fn transpose(&mut self, x: &str, perm: &[i64]) -> Result<String> {
        self.node("Transpose", &[x], vec![("perm", Attr::Ints(perm.to_vec()))])
    }

    /// Batched matrix product (numpy semantics, as torch's `matmul`).
    pub fn matmul(&mut self, a: &str, b: &str) -> Result<String> {
        self.node("MatMul", &[a, b], Vec::new())
    }

    /// Softmax over the last axis.
    pub fn softmax_last(&mut self, x: &str) -> Result<String> {
        self.node("Softmax", &[x], vec![("axis", Attr::Int(-1))])
    }

    /// Picks index `index` of `axis`, removing that axis (torch's `select`).
    pub fn select(&mut self, x: &str, axis: i64, index: i64) -> Result<String> {
        let i = self.const_i64("index", &[], &[index])?;
        self.node("Gather", &[x, &i], vec![("axis", Attr::Int(axis))])
    }
}
