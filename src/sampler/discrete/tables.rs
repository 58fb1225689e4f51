//! The numbers diffusers' schedulers are made of, computed the way torch (float32) and numpy (float64)
//! compute them, so that results agree to the last bits where that is cheap: betas, alphas_cumprod,
//! timestep spacings, sigmas, Karras sigmas and their timesteps.

use super::config::{Betas, Spacing};

/// `torch.linspace(start, end, n, dtype=torch.float32)` on the CPU, value for value: torch's scalar kernel
/// counts the first half up from `start` and the second half down from `end`, in float32.
pub(crate) fn torch_linspace(start: f32, end: f32, n: usize) -> Vec<f32> {
    match n {
        0 => return Vec::new(),
        1 => return vec![start],
        _ => {}
    }
    let step = (end - start) / (n - 1) as f32;
    let halfway = n / 2;
    (0..n).map(|i| if i < halfway { start + step * i as f32 } else { end - step * (n - i - 1) as f32 }).collect()
}

/// GLIDE's cosine schedule (`betas_for_alpha_bar`, max_beta 0.999), in float64 then float32.
fn squared_cos_betas(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
    (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// The training betas (float32, as diffusers keeps them).
pub(crate) fn betas(schedule: &Betas, n: usize) -> Vec<f32> {
    match schedule {
        Betas::Linear { start, end } => torch_linspace(*start as f32, *end as f32, n),
        Betas::ScaledLinear { start, end } => {
            torch_linspace(start.sqrt() as f32, end.sqrt() as f32, n).into_iter().map(|b| b * b).collect()
        }
        Betas::SquaredCos => squared_cos_betas(n),
        Betas::Trained(b) => b.iter().map(|&b| b as f32).collect(),
    }
}

/// `torch.cumprod(1 - betas)`: torch's CPU kernel accumulates float32 products in float64.
pub(crate) fn alphas_cumprod(betas: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    betas
        .iter()
        .map(|&b| {
            acc *= (1.0f32 - b) as f64;
            acc as f32
        })
        .collect()
}

/// `rescale_zero_terminal_snr` (Algorithm 1 of "Common Diffusion Noise Schedules and Sample Steps are
/// Flawed"): shifts and scales sqrt(alphas_cumprod) so that the last one is 0 and the first unchanged.
pub(crate) fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let mut s: Vec<f32> = alphas_cumprod(betas).into_iter().map(f32::sqrt).collect();
    let (first, last) = (s[0], s[s.len() - 1]);
    let factor = first / (first - last);
    for v in &mut s {
        *v -= last;
        *v *= factor;
    }
    let bar: Vec<f32> = s.iter().map(|v| v * v).collect();
    (0..bar.len()).map(|i| 1.0 - if i == 0 { bar[0] } else { bar[i] / bar[i - 1] }).collect()
}

/// `numpy.linspace(start, stop, num, endpoint)` in float64.
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize, endpoint: bool) -> Vec<f64> {
    let div = if endpoint { num.saturating_sub(1) } else { num };
    let delta = stop - start;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64).collect();
    if div > 0 {
        let step = delta / div as f64;
        for v in &mut y {
            *v = if step == 0.0 { *v / div as f64 * delta } else { *v * step };
        }
    } else {
        for v in &mut y {
            *v *= delta;
        }
    }
    for v in &mut y {
        *v += start;
    }
    if endpoint && num > 1 {
        y[num - 1] = stop;
    }
    y
}

/// `numpy.arange(start, stop, step)` for floats: its length is ceil((stop - start) / step) and its values
/// `start + i * delta`, where delta is (start + step) - start as numpy's fill computes it.
pub(crate) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let delta = (start + step) - start;
    (0..len).map(|i| if i == 0 { start } else { start + i as f64 * delta }).collect()
}

/// `numpy.round` (half to even) of a non-negative float64, as an integer.
pub(crate) fn np_round(v: f64) -> i64 {
    v.round_ties_even() as i64
}

/// Integer inference timesteps, descending, as DDIM / PNDM / Euler (and DPM's spacings, see
/// [`dpm_timesteps`]) compute them for `n` steps over `train` training timesteps. Values can exceed the
/// table when steps_offset is large; callers check.
pub(crate) fn spaced_timesteps(spacing: Spacing, train: usize, n: usize, offset: usize) -> Vec<i64> {
    match spacing {
        Spacing::Linspace => np_linspace(0.0, (train - 1) as f64, n, true).into_iter().rev().map(np_round).collect(),
        Spacing::Leading => {
            let ratio = (train / n) as i64;
            (0..n as i64).rev().map(|i| i * ratio + offset as i64).collect()
        }
        Spacing::Trailing => {
            let ratio = train as f64 / n as f64;
            np_arange(train as f64, 0.0, -ratio).into_iter().map(|t| np_round(t) - 1).collect()
        }
    }
}

/// Euler's float timesteps: linspace stays fractional (float32), leading / trailing as integers.
pub(crate) fn euler_timesteps(spacing: Spacing, train: usize, n: usize, offset: usize) -> Vec<f32> {
    match spacing {
        Spacing::Linspace => {
            np_linspace(0.0, (train - 1) as f64, n, true).into_iter().rev().map(|t| t as f32).collect()
        }
        _ => spaced_timesteps(spacing, train, n, offset).into_iter().map(|t| t as f32).collect(),
    }
}

/// DPMSolverMultistepScheduler's timesteps: its spacings take n + 1 points and drop the last, up to
/// `last` (num_train_timesteps less the lambda-clipped ones).
pub(crate) fn dpm_timesteps(spacing: Spacing, train: usize, last: usize, n: usize, offset: usize) -> Vec<i64> {
    match spacing {
        Spacing::Linspace => {
            let mut t: Vec<i64> =
                np_linspace(0.0, last as f64 - 1.0, n + 1, true).into_iter().rev().map(np_round).collect();
            t.pop();
            t
        }
        Spacing::Leading => {
            let ratio = (last / (n + 1)) as i64;
            (1..=n as i64).rev().map(|i| i * ratio + offset as i64).collect()
        }
        Spacing::Trailing => {
            let ratio = train as f64 / n as f64;
            np_arange(last as f64, 0.0, -ratio).into_iter().map(|t| np_round(t) - 1).collect()
        }
    }
}

/// sigma(t) = sqrt((1 - alphas_cumprod) / alphas_cumprod), in float32 as torch computes it.
pub(crate) fn sigmas_of(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect()
}

/// `numpy.interp(x, arange(len(fp)), fp)` in float64.
pub(crate) fn np_interp(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x.is_nan() {
        return x;
    }
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return fp[j] as f64;
    }
    let slope = (fp[j + 1] as f64 - fp[j] as f64) / 1.0;
    slope * (x - j as f64) + fp[j] as f64
}

/// Karras et al.'s sigmas (rho = 7) from `max` down to `min`, `n` of them, in float64.
pub(crate) fn karras(min: f64, max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let (min_inv, max_inv) = (min.powf(1.0 / rho), max.powf(1.0 / rho));
    np_linspace(0.0, 1.0, n, true).into_iter().map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho)).collect()
}

/// diffusers' `_sigma_to_t`: the fractional timestep whose log-sigma `sigma` is, interpolating linearly in
/// log sigma between the training timesteps (`log_sigmas` is float32, as numpy's log of the float32 sigmas).
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // The last index whose log-sigma is <= log_sigma (0 if none), at most len - 2.
    let low = log_sigmas.iter().rposition(|&l| log_sigma - l as f64 >= 0.0).unwrap_or(0).min(log_sigmas.len() - 2);
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((lo as f64 - log_sigma) / (lo - hi) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_linspace_counts_from_both_ends() {
        assert_eq!(torch_linspace(0.0, 7.0, 8), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!(torch_linspace(0.5, 0.25, 1), [0.5]);
        // First half from the start, second half from the end: the last value is `end` exactly.
        let v = torch_linspace(0.0001, 0.02, 1000);
        assert_eq!((v[0], v[999]), (0.0001, 0.02));
        let step = (0.02f32 - 0.0001) / 999.0;
        assert_eq!(v[10], 0.0001 + step * 10.0);
        assert_eq!(v[499], 0.0001 + step * 499.0);
        assert_eq!(v[500], 0.02 - step * 499.0);
        assert_eq!(v[990], 0.02 - step * 9.0);
    }

    #[test]
    fn stable_diffusion_betas_and_alphas_cumprod() {
        // scaled_linear 0.00085 .. 0.012 over 1000: sqrt-space linspace, squared.
        let b = betas(&Betas::ScaledLinear { start: 0.00085, end: 0.012 }, 1000);
        assert_eq!(b.len(), 1000);
        assert!((b[0] as f64 - 0.00085).abs() < 1e-10);
        assert!((b[999] as f64 - 0.012).abs() < 1e-9);
        let mid = (0.00085f64.sqrt() + (0.012f64.sqrt() - 0.00085f64.sqrt()) * 500.0 / 999.0).powi(2);
        assert!((b[500] as f64 - mid).abs() < 1e-9);
        let ac = alphas_cumprod(&b);
        assert_eq!(ac[0], 1.0 - b[0]);
        // The well-known SD values: alphas_cumprod[999] ~ 0.0047, sigma_max ~ 14.6146.
        let exact: f64 = b.iter().map(|&b| (1.0 - b) as f64).product();
        assert!((ac[999] as f64 - exact).abs() < 1e-9 && (ac[999] - 0.004_7).abs() < 1e-4, "{}", ac[999]);
        let s = sigmas_of(&ac);
        assert!((s[999] - 14.6146).abs() < 1e-3, "{}", s[999]);
        assert!((s[0] - 0.0292).abs() < 1e-4, "{}", s[0]);
        // linear 0.0001 .. 0.02
        let b = betas(&Betas::Linear { start: 0.0001, end: 0.02 }, 1000);
        assert_eq!((b[0], b[999]), (0.0001, 0.02));
    }

    #[test]
    fn cosine_betas_and_zero_snr() {
        let b = betas(&Betas::SquaredCos, 1000);
        let ab = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
        assert_eq!(b[0], (1.0 - ab(0.001) / ab(0.0)) as f32);
        assert_eq!(b[999], 0.999); // capped
        let b = betas(&Betas::ScaledLinear { start: 0.00085, end: 0.012 }, 1000);
        let r = rescale_zero_terminal_snr(&b);
        let ac = alphas_cumprod(&r);
        assert_eq!(ac[999], 0.0);
        assert_eq!(r[999], 1.0);
        // The first alphas_cumprod is kept (up to float32 rounding).
        assert!((ac[0] - (1.0 - b[0])).abs() < 1e-6);
    }

    #[test]
    fn numpy_helpers() {
        assert_eq!(np_linspace(0.0, 999.0, 4, true), [0.0, 333.0, 666.0, 999.0]);
        assert_eq!(np_linspace(0.0, 1.0, 1, true), [0.0]);
        assert_eq!(np_linspace(0.0, 10.0, 4, false), [0.0, 2.5, 5.0, 7.5]);
        assert_eq!(np_arange(1000.0, 0.0, -250.0), [1000.0, 750.0, 500.0, 250.0]);
        assert_eq!(np_arange(1000.0, 0.0, -1000.0 / 3.0).len(), 3);
        assert_eq!(np_round(0.5), 0);
        assert_eq!(np_round(1.5), 2);
        assert_eq!(np_round(2.5), 2);
        assert_eq!(np_interp(1.25, &[0.0, 4.0, 8.0]), 5.0);
        assert_eq!(np_interp(2.0, &[0.0, 4.0, 8.0]), 8.0);
        assert_eq!(np_interp(-1.0, &[3.0, 4.0]), 3.0);
    }

    #[test]
    fn timestep_spacings() {
        use Spacing::*;
        // DDIM / PNDM leading with SD's steps_offset 1, 50 steps: 981, 961, ..., 1.
        let t = spaced_timesteps(Leading, 1000, 50, 1);
        assert_eq!((t.len(), t[0], t[1], t[49]), (50, 981, 961, 1));
        // trailing, 4 steps: arange(1000, 0, -250) - 1.
        assert_eq!(spaced_timesteps(Trailing, 1000, 4, 0), [999, 749, 499, 249]);
        // trailing, 3 steps: round(1000, 666.67, 333.33) - 1.
        assert_eq!(spaced_timesteps(Trailing, 1000, 3, 0), [999, 666, 332]);
        // linspace, 4 steps: round(linspace(0, 999, 4)) reversed.
        assert_eq!(spaced_timesteps(Linspace, 1000, 4, 0), [999, 666, 333, 0]);
        // half-to-even: linspace(0, 999, 7) = 0, 166.5, 333, 499.5, ... -> 166 (even), 500 (even).
        assert_eq!(spaced_timesteps(Linspace, 1000, 7, 0), [999, 832, 666, 500, 333, 166, 0]);
        // Euler linspace stays fractional.
        assert_eq!(euler_timesteps(Linspace, 1000, 7, 0)[1], 832.5);
        assert_eq!(euler_timesteps(Leading, 1000, 4, 1), [751.0, 501.0, 251.0, 1.0]);
        // DPM: n + 1 points without the last.
        assert_eq!(dpm_timesteps(Linspace, 1000, 1000, 4, 0), [999, 749, 500, 250]);
        assert_eq!(dpm_timesteps(Leading, 1000, 1000, 4, 1), [801, 601, 401, 201]);
        assert_eq!(dpm_timesteps(Trailing, 1000, 1000, 4, 0), [999, 749, 499, 249]);
    }

    #[test]
    fn karras_sigmas_and_their_timesteps() {
        let k = karras(0.1, 10.0, 3);
        assert!((k[0] - 10.0).abs() < 1e-12 && (k[2] - 0.1).abs() < 1e-12);
        let mid = ((0.1f64.powf(1.0 / 7.0) + 10f64.powf(1.0 / 7.0)) / 2.0).powi(7);
        assert!((k[1] - mid).abs() < 1e-12);
        assert!((karras(0.1, 10.0, 1)[0] - 10.0).abs() < 1e-12);
        // sigma_to_t inverts the table at its points and interpolates in log sigma between them.
        let sig = [0.5f32, 1.0, 2.0, 4.0];
        let logs: Vec<f32> = sig.iter().map(|s| s.ln()).collect();
        assert!((sigma_to_t(2.0, &logs) - 2.0).abs() < 1e-6);
        assert!((sigma_to_t(2.0f64.sqrt(), &logs) - 1.5).abs() < 1e-6);
        assert_eq!(sigma_to_t(100.0, &logs), 3.0);
        assert_eq!(sigma_to_t(0.01, &logs), 0.0);
    }
}
