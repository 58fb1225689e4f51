//! The limits every layer shares, and the checks that apply them: one constant per limit, so that a model
//! set, the pipeline, the C API and the CLI can never disagree about what is accepted.

use crate::error::{Error, Result};

/// Largest batch one call accepts. Far above any sensible use; it keeps a bad `n` from a host from turning
/// into a multi-gigabyte allocation.
pub const MAX_BATCH: usize = 1024;

pub fn check_batch(n: usize, len: usize, per_item: usize, what: &str) -> Result<()> {
    if n == 0 || n > MAX_BATCH {
        return Err(Error::invalid(format!("batch size {n} out of range 1..={MAX_BATCH}")));
    }
    if len != n * per_item {
        return Err(Error::invalid(format!(
            "{what} buffer has {len} values; {n} x {per_item} expected (wrong size or shape)"
        )));
    }
    Ok(())
}

pub fn check_finite(v: &[f32], what: &str) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(Error::invalid(format!("{what} value {i} is {} (NaN or infinite values are refused)", v[i]))),
        None => Ok(()),
    }
}
