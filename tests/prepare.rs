//! `mirage-train prepare emoji|emoji-v2|fashion` on the real data: counts, the held-out emoji kept out of
//! training (skin tones included, in every style for v2), styles matched by code point, captions with and
//! without style words, the files it promises.
#![cfg(feature = "train")]

use std::path::Path;
use std::process::Command;

use mirage::train::captions::{fashion_captions, fashion_prompt, EMOJI_HELD_OUT};

fn prepare(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mirage-train")).arg("prepare").args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "mirage-train prepare {args:?} failed:\n{text}");
    text
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn check_captions(line: &serde_json::Value) {
    let caps = line["captions"].as_array().unwrap_or_else(|| panic!("no captions: {line}"));
    assert!(!caps.is_empty(), "{line}");
    for c in caps {
        let c = c.as_str().unwrap();
        assert!(!c.trim().is_empty() && c == c.to_lowercase(), "caption {c:?} of {}", line["name"]);
    }
}

#[test]
fn prepare_emoji_keeps_the_held_out_set_out_of_training() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/emoji");
    if !src.join("emoji.json").is_file() {
        // `make test` sets it up; a bare `cargo test` on a fresh checkout may not have it yet.
        eprintln!("SKIPPED: {} missing (run scripts/setup.sh emoji)", src.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("emoji");
    let text = prepare(&["emoji", "--source", src.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    eprintln!("{text}");

    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
    let train = stats["train_images"].as_u64().unwrap();
    let held = stats["held_out_images"].as_u64().unwrap();
    assert!(train > 3000, "{stats}");
    // The pinned packages: 1 911 emoji + 1 875 skin-tone variants, every one with a 64 px Google image.
    assert_eq!(train + held, 3786, "{stats}");
    assert_eq!(stats["skipped"], 0, "{stats}");
    assert_eq!(stats["held_out_missing"].as_array().unwrap().len(), 0, "held-out names not in the data: {stats}");

    let rows = lines(&out.join("captions.jsonl"));
    assert_eq!(rows.len() as u64, train + held);
    let is_held_out = |name: &str| EMOJI_HELD_OUT.iter().any(|h| name == *h || name.starts_with(&format!("{h}_tone")));
    let mut names = std::collections::BTreeSet::new();
    for r in &rows {
        let name = r["name"].as_str().unwrap();
        assert!(names.insert(name.to_string()), "{name} twice");
        assert_eq!(r["held_out"].as_bool().unwrap(), is_held_out(name), "{r}");
        assert!(r["category"].is_string() && r["label"].is_u64(), "{r}");
        check_captions(r);
        let distinct: std::collections::BTreeSet<_> =
            r["captions"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        assert!(distinct.len() >= 3, "fewer than 3 distinct captions: {r}");
    }
    // Skin-tone variants are held out with their base ("wave" has five).
    assert!(names.contains("wave_tone3") && rows.iter().any(|r| r["name"] == "wave_tone3" && r["held_out"] == true));
    let thumbs = rows.iter().find(|r| r["name"] == "thumbsup_tone2").expect("thumbsup_tone2");
    assert!(thumbs["captions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c.as_str().unwrap().contains("medium-light skin tone")));

    let sheet = mirage::image::Image::load(&out.join("sheet.png")).unwrap();
    assert_eq!((sheet.width, sheet.height), (16 * 66 + 2, 16 * 66 + 2));
}

#[test]
fn prepare_fashion_writes_the_class_captions() {
    let data = Path::new(mirage::fashion::DEFAULT_DIR);
    assert!(
        data.join("train-images-idx3-ubyte.gz").is_file(),
        "Fashion-MNIST is missing from {}: run scripts/setup.sh data",
        data.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fashion");
    prepare(&["fashion", "--out", out.to_str().unwrap()]);
    let rows = lines(&out.join("captions.jsonl"));
    assert_eq!(rows.len(), 10);
    for (class, r) in rows.iter().enumerate() {
        assert_eq!(r["label"], class);
        assert_eq!(r["prompt"], fashion_prompt(class));
        assert_eq!(r["captions"], serde_json::json!(fashion_captions(class)));
        check_captions(r);
    }
    assert_eq!(rows[7]["prompt"], "a photo of a sneaker");
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["train_images"], 60000);
    assert_eq!(stats["test_images"], 10000);
    let sheet = mirage::image::Image::load(&out.join("sheet.png")).unwrap();
    assert_eq!((sheet.width, sheet.channels), (16 * 30 + 2, 1));
}

// ---- emoji v2: Noto, Twemoji, OpenMoji (and OpenMoji line art) at 64x64 ----

/// `.deps/emoji` when `scripts/setup.sh emoji` has made it with the v2 sources, else None (test skipped).
fn emoji_v2_dir() -> Option<std::path::PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/emoji");
    if src.join("openmoji/openmoji.json").is_file() && src.join("img/twitter/64").is_dir() {
        return Some(src);
    }
    eprintln!("SKIPPED: {} has no emoji v2 sources (run scripts/setup.sh emoji)", src.display());
    None
}

fn is_held_out_concept(concept: &str) -> bool {
    EMOJI_HELD_OUT.iter().any(|h| concept == *h || concept.starts_with(&format!("{h}_tone")))
}

fn mentions_a_style(caption: &str) -> bool {
    use mirage::train::emoji_styles::{mentions, EmojiStyle};
    EmojiStyle::ALL.iter().any(|s| s.words().iter().any(|w| mentions(caption, w)))
}

#[test]
fn prepare_emoji_v2_counts_every_style_and_holds_out_in_each() {
    let Some(src) = emoji_v2_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("emoji-v2");
    let text =
        prepare(&["emoji-v2", "--data", src.to_str().unwrap(), "--out", out.to_str().unwrap(), "--styles", "all"]);
    eprintln!("{text}");
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
    // The pinned packages: 3 786 concepts (1 911 emoji + 1 875 skin-tone variants), each in Noto, Twemoji
    // and OpenMoji colour; the line art leaves out the drawings it shares with other emoji (skin tones,
    // flags, coloured hearts and squares), so 1 554 concepts are in all four styles.
    assert_eq!(stats["concepts"], 3786, "{stats}");
    assert_eq!(stats["matched_in_all_styles"], 1554, "{stats}");
    for style in ["noto", "twemoji", "openmoji"] {
        let c = &stats["per_style"][style];
        assert_eq!((c["train"].as_u64(), c["held_out"].as_u64()), (Some(3758), Some(28)), "{style}: {c}");
        assert_eq!(c["missing"].as_array().unwrap().len(), 0, "{style}: {c}");
    }
    let line = &stats["per_style"]["line-art"];
    assert_eq!((line["train"].as_u64(), line["held_out"].as_u64()), (Some(1536), Some(18)), "{line}");
    assert_eq!(stats["train_images"], 3 * 3758 + 1536);
    assert_eq!(stats["held_out_images"], 3 * 28 + 18);
    // OpenMoji's 709 own extras (private-use emoji, more flags and skin-tone pairs) have no concept.
    assert_eq!(stats["openmoji_entries_without_concept"], 709, "{stats}");
    // OpenMoji is rasterised whole: only art that reaches OpenMoji's own canvas edge touches the image edge.
    assert!(stats["art_extent"]["openmoji"]["touching_the_edge"].as_u64().unwrap() < 60, "{stats}");

    let rows = lines(&out.join("captions.jsonl"));
    assert_eq!(rows.len() as u64, stats["images"].as_u64().unwrap());
    let mut names = std::collections::BTreeSet::new();
    let mut per_style_train: std::collections::BTreeMap<String, usize> = Default::default();
    let (mut with_style, mut without_style) = (0usize, 0usize);
    for r in &rows {
        let (name, style, concept) =
            (r["name"].as_str().unwrap(), r["style"].as_str().unwrap(), r["concept"].as_str().unwrap());
        assert!(names.insert(name.to_string()), "{name} twice");
        assert_eq!(name, format!("{style}.{concept}"));
        // Held out in every style, skin tones with their base.
        assert_eq!(r["held_out"].as_bool().unwrap(), is_held_out_concept(concept), "{r}");
        if r["held_out"] == false {
            *per_style_train.entry(style.to_string()).or_default() += 1;
        }
        check_captions(r);
        let caps: Vec<&str> = r["captions"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        // Captions without style words (a prompt without a style fits every style), and the style's own.
        let (styled, plain): (Vec<&str>, Vec<&str>) = caps.iter().partition(|c| mentions_a_style(c));
        // ("flat shoe" names its concept with a style word: its captions all have it.)
        assert!(plain.len() >= 3 || mentions_a_style(caps[0]), "{r}");
        assert!(styled.len() >= 3, "{r}");
        let own = mirage::train::emoji_styles::split_styled_name(name).unwrap().0;
        assert!(
            caps[caps.len() - 3..]
                .iter()
                .all(|c| own.words().iter().any(|w| mirage::train::emoji_styles::mentions(c, w))),
            "{r}"
        );
        with_style += styled.len();
        without_style += plain.len();
    }
    assert_eq!(per_style_train["noto"], 3758);
    assert_eq!(stats["captions_with_style_words"], with_style);
    assert_eq!(stats["captions_without_style_words"], without_style);
    for held in EMOJI_HELD_OUT {
        for style in ["noto", "twemoji", "openmoji"] {
            let r = rows
                .iter()
                .find(|r| r["name"] == format!("{style}.{held}"))
                .unwrap_or_else(|| panic!("{style}.{held}"));
            assert_eq!(r["held_out"], true);
        }
    }
    let apple = rows.iter().find(|r| r["name"] == "twemoji.apple").expect("twemoji.apple");
    let caps = apple["captions"].as_array().unwrap();
    assert_eq!(caps[0], "red apple");
    assert!(
        caps.iter().any(|c| c == "a flat emoji of red apple") && caps.iter().any(|c| c == "an emoji of red apple"),
        "{apple}"
    );

    let sheet = mirage::image::Image::load(&out.join("sheet.png")).unwrap();
    // 64 emoji, 4 to a row, each a strip of 4 styles.
    let strip = 4 * 65 + 1;
    assert_eq!((sheet.width, sheet.height), (4 * (strip + 8) + 8, 16 * (65 + 1 + 8) + 8));
}

#[test]
fn emoji_v2_matches_the_styles_by_code_point() {
    use mirage::train::captions::load_emoji_png;
    use mirage::train::emoji_styles::{load_emoji_styles, rasterise_openmoji_file, DEFAULT_STYLES};
    let Some(src) = emoji_v2_dir() else { return };
    let d = load_emoji_styles(&src, DEFAULT_STYLES).unwrap();
    let find =
        |name: &str| d.train.names.iter().position(|n| n == name).unwrap_or_else(|| panic!("{name} not trained on"));
    // (concept, emoji-datasource image, OpenMoji file): plain, skin tone, and FE0F written by emoji-datasource
    // only ("263A-FE0F" against OpenMoji's "263A"), a keycap and a ZWJ flag that both write with FE0F.
    for (concept, png, svg) in [
        ("apple", "1f34e.png", "1F34E.svg"),
        ("grinning", "1f600.png", "1F600.svg"),
        ("thumbsup_tone2", "1f44d-1f3fc.png", "1F44D-1F3FC.svg"),
        ("relaxed", "263a-fe0f.png", "263A.svg"),
        ("heart", "2764-fe0f.png", "2764.svg"),
        ("hash", "0023-fe0f-20e3.png", "0023-FE0F-20E3.svg"),
        ("rainbow-flag", "1f3f3-fe0f-200d-1f308.png", "1F3F3-FE0F-200D-1F308.svg"),
    ] {
        let noto = d.train.pixels_of(find(&format!("noto.{concept}")));
        assert_eq!(noto, load_emoji_png(&src.join("img/google/64").join(png)).unwrap().as_slice(), "{concept}");
        let tw = d.train.pixels_of(find(&format!("twemoji.{concept}")));
        assert_eq!(tw, load_emoji_png(&src.join("img/twitter/64").join(png)).unwrap().as_slice(), "{concept}");
        let om = d.train.pixels_of(find(&format!("openmoji.{concept}")));
        assert_eq!(om, rasterise_openmoji_file(&src.join("openmoji/color").join(svg)).unwrap().as_slice(), "{concept}");
        // The three styles share the concept's style-free captions, in the same order.
        let caps = |s: &str| d.train.captions[find(&format!("{s}.{concept}"))].clone();
        let n = caps("noto").len() - 3;
        assert_eq!(caps("noto")[..n], caps("openmoji")[..n], "{concept}");
        assert_eq!(caps("twemoji")[..n], caps("openmoji")[..n], "{concept}");
    }
    assert!(d.train.captions[find("openmoji.thumbsup_tone2")].iter().any(|c| c.contains("medium-light skin tone")));
    // Held-out concepts (and their skin tones) appear in no style's training split, and in each held-out one.
    for n in &d.train.names {
        let (_, concept) = mirage::train::emoji_styles::split_styled_name(n).unwrap();
        assert!(!is_held_out_concept(concept), "{n} in training");
    }
    assert!(d.held_out.names.iter().any(|n| n == "openmoji.wave_tone3"));
    assert_eq!(d.held_out.len(), 3 * 28);

    // A rasterised OpenMoji: 64x64 RGBA, transparent corners (colour 0), opaque centre, straight alpha.
    let apple = d.train.pixels_of(find("openmoji.apple"));
    let at = |x: usize, y: usize| &apple[(y * 64 + x) * 4..][..4];
    for (x, y) in [(0, 0), (63, 0), (0, 63), (63, 63)] {
        assert_eq!(at(x, y), [0, 0, 0, 0], "corner ({x}, {y})");
    }
    assert_eq!(at(32, 38)[3], 255, "centre");
    assert!(apple.chunks_exact(4).all(|p| p[3] > 0 || p[..3] == [0, 0, 0]));

    // 64x64 in model space, exactly (pixel / 255 - 0.5) / 0.5, channel-planar.
    let data = mirage::train::data::emoji_dataset(&d.train, 64, Some(3)).unwrap();
    assert_eq!(data.data.images.size(), [3, 4, 64, 64]);
    let v = Vec::<f32>::try_from(&data.data.images.reshape([-1])).unwrap();
    for i in 0..3 {
        for (k, p) in d.train.pixels_of(i).chunks_exact(4).enumerate() {
            for ch in 0..4 {
                assert_eq!(v[(i * 4 + ch) * 4096 + k], (p[ch] as f32 / 255.0 - 0.5) / 0.5);
            }
        }
    }
    assert_eq!(data.names, d.train.names[..3]);
}

#[test]
fn prepare_emoji_v2_is_deterministic() {
    let Some(src) = emoji_v2_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run = |dir: &str| {
        let out = tmp.path().join(dir);
        prepare(&[
            "emoji-v2",
            "--data",
            src.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--styles",
            "openmoji,noto",
        ]);
        out
    };
    let (a, b) = (run("a"), run("b"));
    for f in ["captions.jsonl", "sheet.png"] {
        assert!(std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(), "{f} differs between runs");
    }
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["styles"], serde_json::json!(["noto", "openmoji"]));
}

#[test]
fn emoji_data_versions_parse() {
    use mirage::train::data::EmojiVersion;
    use mirage::train::emoji_styles::EmojiStyle;
    assert_eq!(EmojiVersion::default(), EmojiVersion::V1);
    assert_eq!(EmojiVersion::from_args("v1", None).unwrap(), EmojiVersion::V1);
    assert_eq!(
        EmojiVersion::from_args("v2", None).unwrap(),
        EmojiVersion::V2(vec![EmojiStyle::Noto, EmojiStyle::Twemoji, EmojiStyle::OpenMoji])
    );
    assert_eq!(
        EmojiVersion::from_args("2", Some("openmoji,line-art")).unwrap(),
        EmojiVersion::V2(vec![EmojiStyle::OpenMoji, EmojiStyle::LineArt])
    );
    assert!(EmojiVersion::from_args("v1", Some("noto")).is_err());
    assert!(EmojiVersion::from_args("v3", None).is_err());
}
