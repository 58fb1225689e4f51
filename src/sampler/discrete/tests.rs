//! Tests of the discrete schedulers: runs against hand-derived values, refusals of bad configs, and parity
//! with diffusers itself (tests/fixtures/sd/reference/schedulers.json, recorded by running diffusers).

use super::*;
use crate::rng::Noise;

/// Stable Diffusion 1.x's scheduler_config.json (PNDM).
const SD15: &str = r#"{
  "_class_name": "PNDMScheduler",
  "_diffusers_version": "0.6.0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "num_train_timesteps": 1000,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null,
  "clip_sample": false
}"#;

fn sd15() -> SchedulerConfig {
    SchedulerConfig::parse(SD15).unwrap()
}

/// `json` with the keys of `extra` replaced / added.
fn with(json: &str, extra: &str) -> String {
    let mut v: serde_json::Value = config::parse_json(json).unwrap();
    let e: serde_json::Value = config::parse_json(extra).unwrap();
    for (k, x) in e.as_object().unwrap() {
        v[k] = x.clone();
    }
    v.to_string()
}

fn levels(run: &dyn Sampler) -> Vec<f32> {
    (0..run.steps()).map(|k| run.input(k).level).collect()
}

/// The final sample of a run from a fixed start with a fixed synthetic model (deterministic samplers).
fn trajectory(mut run: Box<dyn Sampler>) -> Vec<f32> {
    let mut x: Vec<f32> = (0..8).map(|i| (i as f32 - 3.5) * run.init_noise_sigma()).collect();
    for k in 0..run.steps() {
        let input = run.input(k);
        let out: Vec<f32> =
            x.iter().enumerate().map(|(i, v)| 0.5 * v * input.scale + (input.level * 0.01 + i as f32).cos()).collect();
        run.step(k, &mut x, &out, &mut Noise::new(0)).unwrap();
    }
    x
}

const ALL_KINDS: [SamplerKind; 7] = [
    SamplerKind::Ddim { eta: 0.0 },
    SamplerKind::Pndm,
    SamplerKind::Euler,
    SamplerKind::EulerAncestral,
    SamplerKind::DpmSolverPp2m,
    SamplerKind::DpmSolverPp2mKarras,
    SamplerKind::Lcm,
];

#[test]
fn parse_reads_the_class_and_prediction() {
    let c = sd15();
    assert_eq!(c.class_name(), "PNDMScheduler");
    assert_eq!(c.default_kind().unwrap(), SamplerKind::Pndm);
    assert_eq!(c.prediction_type(), Prediction::Epsilon);
    let v = SchedulerConfig::parse(&with(SD15, r#"{"prediction_type": "v_prediction"}"#)).unwrap();
    assert_eq!(v.prediction_type(), Prediction::VPrediction);
    let kinds = [
        ("DDIMScheduler", SamplerKind::Ddim { eta: 0.0 }),
        ("EulerDiscreteScheduler", SamplerKind::Euler),
        ("EulerAncestralDiscreteScheduler", SamplerKind::EulerAncestral),
        ("DPMSolverMultistepScheduler", SamplerKind::DpmSolverPp2m),
        ("LCMScheduler", SamplerKind::Lcm),
    ];
    for (class, kind) in kinds {
        let c = SchedulerConfig::parse(&with(SD15, &format!(r#"{{"_class_name": "{class}"}}"#))).unwrap();
        assert_eq!(c.default_kind().unwrap(), kind, "{class}");
    }
    let karras = with(SD15, r#"{"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": true}"#);
    assert_eq!(SchedulerConfig::parse(&karras).unwrap().default_kind().unwrap(), SamplerKind::DpmSolverPp2mKarras);
    // A discrete scheduler mirage does not run: parsed (another sampler can be chosen), no default.
    let lms = SchedulerConfig::parse(&with(SD15, r#"{"_class_name": "LMSDiscreteScheduler"}"#)).unwrap();
    let e = lms.default_kind().unwrap_err().to_string();
    assert!(e.contains("LMSDiscreteScheduler") && e.contains("EulerDiscreteScheduler"), "{e}");
    assert!(build(&lms, SamplerKind::Auto { eta: 0.0 }, 10, 1.0).is_err());
    assert!(build(&lms, SamplerKind::Euler, 10, 1.0).is_ok());
    // diffusers' own spelling of -inf.
    let dpm = r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity, "foo": NaN}"#;
    assert!(SchedulerConfig::parse(dpm).is_ok());
}

#[test]
fn auto_is_the_folders_own_with_its_eta() {
    let ddim = SchedulerConfig::parse(&with(SD15, r#"{"_class_name": "DDIMScheduler"}"#)).unwrap();
    let mut run = build(&ddim, SamplerKind::Auto { eta: 1.0 }, 3, 1.0).unwrap();
    let mut x = vec![0.5f32; 4];
    let mut noise = Noise::given(vec![0.0; 12].into());
    for k in 0..3 {
        run.step(k, &mut x, &[0.1; 4], &mut noise).unwrap();
    }
    // eta 1 draws one value per element per step.
    assert!(!noise.ran_short() && noise.normal().is_nan());
    assert_eq!(levels(&*run), [667.0, 334.0, 1.0]);
}

#[test]
fn timesteps_of_stable_diffusion_15_per_sampler() {
    let c = sd15();
    let run = |kind| build(&c, kind, 4, 1.0).unwrap();
    // PNDM's own (leading, steps_offset 1): the second timestep repeated.
    assert_eq!(levels(&*run(SamplerKind::Pndm)), [751.0, 501.0, 501.0, 251.0, 1.0]);
    // DDIM (leading, from the file): 751, 501, 251, 1.
    assert_eq!(levels(&*run(SamplerKind::Ddim { eta: 0.0 })), [751.0, 501.0, 251.0, 1.0]);
    // Euler, Euler a, DPM take their own default spacing (linspace): the file does not name one.
    assert_eq!(levels(&*run(SamplerKind::Euler)), [999.0, 666.0, 333.0, 0.0]);
    assert_eq!(levels(&*run(SamplerKind::EulerAncestral)), [999.0, 666.0, 333.0, 0.0]);
    assert_eq!(levels(&*run(SamplerKind::DpmSolverPp2m)), [999.0, 749.0, 500.0, 250.0]);
    // LCM: its distillation schedule of 50 (k = 20).
    assert_eq!(levels(&*run(SamplerKind::Lcm)), [999.0, 759.0, 499.0, 259.0]);
    // Karras DPM: sigma_max .. sigma_min of the whole table, timesteps rounded.
    let k = levels(&*run(SamplerKind::DpmSolverPp2mKarras));
    assert_eq!((k[0], k[3]), (999.0, 0.0));
    // With the file's spacing written, Euler follows it.
    let lead = SchedulerConfig::parse(&with(SD15, r#"{"timestep_spacing": "leading"}"#)).unwrap();
    let e = build(&lead, SamplerKind::Euler, 4, 1.0).unwrap();
    assert_eq!(levels(&*e), [751.0, 501.0, 251.0, 1.0]);
    let trailing = SchedulerConfig::parse(&with(SD15, r#"{"timestep_spacing": "trailing"}"#)).unwrap();
    assert_eq!(levels(&*build(&trailing, SamplerKind::Pndm, 4, 1.0).unwrap()), [999.0, 749.0, 749.0, 499.0, 249.0]);
    // One PNDM step: no repeat.
    assert_eq!(levels(&*build(&c, SamplerKind::Pndm, 1, 1.0).unwrap()), [1.0]);
}

#[test]
fn init_noise_sigma_follows_the_spacing() {
    let c = sd15();
    let ac = tables::alphas_cumprod(&tables::betas(&config::Betas::ScaledLinear { start: 0.00085, end: 0.012 }, 1000));
    let sig = tables::sigmas_of(&ac);
    // linspace: sigma_max itself (the sigma at timestep 999).
    let e = build(&c, SamplerKind::Euler, 10, 1.0).unwrap();
    assert_eq!(e.init_noise_sigma(), sig[999]);
    // leading: sqrt(sigma_max^2 + 1) at the first leading timestep (901 with offset 1, 10 steps).
    let lead = SchedulerConfig::parse(&with(SD15, r#"{"timestep_spacing": "leading"}"#)).unwrap();
    let e = build(&lead, SamplerKind::EulerAncestral, 10, 1.0).unwrap();
    assert_eq!(e.init_noise_sigma(), (sig[901] * sig[901] + 1.0).sqrt());
    for kind in [SamplerKind::Ddim { eta: 0.0 }, SamplerKind::Pndm, SamplerKind::DpmSolverPp2m, SamplerKind::Lcm] {
        assert_eq!(build(&c, kind, 10, 1.0).unwrap().init_noise_sigma(), 1.0);
    }
    // Euler's input scale is 1 / sqrt(sigma^2 + 1); the others feed the sample as it is.
    let e = build(&c, SamplerKind::Euler, 10, 1.0).unwrap();
    assert_eq!(e.input(0).scale, 1.0 / (sig[999] * sig[999] + 1.0).sqrt());
    assert_eq!(build(&c, SamplerKind::Pndm, 10, 1.0).unwrap().input(0).scale, 1.0);
}

#[test]
fn img2img_starts_where_get_timesteps_does() {
    let c = sd15();
    // 10 steps at 0.7: int(7.000000000000001) = 7 steps, from the 4th timestep.
    for kind in ALL_KINDS {
        let whole = build(&c, kind, 10, 1.0).unwrap();
        let part = build(&c, kind, 10, 0.7).unwrap();
        assert_eq!(levels(&*part)[..], levels(&*whole)[3..], "{kind:?}");
        // The start: the clean sample noised to the first level; k = steps: the clean sample.
        let (x0, eps) = (vec![0.3f32; 4], vec![1.0f32; 4]);
        assert_eq!(part.noised(0, &x0, &eps), whole.noised(3, &x0, &eps), "{kind:?}");
        assert_eq!(part.noised(part.steps(), &x0, &eps), x0);
    }
    // Too weak to run a step: refused.
    let e = build(&c, SamplerKind::Euler, 10, 0.05).err().unwrap().to_string();
    assert!(e.contains("strength"), "{e}");
    // DDPM-type add_noise: sqrt(alpha_prod) x0 + sqrt(1 - alpha_prod) eps at the start timestep.
    let ddim = build(&c, SamplerKind::Ddim { eta: 0.0 }, 10, 0.5).unwrap();
    let ac = tables::alphas_cumprod(&tables::betas(&config::Betas::ScaledLinear { start: 0.00085, end: 0.012 }, 1000));
    let t = ddim.input(0).level as usize;
    assert_eq!(t, 401);
    assert_eq!(ddim.noised(0, &[2.0], &[3.0]), [ac[t].sqrt() * 2.0 + (1.0 - ac[t]).sqrt() * 3.0]);
}

/// With the true noise as the model output, deterministic samplers land on the clean sample.
#[test]
fn true_noise_gives_back_the_clean_sample() {
    // set_alpha_to_one: the last DDIM / PNDM step lands on x0 itself (SD's false stops at timestep 0's level).
    let c = SchedulerConfig::parse(&with(SD15, r#"{"clip_sample": false, "set_alpha_to_one": true}"#)).unwrap();
    let mut n = Noise::new(3);
    let x0 = n.normals(16);
    let eps = n.normals(16);
    for kind in [
        SamplerKind::Ddim { eta: 0.0 },
        SamplerKind::Pndm,
        SamplerKind::Euler,
        SamplerKind::DpmSolverPp2m,
        SamplerKind::DpmSolverPp2mKarras,
    ] {
        for (steps, strength) in [(1, 1.0), (10, 1.0), (25, 0.6)] {
            if kind == SamplerKind::Pndm && strength < 1.0 {
                continue; // see pndm_img2img_is_diffusers_own
            }
            let mut run = build(&c, kind, steps, strength).unwrap();
            // x0 noised to the first level (as img2img starts; a whole run starts there too).
            let mut x = run.noised(0, &x0, &eps);
            for k in 0..run.steps() {
                // The true noise of the current x: in sigma space (Euler) x = x0 + sigma eps, else
                // sqrt(a) x0 + sqrt(1 - a) eps; either way eps stays the noise along a deterministic path.
                let before = run.denoised(k, &x, &eps);
                let err = before.iter().zip(&x0).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(err < 5e-3, "{kind:?} {steps} steps, step {k}: denoised off by {err}");
                run.step(k, &mut x, &eps, &mut Noise::given(Vec::new().into())).unwrap();
            }
            let err = x.iter().zip(&x0).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(err < 5e-3, "{kind:?} {steps} steps at {strength}: off by {err}");
        }
    }
}

/// With a model that knows the clean sample (it splits the current sample into x0 and noise exactly and
/// answers eps, v or x0 as configured), every sampler, stochastic or not, ends on the clean sample.
#[test]
fn an_oracle_model_leads_every_sampler_to_the_clean_sample() {
    let ac = tables::alphas_cumprod(&tables::betas(&config::Betas::ScaledLinear { start: 0.00085, end: 0.012 }, 1000));
    let x0: Vec<f32> = Noise::new(11).normals(16);
    for prediction in ["epsilon", "v_prediction", "sample"] {
        let extra = format!(
            r#"{{"clip_sample": false, "set_alpha_to_one": true, "prediction_type": "{prediction}", "solver_type": "heun"}}"#
        );
        let c = SchedulerConfig::parse(&with(SD15, &extra)).unwrap();
        for kind in [
            SamplerKind::Ddim { eta: 0.0 },
            SamplerKind::Ddim { eta: 1.0 },
            SamplerKind::Pndm,
            SamplerKind::Euler,
            SamplerKind::EulerAncestral,
            SamplerKind::DpmSolverPp2m,
            SamplerKind::Lcm,
        ] {
            for (steps, strength) in [(4, 1.0), (12, 1.0), (20, 0.5)] {
                // PNDM's img2img mislabels levels (see pndm_img2img_is_diffusers_own), and with v-prediction
                // diffusers combines v of different levels before converting: neither is exact.
                if kind == SamplerKind::Pndm && (strength < 1.0 || prediction == "v_prediction") {
                    continue;
                }
                let Ok(mut run) = build(&c, kind, steps, strength) else {
                    assert!(prediction == "sample" && matches!(kind, SamplerKind::Pndm | SamplerKind::EulerAncestral));
                    continue;
                };
                let mut noise = Noise::new(5);
                let mut x = run.noised(0, &x0, &noise.normals(16));
                for k in 0..run.steps() {
                    let input = run.input(k);
                    // The sample's signal and noise factors: sigma space for Euler (scale < 1), else alpha_prod.
                    let (signal, sigma) = if input.scale < 1.0 {
                        (1.0, (1.0 / (input.scale * input.scale) - 1.0).sqrt())
                    } else {
                        let a = ac[input.level as usize];
                        (a.sqrt(), (1.0 - a).sqrt())
                    };
                    // The model's view: x * scale = alpha x0 + sigma_vp eps.
                    let (alpha, sigma_vp) = (signal * input.scale, sigma * input.scale);
                    let out: Vec<f32> = x
                        .iter()
                        .zip(&x0)
                        .map(|(&v, &c)| {
                            let eps = (v - signal * c) / sigma;
                            match prediction {
                                "epsilon" => eps,
                                "v_prediction" => alpha * eps - sigma_vp * c,
                                _ => c,
                            }
                        })
                        .collect();
                    let d = run.denoised(k, &x, &out);
                    if kind != SamplerKind::Lcm {
                        let err = d.iter().zip(&x0).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                        assert!(err < 2e-3, "{prediction} {kind:?} {steps}/{strength} step {k}: denoised off by {err}");
                    }
                    run.step(k, &mut x, &out, &mut noise).unwrap();
                }
                let err = x.iter().zip(&x0).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(err < 2e-3, "{prediction} {kind:?} {steps} steps at {strength}: off by {err}");
            }
        }
    }
}

#[test]
fn stochastic_samplers_draw_what_diffusers_draws() {
    let c = sd15();
    let n = 6;
    // (kind, steps, values drawn per element)
    for (kind, steps, per) in [
        (SamplerKind::EulerAncestral, 5, 5),
        (SamplerKind::Ddim { eta: 0.5 }, 5, 5),
        (SamplerKind::Ddim { eta: 0.0 }, 5, 0),
        (SamplerKind::Lcm, 4, 3),
        (SamplerKind::Lcm, 1, 0),
        (SamplerKind::Euler, 5, 0),
        (SamplerKind::Pndm, 5, 0),
        (SamplerKind::DpmSolverPp2m, 5, 0),
    ] {
        let mut run = build(&c, kind, steps, 1.0).unwrap();
        let mut noise = Noise::given(vec![0.25; per * n].into());
        let mut x = vec![1.0f32; n];
        for k in 0..run.steps() {
            run.step(k, &mut x, &vec![0.1; n], &mut noise).unwrap();
        }
        assert!(!noise.ran_short(), "{kind:?} drew more than {per} per element");
        assert!(noise.normal().is_nan(), "{kind:?} drew fewer than {per} per element");
        assert!(x.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn multistep_runs_keep_their_order() {
    let c = sd15();
    let mut run = build(&c, SamplerKind::DpmSolverPp2m, 5, 1.0).unwrap();
    let mut x = vec![1.0f32; 4];
    let mut noise = Noise::new(0);
    run.step(0, &mut x, &[0.1; 4], &mut noise).unwrap();
    assert!(run.step(2, &mut x, &[0.1; 4], &mut noise).is_err());
    assert!(run.step(5, &mut x, &[0.1; 4], &mut noise).is_err());
    assert!(run.step(1, &mut x, &[0.1; 3], &mut noise).is_err());
    // Step 0 again restarts the run: the same result as a fresh one.
    let go = |run: &mut Box<dyn Sampler>| {
        let mut x = vec![1.0f32; 4];
        for k in 0..run.steps() {
            run.step(k, &mut x, &[0.1, 0.2, 0.3, 0.4], &mut Noise::new(0)).unwrap();
        }
        x
    };
    let first = go(&mut run);
    assert_eq!(go(&mut run), first);
    let mut pndm = build(&c, SamplerKind::Pndm, 5, 1.0).unwrap();
    let first = go(&mut pndm);
    assert_eq!(go(&mut pndm), first);
}

/// PLMS by hand for 2 steps (3 calls) of a linear schedule: step 0 from t0 to t1 with e0; step 1 redoes it
/// from the first sample with (e0 + e1) / 2; step 2 from t1 to the end with (3 e2 - e0) / 2.
#[test]
fn pndm_steps_by_hand() {
    let c = SchedulerConfig::parse(
        r#"{"_class_name": "PNDMScheduler", "skip_prk_steps": true, "num_train_timesteps": 10, "beta_start": 0.01, "beta_end": 0.2}"#,
    )
    .unwrap();
    let mut run = build(&c, SamplerKind::Pndm, 2, 1.0).unwrap();
    assert_eq!(levels(&*run), [5.0, 0.0, 0.0]);
    let ac = tables::alphas_cumprod(&tables::torch_linspace(0.01f64 as f32, 0.2f64 as f32, 10));
    // set_alpha_to_one defaults to false for PNDM: the final alpha is alphas_cumprod[0].
    let prev = |x: f32, t: usize, p: Option<usize>, e: f32| {
        let a = ac[t];
        let ap = p.map_or(ac[0], |p| ac[p]);
        let denom = a * (1.0 - ap).sqrt() + (a * (1.0 - a) * ap).sqrt();
        (ap / a).sqrt() * x - (ap - a) * e / denom
    };
    let mut x = [0.7f32];
    let mut noise = Noise::new(0);
    run.step(0, &mut x, &[0.2], &mut noise).unwrap();
    assert_eq!(x[0], prev(0.7, 5, Some(0), 0.2));
    run.step(1, &mut x, &[0.4], &mut noise).unwrap();
    assert_eq!(x[0], prev(0.7, 5, Some(0), (0.4 + 0.2) / 2.0));
    let x1 = x[0];
    run.step(2, &mut x, &[0.5], &mut noise).unwrap();
    assert_eq!(x[0], prev(x1, 0, None, (3.0 * 0.5 - 0.2) / 2.0));
}

/// diffusers' img2img slices PNDM's timesteps (with the repeated second one) at t_start: the repeat then
/// falls on the run's second step, which re-runs the first from its sample, and from the third step on
/// PLMS believes the sample one level lower than it is. Kept, as diffusers does it.
#[test]
fn pndm_img2img_is_diffusers_own() {
    let c = sd15();
    let run = build(&c, SamplerKind::Pndm, 10, 0.5).unwrap();
    // plms = 901, 801, 801, 701, ..., 1 (11); [5..] = 501, 401, ..., 1: 6 calls for 5 steps of strength.
    assert_eq!(levels(&*run), [501.0, 401.0, 301.0, 201.0, 101.0, 1.0]);
}

/// Euler ancestral by hand: sigma_up, sigma_down and the draw.
#[test]
fn euler_ancestral_step_by_hand() {
    let c = sd15();
    let mut run = build(&c, SamplerKind::EulerAncestral, 2, 1.0).unwrap();
    let ac = tables::alphas_cumprod(&tables::betas(&config::Betas::ScaledLinear { start: 0.00085, end: 0.012 }, 1000));
    let sig = tables::sigmas_of(&ac);
    let (from, to) = (sig[999], sig[0]);
    let up = (to * to * (from * from - to * to) / (from * from)).sqrt();
    let down = (to * to - up * up).sqrt();
    let (x, e, z) = (3.0f32, 0.5f32, -1.25f32);
    let mut v = [x];
    run.step(0, &mut v, &[e], &mut Noise::given(vec![z].into())).unwrap();
    let x0 = x - from * e;
    assert_eq!(v[0], x + (x - x0) / from * (down - from) + z * up);
    // The last step goes to sigma 0: no noise left, but a draw all the same.
    let mut noise = Noise::given(vec![7.0].into());
    run.step(1, &mut v, &[e], &mut noise).unwrap();
    assert!(!noise.ran_short() && noise.normal().is_nan());
}

/// LCM by hand: boundary condition scalings and the re-noising.
#[test]
fn lcm_step_by_hand() {
    let c = SchedulerConfig::parse(r#"{"_class_name": "LCMScheduler"}"#).unwrap();
    let mut run = build(&c, SamplerKind::Lcm, 2, 1.0).unwrap();
    assert_eq!(levels(&*run), [999.0, 499.0]);
    let ac = tables::alphas_cumprod(&tables::betas(&config::Betas::ScaledLinear { start: 0.00085, end: 0.012 }, 1000));
    let (x, e, z) = (1.5f32, 0.25f32, 0.5f32);
    let s = 999.0f32 * 10.0;
    let (c_skip, c_out) = (0.25 / (s * s + 0.25), s / (s * s + 0.25).sqrt());
    let x0 = (x - (1.0 - ac[999]).sqrt() * e) / ac[999].sqrt();
    let d = c_out * x0 + c_skip * x;
    assert!((run.denoised(0, &[x], &[e])[0] - d).abs() <= 1e-6 * d.abs());
    let mut v = [x];
    run.step(0, &mut v, &[e], &mut Noise::given(vec![z].into())).unwrap();
    let want = ac[499].sqrt() * d + (1.0 - ac[499]).sqrt() * z;
    assert!((v[0] - want).abs() <= 1e-6 * want.abs(), "{} vs {want}", v[0]);
}

/// Each refusal names the key at fault.
#[test]
fn bad_configs_are_refused_naming_the_key() {
    let parse_err = |extra: &str, key: &str| {
        let e = SchedulerConfig::parse(&with(SD15, extra)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(key), "{extra}: {msg}");
        assert!(matches!(e, Error::InvalidModel(_)), "{extra}: {e:?}");
    };
    parse_err(r#"{"beta_start": -0.001}"#, "beta_start");
    parse_err(r#"{"beta_end": 1.5}"#, "beta_end");
    parse_err(r#"{"beta_end": NaN}"#, "beta_end");
    parse_err(r#"{"beta_schedule": "sigmoid"}"#, "beta_schedule");
    parse_err(r#"{"num_train_timesteps": 0}"#, "num_train_timesteps");
    parse_err(r#"{"num_train_timesteps": "1000"}"#, "num_train_timesteps");
    parse_err(r#"{"prediction_type": "flow_prediction"}"#, "prediction_type");
    parse_err(r#"{"timestep_spacing": "evenly"}"#, "timestep_spacing");
    parse_err(r#"{"steps_offset": -1}"#, "steps_offset");
    parse_err(r#"{"clip_sample": "yes"}"#, "clip_sample");
    parse_err(r#"{"trained_betas": [0.1, -0.2]}"#, "trained_betas");
    parse_err(r#"{"trained_betas": [0.1, 0.2]}"#, "trained_betas"); // 2 betas, 1000 timesteps
    parse_err(r#"{"_class_name": "FlowMatchEulerDiscreteScheduler"}"#, "_class_name");
    parse_err(r#"{"_class_name": 3}"#, "_class_name");
    parse_err(r#"{"solver_order": 4}"#, "solver_order");
    parse_err(r#"{"lambda_min_clipped": Infinity}"#, "lambda_min_clipped");
    parse_err(r#"{"original_inference_steps": 0}"#, "original_inference_steps");
    assert!(SchedulerConfig::parse("not json").unwrap_err().to_string().contains("JSON"));
    assert!(SchedulerConfig::parse("{}").unwrap_err().to_string().contains("_class_name"));

    let build_err = |extra: &str, kind: SamplerKind, key: &str| {
        let c = SchedulerConfig::parse(&with(SD15, extra)).unwrap();
        let msg = build(&c, kind, 20, 1.0).err().unwrap_or_else(|| panic!("{extra} {kind:?} built")).to_string();
        assert!(msg.contains(key), "{extra} {kind:?}: {msg}");
    };
    let pndm = build(
        &SchedulerConfig::parse(&with(SD15, r#"{"skip_prk_steps": false}"#)).unwrap(),
        SamplerKind::Pndm,
        20,
        1.0,
    );
    let msg = pndm.err().unwrap().to_string();
    assert!(
        msg.contains("skip_prk_steps") && msg.contains("PNDM with PRK steps is not supported; use ddim/euler"),
        "{msg}"
    );
    // PNDM's default is skip_prk_steps false.
    build_err(r#"{"skip_prk_steps": null}"#, SamplerKind::Pndm, "skip_prk_steps");
    for kind in [SamplerKind::Ddim { eta: 0.0 }, SamplerKind::DpmSolverPp2m, SamplerKind::Lcm] {
        build_err(r#"{"thresholding": true}"#, kind, "thresholding");
    }
    // A DPM-Solver folder's own scheduler runs as configured: what mirage lacks is refused...
    let dpm = r#"{"_class_name": "DPMSolverMultistepScheduler", "#;
    let auto = SamplerKind::Auto { eta: 0.0 };
    build_err(&format!(r#"{dpm} "algorithm_type": "sde-dpmsolver++"}}"#), auto, "algorithm_type");
    build_err(&format!(r#"{dpm} "algorithm_type": "dpmsolver"}}"#), auto, "algorithm_type");
    build_err(&format!(r#"{dpm} "solver_order": 3}}"#), auto, "solver_order");
    // ... while dpm++2m by name is DPM-Solver++ 2M whatever the file's algorithm and order.
    for extra in [r#""algorithm_type": "sde-dpmsolver++""#, r#""solver_order": 3"#, r#""solver_order": 1"#] {
        let c = SchedulerConfig::parse(&with(SD15, &format!("{{{extra}}}"))).unwrap();
        let named = trajectory(build(&c, SamplerKind::DpmSolverPp2m, 10, 1.0).unwrap());
        assert_eq!(named, trajectory(build(&sd15(), SamplerKind::DpmSolverPp2m, 10, 1.0).unwrap()), "{extra}");
    }
    // The folder's own first-order solver differs from 2M.
    let first = SchedulerConfig::parse(&format!(r#"{dpm} "solver_order": 1}}"#)).unwrap();
    let own = trajectory(build(&first, auto, 10, 1.0).unwrap());
    let named = trajectory(build(&first, SamplerKind::DpmSolverPp2m, 10, 1.0).unwrap());
    assert_ne!(own, named);
    build_err(r#"{"solver_type": "bogus"}"#, SamplerKind::DpmSolverPp2m, "solver_type");
    build_err(r#"{"variance_type": "learned_range"}"#, SamplerKind::DpmSolverPp2m, "variance_type");
    build_err(r#"{"use_lu_lambdas": true}"#, SamplerKind::DpmSolverPp2m, "use_lu_lambdas");
    build_err(r#"{"use_exponential_sigmas": true}"#, SamplerKind::Euler, "use_exponential_sigmas");
    build_err(r#"{"use_beta_sigmas": true}"#, SamplerKind::DpmSolverPp2m, "use_beta_sigmas");
    build_err(r#"{"interpolation_type": "log_linear"}"#, SamplerKind::Euler, "interpolation_type");
    build_err(r#"{"prediction_type": "sample"}"#, SamplerKind::EulerAncestral, "prediction_type");
    build_err(r#"{"prediction_type": "sample"}"#, SamplerKind::Pndm, "prediction_type");
    build_err(r#"{"steps_offset": 60}"#, SamplerKind::Ddim { eta: 0.0 }, "steps_offset");
    build_err(r#"{"original_inference_steps": 10}"#, SamplerKind::Lcm, "original_inference_steps");
    build_err(
        r#"{"num_train_timesteps": 10, "trained_betas": null}"#,
        SamplerKind::Ddim { eta: 0.0 },
        "num_train_timesteps",
    );
    // A key irrelevant to the chosen class does not stop it.
    let c =
        SchedulerConfig::parse(&with(SD15, r#"{"algorithm_type": "sde-dpmsolver++", "thresholding": true}"#)).unwrap();
    assert!(build(&c, SamplerKind::Euler, 20, 1.0).is_ok());
    assert!(build(&c, SamplerKind::Pndm, 20, 1.0).is_ok());

    // The caller's values.
    let c = sd15();
    for (steps, strength, key) in [
        (0, 1.0, "steps"),
        (1001, 1.0, "steps"),
        (10, 0.0, "strength"),
        (10, 1.5, "strength"),
        (10, f32::NAN, "strength"),
    ] {
        let e = build(&c, SamplerKind::Euler, steps, strength).err().unwrap();
        assert!(matches!(e, Error::InvalidArgument(_)) && e.to_string().contains(key), "{e}");
    }
    assert!(build(&c, SamplerKind::Ddim { eta: 2.0 }, 10, 1.0).err().unwrap().to_string().contains("eta"));
}

#[test]
fn config_features() {
    let cfg = |extra: &str| SchedulerConfig::parse(&with(SD15, extra)).unwrap();
    // Zero terminal SNR: Euler / DPM pin the last alphas_cumprod to 2^-24 (sigma_max 4096), DDIM keeps 0.
    let z =
        cfg(r#"{"rescale_betas_zero_snr": true, "timestep_spacing": "trailing", "prediction_type": "v_prediction"}"#);
    let e = build(&z, SamplerKind::Euler, 4, 1.0).unwrap();
    assert_eq!(levels(&*e), [999.0, 749.0, 499.0, 249.0]);
    let want = ((1.0 - 2f32.powi(-24)) / 2f32.powi(-24)).sqrt();
    assert_eq!(e.init_noise_sigma(), want); // trailing: sigma_max itself
    let mut d = build(&z, SamplerKind::Ddim { eta: 0.0 }, 4, 1.0).unwrap();
    assert_eq!(d.denoised(0, &[0.3], &[0.5]), [-0.5]); // alpha_prod 0: x0 = -v
    let mut x = [0.3f32];
    d.step(0, &mut x, &[0.5], &mut Noise::new(0)).unwrap();
    assert!(x[0].is_finite());
    // DDIM clips its x0 estimate to clip_sample_range (DDIM's default is to clip).
    let clip = cfg(r#"{"clip_sample": null, "prediction_type": "sample"}"#);
    assert_eq!(build(&clip, SamplerKind::Ddim { eta: 0.0 }, 4, 1.0).unwrap().denoised(0, &[0.0], &[5.0]), [1.0]);
    let clip2 = cfg(r#"{"clip_sample": true, "clip_sample_range": 2.0, "prediction_type": "sample"}"#);
    assert_eq!(build(&clip2, SamplerKind::Ddim { eta: 0.0 }, 4, 1.0).unwrap().denoised(0, &[0.0], &[-5.0]), [-2.0]);
    // SD's file says clip_sample false.
    assert!(build(&sd15(), SamplerKind::Ddim { eta: 0.0 }, 4, 1.0).unwrap().denoised(0, &[9.0], &[0.0])[0] > 1.0);
    // Trained betas: the same list as a schedule gives the same run.
    let b = tables::betas(&config::Betas::ScaledLinear { start: 0.00085, end: 0.012 }, 1000);
    let list: Vec<String> = b.iter().map(|v| format!("{}", *v as f64)).collect();
    let trained = cfg(&format!(r#"{{"trained_betas": [{}], "beta_schedule": "linear"}}"#, list.join(",")));
    for kind in [SamplerKind::Euler, SamplerKind::DpmSolverPp2mKarras, SamplerKind::Ddim { eta: 0.0 }] {
        assert_eq!(
            trajectory(build(&trained, kind, 7, 1.0).unwrap()),
            trajectory(build(&sd15(), kind, 7, 1.0).unwrap())
        );
    }
    // lambda_min_clipped drops the noisiest timesteps from DPM's spacing.
    let cos = cfg(r#"{"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1}"#);
    let ac = tables::alphas_cumprod(&tables::betas(&config::Betas::SquaredCos, 1000));
    let clipped = ac.iter().filter(|&&a| a.sqrt().ln() - (1.0 - a).sqrt().ln() < -5.1).count();
    assert!(clipped > 0);
    let l = levels(&*build(&cos, SamplerKind::DpmSolverPp2m, 5, 1.0).unwrap());
    let last = (1000 - clipped) as f64;
    assert_eq!(l[0] as f64, (last - 1.0).round_ties_even());
    // Continuous timesteps (v-prediction): Euler feeds 0.25 ln(sigma).
    let cont = cfg(r#"{"timestep_type": "continuous", "prediction_type": "v_prediction"}"#);
    let e = build(&cont, SamplerKind::Euler, 4, 1.0).unwrap();
    assert_eq!(e.input(0).level, 0.25 * e.init_noise_sigma().ln());
    // final_sigmas_type sigma_min: the last step stops at sigma_min, not 0.
    let fin = cfg(r#"{"final_sigmas_type": "sigma_min"}"#);
    assert_ne!(
        trajectory(build(&fin, SamplerKind::Euler, 4, 1.0).unwrap()),
        trajectory(build(&sd15(), SamplerKind::Euler, 4, 1.0).unwrap())
    );
    // euler_at_final / lower_order_final change DPM's last steps only in the cases diffusers says.
    let eaf = cfg(r#"{"euler_at_final": true, "final_sigmas_type": "sigma_min"}"#);
    let lof = cfg(r#"{"lower_order_final": false, "final_sigmas_type": "sigma_min"}"#);
    assert_ne!(
        trajectory(build(&eaf, SamplerKind::DpmSolverPp2m, 20, 1.0).unwrap()),
        trajectory(build(&lof, SamplerKind::DpmSolverPp2m, 20, 1.0).unwrap())
    );
}

#[test]
fn karras_euler_timesteps_are_fractional_and_span_the_spacing() {
    let c = SchedulerConfig::parse(&with(SD15, r#"{"use_karras_sigmas": true}"#)).unwrap();
    let e = build(&c, SamplerKind::Euler, 8, 1.0).unwrap();
    let l = levels(&*e);
    assert!((l[0] - 999.0).abs() < 1e-3 && (l[7] - 0.0).abs() < 1e-3, "{l:?}");
    assert!(l.iter().any(|t| t.fract() != 0.0), "{l:?}");
    assert!(l.windows(2).all(|w| w[0] > w[1]));
    // sigma_min / sigma_max from the file bound the Karras sigmas.
    let c = SchedulerConfig::parse(&with(SD15, r#"{"use_karras_sigmas": true, "sigma_min": 0.1, "sigma_max": 10.0}"#))
        .unwrap();
    let e = build(&c, SamplerKind::Euler, 8, 1.0).unwrap();
    assert!((e.init_noise_sigma() - 10.0).abs() < 1e-5);
}

// ---------------------------------------------------------------------------------------------------
// Parity with diffusers.

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sd/reference/schedulers.json");

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().map(|a| a.iter().map(|x| config::number(x).unwrap_or(f64::NAN) as f32).collect()).unwrap_or_default()
}

fn kind_of(name: &str, eta: f32) -> SamplerKind {
    match name {
        "ddim" => SamplerKind::Ddim { eta },
        other => SamplerKind::parse(other, 0.0).unwrap_or_else(|e| panic!("sampler {other}: {e}")),
    }
}

/// The largest of |a - b| / (|b| + 1e-6 / 1e-5 scale), i.e. how far `a` is from `b` in units of the
/// tolerance 1e-5 relative + 1e-6 absolute (<= 1 passes).
fn tolerance_units(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&a, &b)| (a as f64 - b as f64).abs() / (1e-5 * (b as f64).abs() + 1e-6)).fold(0.0, f64::max)
}

#[test]
fn parity_with_diffusers() {
    let Ok(text) = std::fs::read_to_string(FIXTURE) else {
        eprintln!("skipped: {FIXTURE} not present");
        return;
    };
    let root = config::parse_json(&text).expect("schedulers.json is JSON");
    let x_start = floats(&root["x"]);
    let cases = root["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());
    let mut worst: Vec<(String, f64)> = Vec::new();
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?").to_string();
        let cfg = SchedulerConfig::parse(&case["base_config"].to_string()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let eta = case.get("eta").and_then(config::number).unwrap_or(0.0) as f32;
        let kind = kind_of(case["sampler"].as_str().unwrap(), eta);
        let steps = case["steps"].as_u64().unwrap() as usize;
        let strength = case.get("strength").and_then(config::number).unwrap_or(1.0) as f32;
        let mut run = build(&cfg, kind, steps, strength).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut units = 0.0f64;
        let mut worst_what = String::new();
        let mut note = |what: String, u: f64| {
            if u > units {
                units = u;
                worst_what = what.clone();
            }
            if u > 1.0 {
                failures.push(format!("{name}: {what} off by {u:.2} tolerance units"));
            }
        };
        if let Some(all) = case.get("all_timesteps") {
            let whole = build(&cfg, kind, steps, 1.0).unwrap();
            note("all_timesteps".into(), tolerance_units(&levels(&*whole), &floats(all)));
        }
        let want_levels = floats(&case["timesteps"]);
        assert_eq!(run.steps(), want_levels.len(), "{name}: steps");
        let got_levels = levels(&*run);
        note("timesteps".into(), tolerance_units(&got_levels, &want_levels));
        let ins = case["init_noise_sigma"].as_f64().unwrap() as f32;
        note("init_noise_sigma".into(), tolerance_units(&[run.init_noise_sigma()], &[ins]));
        let mut x: Vec<f32> = if strength < 1.0 {
            let noised = run.noised(0, &floats(&case["x0"]), &floats(&case["eps"]));
            let want = floats(&case["noised"]);
            note("noised".into(), tolerance_units(&noised, &want));
            noised
        } else {
            x_start.iter().map(|v| v * run.init_noise_sigma()).collect()
        };
        let mut noise = Noise::given(floats(&case["noise"]).into());
        let data = case["steps_data"].as_array().unwrap();
        assert_eq!(data.len(), run.steps(), "{name}: steps_data");
        for (k, d) in data.iter().enumerate() {
            let input = run.input(k);
            let m: Vec<f32> = x.iter().map(|v| v * input.scale).collect();
            note(format!("step {k} model_input"), tolerance_units(&m, &floats(&d["model_input"])));
            // The fixture's model, in float32 as torch evaluates it: level * 0.01 is a Python float.
            let arg0 = (input.level as f64 * 0.01) as f32;
            let out: Vec<f32> = m.iter().enumerate().map(|(i, &v)| 0.5 * v + 0.1 * (arg0 + i as f32).cos()).collect();
            note(format!("step {k} out"), tolerance_units(&out, &floats(&d["out"])));
            run.step(k, &mut x, &out, &mut noise).unwrap();
            note(format!("step {k} prev"), tolerance_units(&x, &floats(&d["prev"])));
        }
        assert!(!noise.ran_short(), "{name}: drew more noise than diffusers");
        assert!(noise.normal().is_nan(), "{name}: drew less noise than diffusers");
        if let Some(start) = case.get("start") {
            let want = floats(start);
            if strength >= 1.0 {
                let x: Vec<f32> = x_start.iter().map(|v| v * run.init_noise_sigma()).collect();
                note("start".into(), tolerance_units(&x, &want));
            }
        }
        // The scheduler alone: each step from diffusers' own sample with diffusers' own model output.
        let mut forced = build(&cfg, kind, steps, strength).unwrap();
        let mut noise = Noise::given(floats(&case["noise"]).into());
        let mut x = floats(case.get("start").unwrap_or(&case["noised"]));
        if x.is_empty() {
            x = x_start.iter().map(|v| v * forced.init_noise_sigma()).collect();
        }
        let mut step_units = 0.0f64;
        for (k, d) in data.iter().enumerate() {
            forced.step(k, &mut x, &floats(&d["out"]), &mut noise).unwrap();
            let want = floats(&d["prev"]);
            step_units = step_units.max(tolerance_units(&x, &want));
            x = want;
        }
        note("forced step".into(), step_units);
        worst.push((format!("{name} ({worst_what}; scheduler alone {step_units:.3})"), units));
    }
    for (name, u) in &worst {
        eprintln!("{name:80} max error {u:.3} x (1e-5 rel + 1e-6 abs)");
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
