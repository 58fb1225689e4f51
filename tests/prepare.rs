//! `mirage-train prepare emoji|fashion` on the real data: counts, the held-out emoji kept out of training
//! (skin tones included), captions well formed, the files it promises.
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
