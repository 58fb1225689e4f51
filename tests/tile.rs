//! Tileable output (`mirage::tile`): convolutions rewritten to pad circularly match a naive circular
//! reference, make a network equivariant to rolls (the original is not), work on the shipped emoji models,
//! refuse what they cannot rewrite, and are idempotent.

use std::borrow::Cow;
use std::time::Instant;

use mirage::export::onnx::{encode, Dim, ElemType, GraphBuilder};
use mirage::rng::Noise;
use mirage::tile::{circular, circular_with_report, Report};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{AttributeProto, ModelProto};
use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;
use protobuf::{EnumOrUnknown, Message};

/// An NCHW tensor.
#[derive(Clone, Debug)]
struct T4 {
    dims: [usize; 4],
    data: Vec<f32>,
}

impl T4 {
    fn random(dims: [usize; 4], seed: u64) -> T4 {
        T4 { dims, data: Noise::new(seed).normals(dims.iter().product()) }
    }

    fn at(&self, n: usize, c: usize, y: usize, x: usize) -> f32 {
        let [_, cs, h, w] = self.dims;
        self.data[((n * cs + c) * h + y) * w + x]
    }

    fn shape(&self) -> Vec<i64> {
        self.dims.iter().map(|&d| d as i64).collect()
    }

    /// torch.roll over H and W: element (y, x) moves to (y + dy, x + dx), wrapping around.
    fn roll(&self, dy: usize, dx: usize) -> T4 {
        let [ns, cs, h, w] = self.dims;
        let mut out = vec![0.0; self.data.len()];
        for n in 0..ns {
            for c in 0..cs {
                for y in 0..h {
                    for x in 0..w {
                        out[((n * cs + c) * h + (y + dy) % h) * w + (x + dx) % w] = self.at(n, c, y, x);
                    }
                }
            }
        }
        T4 { dims: self.dims, data: out }
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// One convolution layer of the test network, with its weights; `pads` is [top, left, bottom, right].
struct Layer {
    transpose: bool,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    group: usize,
    dilations: [usize; 2],
    pads: [usize; 4],
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
}

impl Layer {
    #[allow(clippy::too_many_arguments)]
    fn new(
        transpose: bool,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        bias: bool,
        seed: u64,
    ) -> Layer {
        let n = cin * cout * k * k; // group 1; `with_group` redraws
        let scale = 1.0 / ((cin * k * k) as f32).sqrt();
        let mut noise = Noise::new(seed);
        Layer {
            transpose,
            cin,
            cout,
            k,
            stride,
            group: 1,
            dilations: [1, 1],
            pads: [pad; 4],
            weight: noise.normals(n).into_iter().map(|v| v * scale).collect(),
            bias: bias.then(|| noise.normals(cout)),
        }
    }

    fn weight_shape(&self) -> [i64; 4] {
        let k = self.k as i64;
        if self.transpose {
            [self.cin as i64, (self.cout / self.group) as i64, k, k]
        } else {
            [self.cout as i64, (self.cin / self.group) as i64, k, k]
        }
    }

    /// The reference: naive loops, padding circularly (`circular`) or with zeros.
    fn apply(&self, x: &T4, circular: bool) -> T4 {
        let [ns, cs, h, w] = x.dims;
        assert_eq!(cs, self.cin);
        let [t, l, b, r] = self.pads.map(|p| p as isize);
        let (k, s) = (self.k, self.stride);
        // Where a kernel tap lands on an axis of `len`: wrapped, or None outside (zero padding).
        let place = |pos: isize, len: usize| -> Option<usize> {
            if circular {
                Some(pos.rem_euclid(len as isize) as usize)
            } else {
                (0..len as isize).contains(&pos).then_some(pos as usize)
            }
        };
        if !self.transpose {
            let [dy, dx] = self.dilations;
            let ho = (h as isize + t + b - (dy * (k - 1)) as isize - 1) as usize / s + 1;
            let wo = (w as isize + l + r - (dx * (k - 1)) as isize - 1) as usize / s + 1;
            let (cin_g, cout_g) = (self.cin / self.group, self.cout / self.group);
            let mut out = T4 { dims: [ns, self.cout, ho, wo], data: vec![0.0; ns * self.cout * ho * wo] };
            for n in 0..ns {
                for co in 0..self.cout {
                    let g = co / cout_g;
                    for i in 0..ho {
                        for j in 0..wo {
                            let mut acc = self.bias.as_ref().map_or(0.0, |b| b[co]);
                            for cl in 0..cin_g {
                                for ky in 0..k {
                                    let Some(y) = place((i * s + ky * dy) as isize - t, h) else { continue };
                                    for kx in 0..k {
                                        let Some(xx) = place((j * s + kx * dx) as isize - l, w) else { continue };
                                        let wv = self.weight[((co * cin_g + cl) * k + ky) * k + kx];
                                        acc += wv * x.at(n, g * cin_g + cl, y, xx);
                                    }
                                }
                            }
                            out.data[((n * self.cout + co) * ho + i) * wo + j] = acc;
                        }
                    }
                }
            }
            out
        } else {
            assert_eq!(self.group, 1);
            let ho = ((h - 1) * s + k) as isize - t - b;
            let wo = ((w - 1) * s + k) as isize - l - r;
            let (ho, wo) = (ho as usize, wo as usize);
            let mut out = T4 { dims: [ns, self.cout, ho, wo], data: vec![0.0; ns * self.cout * ho * wo] };
            for n in 0..ns {
                for co in 0..self.cout {
                    let bias = self.bias.as_ref().map_or(0.0, |b| b[co]);
                    out.data[(n * self.cout + co) * ho * wo..][..ho * wo].iter_mut().for_each(|v| *v = bias);
                    for ci in 0..self.cin {
                        for i in 0..h {
                            for j in 0..w {
                                let v = x.at(n, ci, i, j);
                                for ky in 0..k {
                                    let Some(y) = place((i * s + ky) as isize - t, ho) else { continue };
                                    for kx in 0..k {
                                        let Some(xx) = place((j * s + kx) as isize - l, wo) else { continue };
                                        let wv = self.weight[((ci * self.cout + co) * k + ky) * k + kx];
                                        out.data[((n * self.cout + co) * ho + y) * wo + xx] += wv * v;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            out
        }
    }
}

/// Conv 3x3 pad 1 with bias, Conv 3x3 pad 1 stride 2 (group 2), ConvTranspose 4x4 stride 2 pad 1 with
/// bias: 3 -> 4 -> 4 -> 2 channels, H and W kept; its roll factor is 2.
fn symmetric_net() -> Vec<Layer> {
    let mut conv2 = Layer::new(false, 4, 4, 3, 2, 1, false, 12);
    conv2.group = 2;
    conv2.weight.truncate(4 * 2 * 9);
    vec![Layer::new(false, 3, 4, 3, 1, 1, true, 11), conv2, Layer::new(true, 4, 2, 4, 2, 1, true, 13)]
}

/// The same kinds of layers with uneven pads and a dilation, for odd sizes.
fn uneven_net() -> Vec<Layer> {
    let mut conv1 = Layer::new(false, 3, 4, 3, 1, 0, true, 21);
    conv1.pads = [2, 0, 1, 1];
    conv1.dilations = [1, 2];
    let mut convt = Layer::new(true, 4, 2, 4, 2, 0, true, 23);
    convt.pads = [0, 1, 2, 1];
    vec![conv1, Layer::new(false, 4, 4, 3, 2, 1, false, 22), convt]
}

fn reference(layers: &[Layer], x: &T4, circular: bool) -> T4 {
    layers.iter().fold(x.clone(), |h, layer| layer.apply(&h, circular))
}

fn ints_attr(name: &str, v: &[usize]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.ints = v.iter().map(|&p| p as i64).collect();
    a.type_ = EnumOrUnknown::new(AttributeType::INTS);
    a
}

/// The layers as an ONNX graph "x" [N, C, H, W] -> "y", H and W dynamic.
fn build(layers: &[Layer]) -> ModelProto {
    let mut b = GraphBuilder::new("tile_net");
    let dims = |c: usize, h, w| [Dim::Named("N"), Dim::Fixed(c as i64), Dim::Named(h), Dim::Named(w)];
    let mut h = b.typed_input("x", ElemType::F32, &dims(layers[0].cin, "H", "W")).unwrap();
    for (i, layer) in layers.iter().enumerate() {
        let w = b.initializer(&format!("l{i}.weight"), &layer.weight_shape(), &layer.weight).unwrap();
        let bias = layer.bias.as_ref().map(|v| b.initializer(&format!("l{i}.bias"), &[v.len() as i64], v).unwrap());
        let (s, g) = (layer.stride as i64, layer.group as i64);
        h = if layer.transpose {
            b.conv_transpose(&h, &w, bias.as_deref(), s, 0, g).unwrap()
        } else {
            b.conv(&h, &w, bias.as_deref(), s, 0, g).unwrap()
        };
    }
    let last = layers.last().unwrap();
    b.typed_output(&h, "y", ElemType::F32, &dims(last.cout, "OH", "OW")).unwrap();
    let mut model = b.finish().unwrap();
    // The builder pads evenly: the pads and dilations of each layer go in here.
    let graph = model.graph.as_mut().unwrap();
    let convs = graph.node.iter_mut().filter(|n| n.op_type.starts_with("Conv"));
    for (node, layer) in convs.zip(layers) {
        node.attribute.retain(|a| a.name != "pads");
        let [t, l, bo, r] = layer.pads;
        node.attribute.push(ints_attr("pads", &[t, l, bo, r]));
        node.attribute.push(ints_attr("dilations", &layer.dilations));
    }
    model
}

fn session(bytes: &[u8]) -> mirage::runtime::LoadedSession {
    mirage::runtime::global().unwrap().session(bytes, "tile", None).unwrap()
}

/// Runs `session` on float inputs (name, shape, data); returns the output `output`, flattened.
fn run(session: &mut Session, inputs: &[(&str, Vec<i64>, &[f32])], output: &str) -> Vec<f32> {
    let feed: Vec<(Cow<str>, SessionInputValue)> = inputs
        .iter()
        .map(|(name, shape, data)| {
            let t = Tensor::from_array((shape.clone(), data.to_vec())).unwrap();
            (Cow::from(*name), SessionInputValue::from(t))
        })
        .collect();
    let out = session.run(feed).unwrap();
    let (_, data) = out.get(output).expect("output").try_extract_tensor::<f32>().unwrap();
    data.to_vec()
}

fn run_net(bytes: &[u8], x: &T4) -> Vec<f32> {
    run(&mut session(bytes), &[("x", x.shape(), &x.data)], "y")
}

#[test]
fn rewritten_convolutions_match_a_circular_reference() {
    for (layers, dims) in [(symmetric_net(), [1, 3, 8, 8]), (uneven_net(), [2, 3, 8, 6])] {
        let model = encode(&build(&layers)).unwrap();
        let x = T4::random(dims, 5);
        // The reference's layouts and pad conventions are ONNX's: with zeros it matches the original model.
        let d = max_diff(&run_net(&model, &x), &reference(&layers, &x, false).data);
        assert!(d < 1e-4, "the original model differs from the zero-padding reference by {d}");

        let (tiled, report) = circular_with_report(&model).unwrap();
        assert_eq!(report, Report { convs: 2, conv_transposes: 1 });
        let want = reference(&layers, &x, true);
        let got = run_net(&tiled, &x);
        let d = max_diff(&got, &want.data);
        assert!(d < 1e-4, "dims {dims:?}: the rewritten model differs from the circular reference by {d}");
        // Circular and zero padding really differ (the reference is not trivially the same).
        assert!(max_diff(&got, &reference(&layers, &x, false).data) > 1e-2);
    }
}

#[test]
fn rewritten_network_is_equivariant_to_rolls_and_the_original_is_not() {
    let model = encode(&build(&symmetric_net())).unwrap();
    let tiled = circular(&model).unwrap();
    let x = T4::random([2, 3, 8, 8], 6);
    let (dy, dx) = (2, 4); // multiples of the net's factor 2 (one stride-2 conv, one stride-2 transpose)
    for (bytes, circular) in [(&tiled, true), (&model, false)] {
        let y = T4 { dims: [2, 2, 8, 8], data: run_net(bytes, &x) };
        let y_of_rolled = run_net(bytes, &x.roll(dy, dx));
        let d = max_diff(&y_of_rolled, &y.roll(dy, dx).data);
        if circular {
            assert!(d < 1e-4, "rewritten: f(roll(x)) and roll(f(x)) differ by {d}");
        } else {
            assert!(d > 1e-3, "original: f(roll(x)) and roll(f(x)) differ by only {d}");
        }
    }
}

fn emoji(file: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/emoji").join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Checks that `f(roll(x, shift_in)) == roll(f(x), shift_out)` for the rewritten model (and not for the
/// original); `x` is the rolled input, the others are fixed.
#[allow(clippy::too_many_arguments)]
fn check_emoji_equivariance(
    file: &str,
    others: &[(&str, Vec<i64>, Vec<f32>)],
    x_name: &str,
    x: &T4,
    output: &str,
    out_dims: [usize; 4],
    shift_in: usize,
    shift_out: usize,
) -> Report {
    let original = emoji(file);
    let (tiled, report) = circular_with_report(&original).unwrap();
    let rolled = x.roll(shift_in, shift_in);
    for (bytes, circular) in [(&tiled, true), (&original, false)] {
        let mut s = session(bytes);
        let mut feed = |x: &T4| {
            let mut inputs: Vec<(&str, Vec<i64>, &[f32])> = vec![(x_name, x.shape(), &x.data)];
            inputs.extend(others.iter().map(|(n, s, d)| (*n, s.clone(), d.as_slice())));
            run(&mut s, &inputs, output)
        };
        let y = T4 { dims: out_dims, data: feed(x) };
        let d = max_diff(&feed(&rolled), &y.roll(shift_out, shift_out).data);
        eprintln!("{file} ({}): f(roll(x)) vs roll(f(x)): {d:.2e}", if circular { "circular" } else { "original" });
        if circular {
            assert!(d < 1e-4, "{file}: rewritten, f(roll(x)) and roll(f(x)) differ by {d}");
        } else {
            assert!(d > 1e-3, "{file}: original, f(roll(x)) and roll(f(x)) differ by only {d}");
        }
    }
    report
}

#[test]
fn emoji_vae_decodes_and_encodes_tileably() {
    // Latents 4x8x8 <-> images 4x32x32 (models/emoji/manifest.json): a factor of 4.
    let z = T4::random([2, 4, 8, 8], 7);
    let report = check_emoji_equivariance("vae_decoder.onnx", &[], "latent", &z, "image", [2, 4, 32, 32], 1, 4);
    eprintln!("vae_decoder.onnx: {report:?}");
    assert!(report.convs > 0 && report.conv_transposes > 0, "{report:?}");

    let img = T4 { dims: [2, 4, 32, 32], data: T4::random([2, 4, 32, 32], 8).data.iter().map(|v| v.tanh()).collect() };
    let report = check_emoji_equivariance("vae_encoder.onnx", &[], "image", &img, "mean", [2, 4, 8, 8], 4, 1);
    assert!(report.convs > 0, "{report:?}");
}

#[test]
fn emoji_unet_is_tileable() {
    let n = 2;
    let x = T4::random([n, 4, 8, 8], 9);
    let others = [
        ("noise_variance", vec![n as i64, 1], vec![0.3, 0.8]),
        ("context", vec![n as i64, 24, 384], Noise::new(10).normals(n * 24 * 384)),
        ("pooled", vec![n as i64, 384], Noise::new(11).normals(n * 384)),
    ];
    // Two average-pooling levels on 8x8: rolls by multiples of 4 commute with the network.
    let report = check_emoji_equivariance("unet.onnx", &others, "x", &x, "eps", [n, 4, 8, 8], 4, 4);
    eprintln!("unet.onnx: {report:?}");
    assert!(report.convs > 0, "{report:?}");

    // What the rewrite costs per run (printed, never asserted).
    let original = emoji("unet.onnx");
    let tiled = circular(&original).unwrap();
    let mut inputs: Vec<(&str, Vec<i64>, &[f32])> = vec![("x", x.shape(), &x.data)];
    inputs.extend(others.iter().map(|(n, s, d)| (*n, s.clone(), d.as_slice())));
    let mut sessions = [session(&original), session(&tiled)];
    let mut ms = [0.0f64; 2];
    for s in &mut sessions {
        for _ in 0..5 {
            run(s, &inputs, "eps");
        }
    }
    // Four rounds of five runs each, alternating, so that both see the same load from other tests.
    for _ in 0..4 {
        for (s, total) in sessions.iter_mut().zip(&mut ms) {
            let start = Instant::now();
            for _ in 0..5 {
                run(s, &inputs, "eps");
            }
            *total += start.elapsed().as_secs_f64() * 1e3;
        }
    }
    let (a, b) = (ms[0] / 20.0, ms[1] / 20.0);
    eprintln!("unet.onnx, batch {n}: original {a:.3} ms, circular {b:.3} ms per run ({:+.1}%)", (b / a - 1.0) * 100.0);
}

/// The error of `circular` on `bytes`, as text; it must say it comes from the rewrite and stay short.
fn refusal(bytes: &[u8]) -> String {
    let e = circular(bytes).expect_err("the rewrite should refuse").to_string();
    assert!(e.starts_with("invalid model: tileable: ") && e.len() < 400, "{e}");
    e
}

#[test]
fn unrewritable_models_are_refused_with_clear_messages() {
    let base = build(&symmetric_net());

    let mut m = base.clone();
    let conv = &mut m.graph.as_mut().unwrap().node[0];
    conv.name = "conv_7".into();
    conv.attribute.retain(|a| a.name != "pads");
    let mut a = AttributeProto::new();
    a.name = "auto_pad".into();
    a.s = b"SAME_UPPER".to_vec();
    a.type_ = EnumOrUnknown::new(AttributeType::STRING);
    conv.attribute.push(a);
    let e = refusal(&m.write_to_bytes().unwrap());
    assert!(e.contains("node \"conv_7\" (Conv) uses auto_pad SAME_UPPER; only explicit pads"), "{e}");

    let mut m = base.clone();
    m.opset_import[0].version = 9;
    let e = refusal(&m.write_to_bytes().unwrap());
    assert!(e.contains("opset 9") && e.contains("opset 11 or newer"), "{e}");

    let mut m = base.clone();
    let convt = m.graph.as_mut().unwrap().node.iter_mut().find(|n| n.op_type == "ConvTranspose").unwrap();
    convt.name = "x".repeat(5000);
    convt.attribute.push(ints_attr("output_shape", &[16, 16]));
    let e = refusal(&m.write_to_bytes().unwrap());
    assert!(e.contains("(ConvTranspose) has output_shape") && e.contains("5000 bytes"), "{e}");

    let e = refusal(&[0xff; 64]);
    assert!(e.contains("not an ONNX model"), "{e}");
    // Bytes that happen to parse as protobuf, but hold no model.
    refusal(b"");
    refusal(b"hello, this is not a model");
    for seed in 0..20u64 {
        let junk: Vec<u8> = Noise::new(seed).normals(256).iter().map(|v| (v * 80.0) as i8 as u8).collect();
        refusal(&junk);
    }
}

#[test]
fn the_rewrite_is_idempotent() {
    let model = encode(&build(&uneven_net())).unwrap();
    let once = circular(&model).unwrap();
    let (twice, report) = circular_with_report(&once).unwrap();
    assert_eq!(report, Report::default());
    assert_eq!(twice, once, "a second rewrite changed the model");
    let x = T4::random([1, 3, 8, 6], 12);
    assert_eq!(run_net(&once, &x), run_net(&twice, &x));

    // A model without padded convolutions comes back as it was.
    let mut unpadded = symmetric_net();
    unpadded.iter_mut().for_each(|l| l.pads = [0; 4]);
    let bytes = encode(&build(&unpadded)).unwrap();
    assert_eq!(circular(&bytes).unwrap(), bytes);
}

/// `x` [n, c, h, w] rolled by `dy` rows and `dx` columns (what was at (y, x) moves to (y + dy, x + dx)).
fn roll(x: &[f32], n: usize, c: usize, h: usize, w: usize, dy: usize, dx: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for p in 0..n * c {
        for y in 0..h {
            for xx in 0..w {
                out[p * h * w + ((y + dy) % h) * w + (xx + dx) % w] = x[p * h * w + y * w + xx];
            }
        }
    }
    out
}

fn mean_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
}

/// Mean |difference| between horizontally adjacent pixels across the wrap (last column next to the first)
/// and, for comparison, between adjacent columns inside the image.
fn seam(img: &[f32], c: usize, h: usize, w: usize) -> (f32, f32) {
    let (mut edge, mut inner) = (0.0, 0.0);
    for p in 0..c {
        for y in 0..h {
            let row = &img[(p * h + y) * w..][..w];
            edge += (row[w - 1] - row[0]).abs();
            inner += row.windows(2).map(|v| (v[1] - v[0]).abs()).sum::<f32>() / (w - 1) as f32;
        }
    }
    (edge / (c * h) as f32, inner / (c * h) as f32)
}

/// The proof, on the shipped emoji set, through the pipeline: initial noise rolled by a multiple of
/// the U-Net's downsampling factor gives, with `tileable`, the same image rolled by the matching number of
/// pixels (mean |difference| <= 1/255 of the range); without it, not. Prints the seam figures of the README.
#[test]
fn a_tileable_generation_rolls_with_its_noise() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/emoji");
    let _ = crate::util::text_encoder_dir(); // models/minilm, which the emoji set's manifest names
    let set = mirage::model_set::ModelSet::open(&dir).unwrap();
    let [c, h, w] = set.latent_shape().unwrap().map(|d| d as usize);
    let img = set.manifest().image.clone();
    let (ic, ih, iw) = (img.channels as usize, img.height as usize, img.width as usize);
    let levels = set.manifest().unet.as_ref().unwrap().architecture["widths"].as_array().unwrap().len();
    let k = 1 << (levels - 1); // the U-Net's downsampling factor, in latent cells
    let f = iw / w; // pixels per latent cell
    let noise = Noise::new(3).try_normals(c * h * w).unwrap();
    let rolled = roll(&noise, 1, c, h, w, k, k);
    let make = |tileable: bool, noise: &[f32]| {
        let p =
            mirage::pipeline::DiffusionParams { steps: 20, tileable, noise: Some(noise.into()), ..Default::default() };
        mirage::pipeline::generate(&set, &p, &mut Default::default()).unwrap()
    };
    let mut figures = Vec::new();
    for tileable in [true, false] {
        let t = Instant::now();
        let a = make(tileable, &noise);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let b = make(tileable, &rolled);
        let d = mean_abs(&b, &roll(&a, 1, ic, ih, iw, k * f, k * f));
        let (edge, inner) = seam(&a, ic, ih, iw);
        eprintln!(
            "tile: tileable {tileable}: roll by {k} latent cells -> {} px: mean |diff| {d:.5} (of a range of 2); \
             seam: across the wrap {edge:.4}, adjacent columns inside {inner:.4}; one 20-step image {ms:.0} ms",
            k * f
        );
        figures.push((d, edge, inner));
    }
    let (tiled, plain) = (figures[0], figures[1]);
    assert!(tiled.0 <= 2.0 / 255.0, "tileable: rolled noise gives a rolled image within 1/255: {}", tiled.0);
    assert!(
        plain.0 > 4.0 * 2.0 / 255.0,
        "without tileable the roll must not hold (else the test proves nothing): {}",
        plain.0
    );
}

/// A set whose decoder crops (the Fashion sets: 8x8 latents to 28x28 images) cannot wrap: refused clearly.
#[test]
fn a_cropping_set_refuses_tileable() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fashion");
    let set = mirage::model_set::ModelSet::open(&dir).unwrap();
    let p = mirage::pipeline::DiffusionParams { steps: 2, tileable: true, ..Default::default() };
    let e = mirage::pipeline::generate(&set, &p, &mut Default::default()).unwrap_err().to_string();
    assert!(e.contains("cannot make tileable images") && e.contains("28x28"), "{e}");
}

/// The README's tiled example, measured: img2img of a full-frame picture (models/emoji/tile-input.png, a
/// 32x32 crop of the flame row of gallery-seen.png) with and without `tileable`. Two figures per result: the
/// mean |difference| across the wrap (last column next to the first, last row next to the first) against that
/// between adjacent pixels inside, and the mean alpha of the outermost ring of pixels (the emoji model draws
/// sprites with transparent margins: tiled, those are the gaps).
#[test]
fn a_tileable_img2img_fills_the_frame_without_a_seam() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let _ = crate::util::text_encoder_dir();
    let set = mirage::model_set::ModelSet::open(&root.join("models/emoji")).unwrap();
    let spec = set.manifest().image.clone();
    let input = mirage::image::Image::load(&root.join("models/emoji/tile-input.png")).unwrap();
    let x = mirage::image::to_model(&[input], &spec).unwrap();
    let (c, h, w) = (spec.channels as usize, spec.height as usize, spec.width as usize);
    let mut ring_alpha = Vec::new();
    for tileable in [false, true] {
        let p =
            mirage::pipeline::DiffusionParams { steps: 30, seed: 2, strength: 0.75, tileable, ..Default::default() };
        let y = mirage::pipeline::img2img(&set, &x, 1, &p, None, &mut Default::default()).unwrap();
        let (edge_x, inner_x) = seam(&y, c - 1, h, w); // colour channels only
                                                       // Transposed (each channel w x h), so that `seam` compares rows.
        let t: Vec<f32> = (0..c)
            .flat_map(|p| (0..w).flat_map(move |xx| (0..h).map(move |yy| (p, yy, xx))))
            .map(|(p, yy, xx)| y[(p * h + yy) * w + xx])
            .collect();
        let (edge_y, inner_y) = seam(&t, c - 1, w, h);
        let alpha = &y[(c - 1) * h * w..c * h * w];
        let ring: Vec<f32> = (0..h * w)
            .filter(|i| i / w == 0 || i / w == h - 1 || i % w == 0 || i % w == w - 1)
            .map(|i| (alpha[i] + 1.0) / 2.0)
            .collect();
        let ring = ring.iter().sum::<f32>() / ring.len() as f32;
        eprintln!(
            "tile: img2img tileable {tileable}: across the wrap {:.3} (columns) / {:.3} (rows), inside {:.3} / {:.3}; \
             mean alpha of the outer ring {ring:.2}",
            edge_x, edge_y, inner_x, inner_y
        );
        if tileable {
            assert!(
                edge_x < 2.0 * inner_x && edge_y < 2.0 * inner_y,
                "a seam: {edge_x} {edge_y} vs {inner_x} {inner_y}"
            );
        }
        ring_alpha.push(ring);
    }
    assert!(ring_alpha[1] > 0.9, "the tileable result fills the frame to its edge: ring alpha {}", ring_alpha[1]);
}
