//! `scheduler/scheduler_config.json`: parsing, validation, and the settings one scheduler class runs with.
//!
//! diffusers switches schedulers with `Class.from_config(folder_scheduler.config)`. Its config machinery
//! remembers which keys the folder's class filled in from its own defaults (`_use_default_values`) and drops
//! them on the switch, so the chosen class sees exactly the keys written in the file (those it accepts) and
//! its own defaults for the rest. [`Settings::resolve`] does the same: file value, else the class default.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

use super::Prediction;

/// The scheduler classes mirage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Ddim,
    Pndm,
    Euler,
    EulerAncestral,
    DpmMultistep,
    Lcm,
}

impl Class {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Class::Ddim => "DDIMScheduler",
            Class::Pndm => "PNDMScheduler",
            Class::Euler => "EulerDiscreteScheduler",
            Class::EulerAncestral => "EulerAncestralDiscreteScheduler",
            Class::DpmMultistep => "DPMSolverMultistepScheduler",
            Class::Lcm => "LCMScheduler",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Class> {
        [Class::Ddim, Class::Pndm, Class::Euler, Class::EulerAncestral, Class::DpmMultistep, Class::Lcm]
            .into_iter()
            .find(|c| c.name() == name)
    }
}

/// The classes [`super::SchedulerConfig::default_kind`] maps to a sampler, for messages.
pub(crate) const SUPPORTED_CLASSES: &str = "PNDMScheduler, DDIMScheduler, EulerDiscreteScheduler, \
     EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler, LCMScheduler";

/// diffusers' discrete-timestep schedulers over a DDPM beta schedule: a folder naming one of these can be
/// run with any of mirage's schedulers (as diffusers users switch them). Flow-matching, EDM and other
/// families have incompatible configs and are refused by [`super::SchedulerConfig::parse`].
const DISCRETE_CLASSES: &[&str] = &[
    "DDIMScheduler",
    "DDPMScheduler",
    "PNDMScheduler",
    "LMSDiscreteScheduler",
    "EulerDiscreteScheduler",
    "HeunDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "DEISMultistepScheduler",
    "UniPCMultistepScheduler",
    "DPMSolverSDEScheduler",
    "LCMScheduler",
    "TCDScheduler",
    "DDIMParallelScheduler",
    "DDPMParallelScheduler",
    "SASolverScheduler",
];

/// Largest `num_train_timesteps` accepted (every table is that long).
const MAX_TRAIN_TIMESTEPS: u64 = 100_000;

/// The parsed file: the class it names and its keys (validated where mirage knows them).
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub class_name: String,
    keys: Map<String, Value>,
}

/// Python's `json` writes `NaN`, `Infinity` and `-Infinity` bare (diffusers saves `lambda_min_clipped:
/// -Infinity`); serde_json refuses them. They are quoted here, outside strings, and read back as numbers.
fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else {
            let word = ["-Infinity", "Infinity", "NaN"].into_iter().find(|w| {
                rest.starts_with(w)
                    && !rest[w.len()..].chars().next().is_some_and(|n| n.is_ascii_alphanumeric() || n == '_')
            });
            if let Some(w) = word {
                out.push('"');
                out.push_str(w);
                out.push('"');
                rest = &rest[w.len()..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// A JSON number, or one of Python's non-finite spellings (quoted by [`quote_non_finite`]).
pub(crate) fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// Parses JSON text the way Python's `json` module writes it (bare NaN / Infinity allowed).
pub(crate) fn parse_json(text: &str) -> std::result::Result<Value, serde_json::Error> {
    serde_json::from_str(&quote_non_finite(text))
}

fn bad(key: &str, msg: impl std::fmt::Display) -> Error {
    Error::model(format!("scheduler config: {key} {msg}"))
}

/// What kind of value a known key holds, for validation.
enum Kind {
    Bool,
    /// An integer in the range.
    Int(u64, u64),
    /// A finite number in the closed range.
    Float(f64, f64),
    /// A number that may be -inf (lambda_min_clipped), not NaN.
    FloatOrNegInf,
    /// One of these strings.
    Choice(&'static [&'static str]),
    /// Any string (its meaning is checked by the class that reads it).
    Str,
    /// The trained betas: a list of numbers in [0, 1).
    Betas,
}

/// Every key mirage reads, with what it must hold. Keys not listed are ignored, as diffusers ignores keys
/// a class does not take.
const KNOWN: &[(&str, Kind)] = &[
    ("num_train_timesteps", Kind::Int(1, MAX_TRAIN_TIMESTEPS)),
    ("beta_start", Kind::Float(1e-12, 0.999_999)),
    ("beta_end", Kind::Float(1e-12, 0.999_999)),
    ("beta_schedule", Kind::Choice(&["linear", "scaled_linear", "squaredcos_cap_v2"])),
    ("trained_betas", Kind::Betas),
    ("prediction_type", Kind::Choice(&["epsilon", "v_prediction", "sample"])),
    ("timestep_spacing", Kind::Choice(&["leading", "trailing", "linspace"])),
    ("steps_offset", Kind::Int(0, MAX_TRAIN_TIMESTEPS)),
    ("set_alpha_to_one", Kind::Bool),
    ("clip_sample", Kind::Bool),
    ("clip_sample_range", Kind::Float(f64::MIN_POSITIVE, f64::MAX)),
    ("thresholding", Kind::Bool),
    ("rescale_betas_zero_snr", Kind::Bool),
    ("skip_prk_steps", Kind::Bool),
    ("interpolation_type", Kind::Choice(&["linear", "log_linear"])),
    ("use_karras_sigmas", Kind::Bool),
    ("use_exponential_sigmas", Kind::Bool),
    ("use_beta_sigmas", Kind::Bool),
    ("use_lu_lambdas", Kind::Bool),
    ("use_flow_sigmas", Kind::Bool),
    ("use_dynamic_shifting", Kind::Bool),
    ("sigma_min", Kind::Float(f64::MIN_POSITIVE, f64::MAX)),
    ("sigma_max", Kind::Float(f64::MIN_POSITIVE, f64::MAX)),
    ("timestep_type", Kind::Choice(&["discrete", "continuous"])),
    ("final_sigmas_type", Kind::Choice(&["zero", "sigma_min"])),
    ("solver_order", Kind::Int(1, 3)),
    ("algorithm_type", Kind::Str),
    ("solver_type", Kind::Str),
    ("lower_order_final", Kind::Bool),
    ("euler_at_final", Kind::Bool),
    ("lambda_min_clipped", Kind::FloatOrNegInf),
    ("variance_type", Kind::Str),
    ("original_inference_steps", Kind::Int(1, MAX_TRAIN_TIMESTEPS)),
    ("timestep_scaling", Kind::Float(0.0, f64::MAX)),
];

fn check_key(key: &str, kind: &Kind, v: &Value) -> Result<()> {
    match kind {
        Kind::Bool => {
            if !v.is_boolean() {
                return Err(bad(key, format!("is {v}, must be true or false")));
            }
        }
        Kind::Int(lo, hi) => {
            let n = v
                .as_u64()
                .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= *hi as f64).map(|f| f as u64));
            match n {
                Some(n) if (*lo..=*hi).contains(&n) => {}
                _ => return Err(bad(key, format!("is {v}, must be an integer in {lo}..={hi}"))),
            }
        }
        Kind::Float(lo, hi) => match number(v) {
            Some(f) if f.is_finite() && (*lo..=*hi).contains(&f) => {}
            _ => return Err(bad(key, format!("is {v}, must be a finite number in [{lo}, {hi:e}]"))),
        },
        Kind::FloatOrNegInf => match number(v) {
            Some(f) if !f.is_nan() && f != f64::INFINITY => {}
            _ => return Err(bad(key, format!("is {v}, must be a number or -Infinity"))),
        },
        Kind::Choice(options) => match v.as_str() {
            Some(s) if options.contains(&s) => {}
            _ => return Err(bad(key, format!("is {v}, must be one of {}", options.join(", ")))),
        },
        Kind::Str => {
            if !v.is_string() {
                return Err(bad(key, format!("is {v}, must be a string")));
            }
        }
        Kind::Betas => {
            let Some(list) = v.as_array() else {
                return Err(bad(
                    key,
                    format!("must be a list of numbers or null, not {}", crate::limits::clip(&v.to_string())),
                ));
            };
            if list.is_empty() {
                return Err(bad(key, "is an empty list"));
            }
            for (i, b) in list.iter().enumerate() {
                match number(b) {
                    Some(f) if f.is_finite() && (0.0..1.0).contains(&f) => {}
                    _ => return Err(bad(key, format!("[{i}] is {b}, each beta must be in [0, 1)"))),
                }
            }
        }
    }
    Ok(())
}

impl Raw {
    pub(crate) fn parse(text: &str) -> Result<Raw> {
        let value = parse_json(text).map_err(|e| Error::model(format!("scheduler config is not JSON: {e}")))?;
        let Value::Object(keys) = value else {
            return Err(Error::model("scheduler config is not a JSON object"));
        };
        let class_name = match keys.get("_class_name") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(bad(
                    "_class_name",
                    format!("is {}, must be a string", crate::limits::clip(&other.to_string())),
                ))
            }
            None => return Err(Error::model("scheduler config has no _class_name (which scheduler it configures)")),
        };
        if !DISCRETE_CLASSES.contains(&class_name.as_str()) {
            return Err(bad(
                "_class_name",
                format!(
                    "is {}: not a diffusers discrete-timestep (DDPM-schedule) scheduler mirage knows; supported: {SUPPORTED_CLASSES}",
                    crate::limits::quote(&class_name)
                ),
            ));
        }
        for (key, kind) in KNOWN {
            if let Some(v) = keys.get(*key).filter(|v| !v.is_null()) {
                check_key(key, kind, v)?;
            }
        }
        let raw = Raw { class_name, keys };
        if let Some(n) = raw.keys.get("trained_betas").and_then(Value::as_array) {
            let t = raw.int("num_train_timesteps", 1000);
            if n.len() != t {
                return Err(bad(
                    "trained_betas",
                    format!("has {} values but num_train_timesteps is {t}: they must agree", n.len()),
                ));
            }
        }
        Ok(raw)
    }

    /// The file's value of `key` (null counts as absent: the class default applies).
    fn get(&self, key: &str) -> Option<&Value> {
        self.keys.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn bool(&self, key: &str, default: bool) -> bool {
        self.get(key).and_then(Value::as_bool).unwrap_or(default)
    }

    pub(crate) fn int(&self, key: &str, default: usize) -> usize {
        self.get(key).and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64))).map_or(default, |n| n as usize)
    }

    pub(crate) fn float(&self, key: &str, default: f64) -> f64 {
        self.get(key).and_then(number).unwrap_or(default)
    }

    pub(crate) fn opt_float(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(number)
    }

    pub(crate) fn str<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).and_then(Value::as_str).unwrap_or(default)
    }

    fn betas(&self) -> Option<Vec<f64>> {
        self.get("trained_betas").and_then(Value::as_array).map(|l| l.iter().filter_map(number).collect())
    }
}

/// How the training betas are made.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Betas {
    Linear { start: f64, end: f64 },
    ScaledLinear { start: f64, end: f64 },
    SquaredCos,
    Trained(Vec<f64>),
}

/// How inference timesteps are spread over the training ones (Table 2 of "Common Diffusion Noise
/// Schedules and Sample Steps are Flawed").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spacing {
    Leading,
    Trailing,
    Linspace,
}

/// Everything one class reads from the config, resolved (file value, else that class's default).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub class: Class,
    pub num_train_timesteps: usize,
    pub betas: Betas,
    /// beta_schedule is squaredcos_cap_v2 (DPM keeps Karras timesteps fractional then).
    pub squared_cos: bool,
    pub rescale_zero_snr: bool,
    pub prediction: Prediction,
    pub spacing: Spacing,
    pub steps_offset: usize,
    /// DDIM, PNDM, LCM: alphas_cumprod "before" timestep 0 is 1 (else alphas_cumprod[0]).
    pub set_alpha_to_one: bool,
    /// DDIM, LCM: clamp of the predicted x0 to [-range, range].
    pub clip_sample: Option<f32>,
    /// Euler, DPM: Karras sigmas, with optional bounds (the file's sigma_min / sigma_max).
    pub karras: bool,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    /// Euler, DPM: the sigma after the last step is sigma_min (else 0).
    pub final_sigma_min: bool,
    /// Euler: timesteps are 0.25 * ln(sigma) (timestep_type continuous with v-prediction).
    pub continuous_timesteps: bool,
    /// DPM-Solver++.
    pub solver_order: usize,
    pub heun: bool,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub lambda_min_clipped: f64,
    /// LCM.
    pub original_inference_steps: usize,
    pub timestep_scaling: f64,
}

fn prediction_of(s: &str) -> Prediction {
    match s {
        "v_prediction" => Prediction::VPrediction,
        "sample" => Prediction::Sample,
        _ => Prediction::Epsilon,
    }
}

fn spacing_of(s: &str) -> Spacing {
    match s {
        "leading" => Spacing::Leading,
        "trailing" => Spacing::Trailing,
        _ => Spacing::Linspace,
    }
}

/// A refusal of a value `class` cannot run with.
fn refuse(class: Class, key: &str, msg: impl std::fmt::Display) -> Error {
    Error::model(format!("scheduler config: {key} {msg} ({} in mirage)", class.name()))
}

impl Settings {
    /// The settings `class` runs with from `raw`: the file's value of each key the class takes, else the
    /// class default. `karras` (DPM-Solver++ 2M chosen by name, with or without Karras sigmas) overrides
    /// use_karras_sigmas, and with it algorithm_type = dpmsolver++ and solver_order = 2, as diffusers users
    /// ask for "DPM++ 2M": `from_config(config, algorithm_type="dpmsolver++", solver_order=2,
    /// use_karras_sigmas=...)`. Values the class cannot honour are refused naming the key.
    pub(crate) fn resolve(raw: &Raw, class: Class, karras: Option<bool>) -> Result<Settings> {
        use Class::*;
        let (beta_start, beta_end, schedule) = match class {
            Lcm => (0.00085, 0.012, "scaled_linear"),
            _ => (0.0001, 0.02, "linear"),
        };
        let beta_start = raw.float("beta_start", beta_start);
        let beta_end = raw.float("beta_end", beta_end);
        let squared_cos = raw.str("beta_schedule", schedule) == "squaredcos_cap_v2";
        let betas = match raw.betas() {
            Some(b) => Betas::Trained(b),
            None => match raw.str("beta_schedule", schedule) {
                "scaled_linear" => Betas::ScaledLinear { start: beta_start, end: beta_end },
                "squaredcos_cap_v2" => Betas::SquaredCos,
                _ => Betas::Linear { start: beta_start, end: beta_end },
            },
        };
        let spacing_default = match class {
            Ddim | Pndm | Lcm => "leading",
            Euler | EulerAncestral | DpmMultistep => "linspace",
        };
        let prediction = prediction_of(raw.str("prediction_type", "epsilon"));
        let has_thresholding = matches!(class, Ddim | Lcm | DpmMultistep);
        if has_thresholding && raw.bool("thresholding", false) {
            return Err(refuse(class, "thresholding", "is true: dynamic thresholding is not supported"));
        }
        if matches!(class, Pndm | EulerAncestral) && prediction == Prediction::Sample {
            return Err(refuse(class, "prediction_type", "is sample: only epsilon and v_prediction are supported"));
        }
        if class == Pndm && !raw.bool("skip_prk_steps", false) {
            return Err(refuse(
                class,
                "skip_prk_steps",
                "is false (or absent): PNDM with PRK steps is not supported; use ddim/euler",
            ));
        }
        let clip_sample = match class {
            Ddim | Lcm if raw.bool("clip_sample", class == Ddim) => Some(raw.float("clip_sample_range", 1.0) as f32),
            _ => None,
        };
        let karras_sigmas = match class {
            Euler | DpmMultistep => karras.unwrap_or_else(|| raw.bool("use_karras_sigmas", false)),
            _ => false,
        };
        if matches!(class, Euler | DpmMultistep) {
            for key in ["use_exponential_sigmas", "use_beta_sigmas"] {
                if raw.bool(key, false) {
                    return Err(refuse(class, key, "is true: only the default and Karras sigmas are supported"));
                }
            }
        }
        if class == Euler && raw.str("interpolation_type", "linear") != "linear" {
            return Err(refuse(class, "interpolation_type", "is log_linear: only linear is supported"));
        }
        let (mut solver_order, mut heun) = (2, false);
        if class == DpmMultistep {
            for key in ["use_lu_lambdas", "use_flow_sigmas", "use_dynamic_shifting"] {
                if raw.bool(key, false) {
                    return Err(refuse(class, key, "is true: not supported"));
                }
            }
            let algorithm = if karras.is_some() { "dpmsolver++" } else { raw.str("algorithm_type", "dpmsolver++") };
            match algorithm {
                // diffusers itself maps DEIS's algorithm to dpmsolver++.
                "dpmsolver++" | "deis" => {}
                other => {
                    return Err(refuse(
                        class,
                        "algorithm_type",
                        format!("is {}: only dpmsolver++ (DPM-Solver++ 2M) is supported", crate::limits::quote(other)),
                    ))
                }
            }
            heun = match raw.str("solver_type", "midpoint") {
                // diffusers maps UniPC's / DEIS's solver types to midpoint.
                "midpoint" | "logrho" | "bh1" | "bh2" => false,
                "heun" => true,
                other => {
                    return Err(refuse(
                        class,
                        "solver_type",
                        format!("is {}: must be midpoint or heun", crate::limits::quote(other)),
                    ))
                }
            };
            solver_order = if karras.is_some() { 2 } else { raw.int("solver_order", 2) };
            if solver_order > 2 {
                return Err(refuse(class, "solver_order", format!("is {solver_order}: only 1 and 2 are supported")));
            }
            if let Some(v) = raw.get("variance_type").and_then(Value::as_str) {
                return Err(refuse(
                    class,
                    "variance_type",
                    format!("is {}: models predicting their variance are not supported", crate::limits::quote(v)),
                ));
            }
        }
        let continuous_timesteps = class == Euler
            && raw.str("timestep_type", "discrete") == "continuous"
            && prediction == Prediction::VPrediction;
        Ok(Settings {
            class,
            num_train_timesteps: raw.int("num_train_timesteps", 1000),
            betas,
            squared_cos,
            rescale_zero_snr: class != Pndm && raw.bool("rescale_betas_zero_snr", false),
            prediction,
            spacing: spacing_of(raw.str("timestep_spacing", spacing_default)),
            steps_offset: raw.int("steps_offset", 0),
            set_alpha_to_one: raw.bool("set_alpha_to_one", class != Pndm),
            clip_sample,
            karras: karras_sigmas,
            // diffusers reads these through `hasattr(self.config, ...)`: every key of the file is in the
            // config (kept for compatible classes), so DPM uses the file's bounds too.
            sigma_min: raw.opt_float("sigma_min"),
            sigma_max: raw.opt_float("sigma_max"),
            final_sigma_min: matches!(class, Euler | DpmMultistep)
                && raw.str("final_sigmas_type", "zero") == "sigma_min",
            continuous_timesteps,
            solver_order,
            heun,
            lower_order_final: raw.bool("lower_order_final", true),
            euler_at_final: raw.bool("euler_at_final", false),
            lambda_min_clipped: raw.float("lambda_min_clipped", f64::NEG_INFINITY),
            original_inference_steps: raw.int("original_inference_steps", 50),
            timestep_scaling: raw.float("timestep_scaling", 10.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_non_finite_numbers_are_read() {
        let v =
            parse_json(r#"{"a": -Infinity, "b": [NaN, Infinity], "c": "x NaN -Infinity \" NaN", "NaNo": 1}"#).unwrap();
        assert_eq!(number(&v["a"]), Some(f64::NEG_INFINITY));
        assert!(number(&v["b"][0]).unwrap().is_nan());
        assert_eq!(number(&v["b"][1]), Some(f64::INFINITY));
        assert_eq!(v["c"], "x NaN -Infinity \" NaN");
        assert_eq!(v["NaNo"], 1);
    }
}
