//! Reverse diffusion on real ONNX Runtime with the tiny random-weight VAE + U-Net set: generate, img2img,
//! inpaint, batching, determinism, progress / preview / cancel, and bad parameters.

use std::sync::atomic::AtomicBool;

use mirage::limits::MAX_STEPS;
use mirage::model_set::ModelSet;
use mirage::pipeline::{self, DiffusionParams, Hooks};
use mirage::sampler::SamplerKind;
use mirage::Error;

use crate::util::tiny_diffusion_set;

fn params(steps: usize, seed: u64, count: usize) -> DiffusionParams {
    DiffusionParams { steps, seed, count, ..Default::default() }
}

#[test]
fn generate_is_seeded_batch_independent_and_in_range() {
    let (_tmp, dir) = tiny_diffusion_set();
    let set = ModelSet::open(&dir).unwrap();
    let per = set.image_len();
    let a = pipeline::generate(&set, &params(6, 7, 2), &mut Hooks::default()).unwrap();
    assert_eq!(a.len(), 2 * per);
    let (lo, hi) = a.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    assert!(a.iter().all(|v| v.is_finite() && (-1.0001..=1.0001).contains(v)), "range {lo}..{hi}");
    let b = pipeline::generate(&set, &params(6, 7, 2), &mut Hooks::default()).unwrap();
    assert_eq!(a, b, "same seed, same images");
    let c = pipeline::generate(&set, &params(6, 8, 2), &mut Hooks::default()).unwrap();
    assert_ne!(a, c);
    // The first image of a batch of two is the image of a batch of one: the noise is drawn in order and
    // the U-Net treats batch items independently.
    let single = pipeline::generate(&set, &params(6, 7, 1), &mut Hooks::default()).unwrap();
    let max = single.iter().zip(&a[..per]).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(max < 1e-4, "batching changed the result by {max}");
    for sampler in [SamplerKind::Ddim { eta: 1.0 }, SamplerKind::DpmSolverPp2m] {
        let p = DiffusionParams { sampler, ..params(4, 7, 1) };
        let x = pipeline::generate(&set, &p, &mut Hooks::default()).unwrap();
        assert_eq!(x, pipeline::generate(&set, &p, &mut Hooks::default()).unwrap(), "{sampler:?} not reproducible");
    }
}

#[test]
fn progress_preview_and_cancel() {
    let (_tmp, dir) = tiny_diffusion_set();
    let set = ModelSet::open(&dir).unwrap();
    let per = set.image_len();
    let mut seen = Vec::new();
    let mut previews = 0;
    {
        let mut progress = |done: usize, total: usize| {
            seen.push((done, total));
            true
        };
        let mut preview = |_: usize, images: &[f32]| {
            assert_eq!(images.len(), 3 * per);
            previews += 1;
            true
        };
        let mut hooks = Hooks { progress: Some(&mut progress), preview: Some(&mut preview), cancel: None };
        pipeline::generate(&set, &params(5, 1, 3), &mut hooks).unwrap();
    }
    assert_eq!(seen, (1..=5).map(|k| (k, 5)).collect::<Vec<_>>());
    assert_eq!(previews, 5);

    // Returning false from progress cancels within that step.
    let mut calls = 0;
    let mut progress = |done: usize, _: usize| {
        calls += 1;
        done < 3
    };
    let mut hooks = Hooks { progress: Some(&mut progress), ..Default::default() };
    assert!(matches!(pipeline::generate(&set, &params(10, 1, 1), &mut hooks), Err(Error::Cancelled)));
    assert_eq!(calls, 3);

    // A cancel flag set (from any thread) stops the run before the next step.
    let flag = AtomicBool::new(true);
    let mut hooks = Hooks { cancel: Some(&flag), ..Default::default() };
    assert!(matches!(pipeline::generate(&set, &params(10, 1, 1), &mut hooks), Err(Error::Cancelled)));
}

#[test]
fn img2img_and_inpaint_keep_what_they_must() {
    let (_tmp, dir) = tiny_diffusion_set();
    let set = ModelSet::open(&dir).unwrap();
    let spec = set.manifest().image.clone();
    let (h, w) = (spec.height as usize, spec.width as usize);
    let x: Vec<f32> = (0..2 * h * w).map(|i| ((i % 17) as f32 / 8.0) - 1.0).collect();
    let p = DiffusionParams { strength: 0.3, ..params(10, 2, 2) };
    let mut steps = 0;
    let mut progress = |_: usize, total: usize| {
        steps = total;
        true
    };
    let y =
        pipeline::img2img(&set, &x, 2, &p, None, &mut Hooks { progress: Some(&mut progress), ..Default::default() })
            .unwrap();
    assert_eq!(y.len(), x.len());
    assert_eq!(steps, 3, "strength 0.3 of 10 steps runs 3");

    // Inpaint: the left half is kept exactly, the right half is invented.
    let mask: Vec<f32> = (0..2 * h * w).map(|i| if i % w >= w / 2 { 1.0 } else { 0.0 }).collect();
    let y = pipeline::inpaint(&set, &x, &mask, 2, &params(6, 3, 2), None, &mut Hooks::default()).unwrap();
    for i in 0..y.len() {
        if mask[i] == 0.0 {
            assert_eq!(y[i], x[i], "kept pixel {i} changed");
        }
    }
    assert!((0..y.len()).any(|i| mask[i] == 1.0 && (y[i] - x[i]).abs() > 1e-3), "nothing was invented");
}

#[test]
fn bad_parameters_are_refused() {
    let (_tmp, dir) = tiny_diffusion_set();
    let set = ModelSet::open(&dir).unwrap();
    let mut hooks = Hooks::default();
    let invalid = |r: mirage::Result<Vec<f32>>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(invalid(pipeline::generate(&set, &params(0, 1, 1), &mut hooks)));
    assert!(invalid(pipeline::generate(&set, &params(MAX_STEPS + 1, 1, 1), &mut hooks)));
    assert!(invalid(pipeline::generate(&set, &params(5, 1, 0), &mut hooks)));
    let x = vec![0.0; set.image_len()];
    for strength in [0.0, -0.5, 1.5, f32::NAN] {
        let p = DiffusionParams { strength, ..params(5, 1, 1) };
        assert!(invalid(pipeline::img2img(&set, &x, 1, &p, None, &mut hooks)), "strength {strength}");
    }
    let p = DiffusionParams { sampler: SamplerKind::Ddim { eta: f32::NAN }, ..params(5, 1, 1) };
    assert!(invalid(pipeline::generate(&set, &p, &mut hooks)));
    assert!(invalid(pipeline::inpaint(&set, &x, &[1.0; 3], 1, &params(5, 1, 1), None, &mut hooks)));
    assert!(invalid(pipeline::img2img(&set, &x[1..], 1, &params(5, 1, 1), None, &mut hooks)));
    // A set without a U-Net says so.
    let (_t2, vae_only) = crate::util::tiny_set();
    let vae_only = ModelSet::open(&vae_only).unwrap();
    assert!(matches!(pipeline::generate(&vae_only, &params(5, 1, 1), &mut hooks), Err(Error::Unsupported(_))));
}

/// A plan stepped by hand, one sampler step at a time with other work in between (as a game loop or a job
/// would), gives exactly the blocking call's images; finishing it early is refused.
#[test]
fn a_plan_stepped_by_hand_gives_the_blocking_result() {
    let (_tmp, dir) = tiny_diffusion_set();
    let set = ModelSet::open(&dir).unwrap();
    let p = DiffusionParams { sampler: SamplerKind::Ddim { eta: 0.7 }, ..params(5, 4, 2) };
    let step_all = |mut plan: pipeline::Plan| {
        let total = plan.steps();
        let mut k = 0;
        while !plan.is_done() {
            assert_eq!(plan.steps_done(), k);
            plan.step(&set, &mut Hooks::default()).unwrap();
            k += 1;
            // Something else runs on the set between steps: it must not disturb the plan.
            pipeline::generate(&set, &params(1, 99, 1), &mut Hooks::default()).unwrap();
        }
        assert_eq!(k, total);
        plan.finish().unwrap()
    };
    let blocking = pipeline::generate(&set, &p, &mut Hooks::default()).unwrap();
    assert_eq!(step_all(pipeline::plan_generate(&set, &p, None).unwrap()), blocking);

    let (per, spec) = (set.image_len(), set.manifest().image.clone());
    let x: Vec<f32> = (0..2 * per).map(|i| ((i * 7 % 13) as f32 / 6.0) - 1.0).collect();
    let pixels = 2 * (spec.height * spec.width) as usize;
    let mask: Vec<f32> = (0..pixels).map(|i| if i % 3 == 0 { 1.0 } else { 0.0 }).collect();
    let q = DiffusionParams { strength: 0.8, ..p.clone() };
    let blocking = pipeline::inpaint(&set, &x, &mask, 2, &q, None, &mut Hooks::default()).unwrap();
    assert_eq!(step_all(pipeline::plan_inpaint(&set, &x, &mask, 2, &q, None).unwrap()), blocking);

    let mut early = pipeline::plan_generate(&set, &p, None).unwrap();
    early.step(&set, &mut Hooks::default()).unwrap();
    let err = early.finish().unwrap_err().to_string();
    assert!(err.contains("1 of 5 steps run"), "{err}");
}
