//! Latent-space arithmetic of the VAE: the sampling layer (reparameterisation), draws from the prior and
//! spherical interpolation (walks). Pure functions on flat NCHW buffers; no session is involved.

use crate::error::{Error, Result};
use crate::limits::{call_values, check_batch, check_finite};
use crate::rng::Noise;

/// The VAE's sampling layer: z = mean + exp(logvar / 2) * eps, eps ~ N(0, 1) from `seed`.
/// Bit-reproducible for a given seed on one machine.
pub fn sample_latent(mean: &[f32], logvar: &[f32], seed: u64) -> Result<Vec<f32>> {
    if mean.len() != logvar.len() {
        return Err(Error::invalid(format!("mean has {} values but logvar {}", mean.len(), logvar.len())));
    }
    check_finite(mean, "mean")?;
    check_finite(logvar, "logvar")?;
    let mut noise = Noise::new(seed);
    // logvar is clamped so that exp cannot overflow to inf for a hand-made latent.
    Ok(mean.iter().zip(logvar).map(|(&m, &lv)| m + (0.5 * lv.clamp(-30.0, 20.0)).exp() * noise.normal()).collect())
}

/// `n` latents drawn from the prior N(0, I): the "new images from random points" of the lecture.
pub fn prior_latents(latent_len: usize, n: usize, seed: u64) -> Result<Vec<f32>> {
    // The size first: `n * latent_len` must not overflow before the batch check multiplies it back.
    let len = call_values(n, latent_len, "latents")?;
    check_batch(n, len, latent_len, "latent")?;
    Noise::new(seed).try_normals(len)
}

/// Spherical interpolation between two latents (the path that keeps a Gaussian sample's norm typical),
/// falling back to linear when they are (anti)parallel.
pub fn slerp(a: &[f32], b: &[f32], t: f32) -> Result<Vec<f32>> {
    if a.len() != b.len() {
        return Err(Error::invalid("slerp: latents of different sizes"));
    }
    if !t.is_finite() {
        return Err(Error::invalid("slerp: t must be finite"));
    }
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let cos = if na > 0.0 && nb > 0.0 { (dot / (na * nb)).clamp(-1.0, 1.0) } else { 1.0 };
    let omega = cos.acos();
    let t = t as f64;
    let (wa, wb) = if omega.sin().abs() < 1e-6 {
        (1.0 - t, t)
    } else {
        (((1.0 - t) * omega).sin() / omega.sin(), (t * omega).sin() / omega.sin())
    };
    Ok(a.iter().zip(b).map(|(&x, &y)| (wa * x as f64 + wb * y as f64) as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_seeded_and_follows_the_variance() {
        let mean = vec![1.0f32; 4000];
        let logvar = vec![(0.25f32).ln(); 4000]; // std 0.5
        let a = sample_latent(&mean, &logvar, 3).unwrap();
        let b = sample_latent(&mean, &logvar, 3).unwrap();
        assert_eq!(a, b);
        let m = a.iter().sum::<f32>() / a.len() as f32;
        let sd = (a.iter().map(|x| (x - m).powi(2)).sum::<f32>() / a.len() as f32).sqrt();
        assert!((m - 1.0).abs() < 0.05 && (sd - 0.5).abs() < 0.05, "{m} {sd}");
        assert!(sample_latent(&[f32::NAN], &[0.0], 1).is_err());
        assert!(sample_latent(&[0.0; 2], &[0.0], 1).is_err());
    }

    #[test]
    fn a_plausible_latent_at_the_largest_count_is_refused_before_allocating() {
        // [512, 512, 64] passes a manifest's checks; 1024 of them would be 64 GiB: an error, not an abort.
        let e = prior_latents(512 * 512 * 64, 1024, 0).unwrap_err().to_string();
        assert!(e.contains("exceed the limit") && e.contains("at most 16 fit"), "{e}");
        assert_eq!(prior_latents(512 * 512 * 64, 1, 0).unwrap().len(), 512 * 512 * 64);
        assert!(prior_latents(usize::MAX, 2, 0).is_err(), "an overflowing product");
    }

    #[test]
    fn slerp_ends_and_midpoint() {
        let a = vec![1.0, 0.0];
        let b = vec![0.0, 1.0];
        assert_eq!(slerp(&a, &b, 0.0).unwrap(), a);
        let e = slerp(&a, &b, 1.0).unwrap();
        assert!((e[0]).abs() < 1e-6 && (e[1] - 1.0).abs() < 1e-6);
        let m = slerp(&a, &b, 0.5).unwrap();
        assert!((m[0] - m[1]).abs() < 1e-6 && ((m[0] * m[0] + m[1] * m[1]) - 1.0).abs() < 1e-5);
    }
}

/// Reads a NumPy `.npy` array of little-endian float32 in C order (what `numpy.save` writes for a
/// `float32` array): its shape and values. Other dtypes, Fortran order and damaged files are refused.
pub fn read_npy(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>)> {
    let bad = |m: &str| Error::invalid(format!("not a float32 .npy array: {m}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("no \\x93NUMPY magic"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(bad(&format!("format version {v}"))),
    };
    let end = start.checked_add(header_len).filter(|&e| e <= bytes.len()).ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| bad("header is not text"))?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}':"))? + key.len() + 3;
        Some(header[at..].trim_start())
    };
    let descr = field("descr").ok_or_else(|| bad("no descr"))?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("'float32'")) {
        return Err(bad(&format!("dtype {}", crate::limits::clip(descr.split(',').next().unwrap_or("")))));
    }
    if !field("fortran_order").is_some_and(|v| v.starts_with("False")) {
        return Err(bad("Fortran order (save a C-contiguous array)"));
    }
    let shape_text = field("shape").ok_or_else(|| bad("no shape"))?;
    let close = shape_text.find(')').ok_or_else(|| bad("unreadable shape"))?;
    let shape = shape_text[1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad("unreadable shape")))
        .collect::<Result<Vec<_>>>()?;
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| bad("shape overflows"))?;
    let data = &bytes[end..];
    if Some(data.len()) != count.checked_mul(4) {
        return Err(bad(&format!("shape {shape:?} needs {count} floats, the file holds {} bytes of data", data.len())));
    }
    let values = data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok((shape, values))
}

/// Writes float32 `values` of `shape` as a NumPy `.npy` (version 1.0, little-endian, C order).
pub fn write_npy(shape: &[usize], values: &[f32]) -> Result<Vec<u8>> {
    if shape.iter().product::<usize>() != values.len() {
        return Err(Error::invalid(format!("shape {shape:?} does not hold {} values", values.len())));
    }
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * values.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod npy_tests {
    use super::*;

    #[test]
    fn npy_round_trip_and_refusals() {
        let v: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        let bytes = write_npy(&[2, 3, 4], &v).unwrap();
        assert_eq!((bytes.len() - v.len() * 4) % 64, 0);
        assert_eq!(read_npy(&bytes).unwrap(), (vec![2, 3, 4], v.clone()));
        for cut in [0, 5, 9, 20, bytes.len() - 1] {
            assert!(read_npy(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut f8 = bytes.clone();
        let at = f8.windows(3).position(|w| w == b"<f4").unwrap();
        f8[at + 2] = b'8';
        assert!(read_npy(&f8).unwrap_err().to_string().contains("dtype"));
        assert!(write_npy(&[5], &v).is_err());
    }
}
