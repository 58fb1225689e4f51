//! Emoji v2: the same emoji in several open art styles, 64x64 RGBA, with captions that name the style.
//!
//! | style | id | source (`scripts/setup.sh emoji` into `.deps/emoji/`) | licence of the art |
//! |---|---|---|---|
//! | Noto | `noto` | npm `emoji-datasource-google@16.0.0`, `img/google/64/*.png` | Apache-2.0 |
//! | Twemoji | `twemoji` | npm `emoji-datasource-twitter@16.0.0`, `img/twitter/64/*.png` | CC-BY 4.0 |
//! | OpenMoji | `openmoji` | npm `openmoji@17.0.0`, `color/svg/*.svg`, rasterised here | CC-BY-SA 4.0 |
//! | OpenMoji line art | `line-art` | npm `openmoji@17.0.0`, `black/svg/*.svg`, rasterised here | CC-BY-SA 4.0 |
//!
//! The concepts are emoji-datasource's (`emoji.json`: every emoji and skin-tone variant, the v1 set's
//! [`captions::emoji_catalogue`]); OpenMoji's art is joined to them on the code points
//! ([`captions::join_key`]: OpenMoji's `hexcode` against emoji-datasource's `unified`, both without the
//! variation selector FE0F; a skin-tone variant carries its modifiers in both, so variants match one to one).
//! OpenMoji's own extras (its private-use emoji, extra flags) have no emoji-datasource entry and stay out.
//!
//! Image names are `<style>.<name>` (`twemoji.thumbsup_tone2`): unique across styles, and the skin-tone
//! grouping of the trainer's balanced draws (split at `_tone`) still groups a style's variants together.
//! [`EMOJI_HELD_OUT`] concepts, skin tones included, are held out in every style.
//!
//! Each image's captions are its v1 captions, without style words (so that a prompt without a style fits
//! every style), then [`STYLE_CAPTIONS_PER_IMAGE`] that name the style ([`style_captions`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use serde_json::json;

use super::captions::{self, CaptionedSet, EMOJI_HELD_OUT, EMOJI_SIZE};
use crate::error::{Error, Result};
use crate::image::Image;

/// One art style of the emoji v2 data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EmojiStyle {
    /// Google's Noto Color Emoji: glossy, shaded, 3D-looking.
    Noto,
    /// Twitter's Twemoji: flat colour, no outlines.
    Twemoji,
    /// OpenMoji in colour: flat colour inside black outlines.
    OpenMoji,
    /// OpenMoji's black set: the same outlines without fills, black line art on transparency.
    LineArt,
}

/// The styles the v2 data uses when none are named: the three colour styles. The line art is there on
/// request (`--styles noto,twemoji,openmoji,line-art`): it renders well, but without colour its skin-tone
/// variants are the base's drawing and its country flags one empty frame (those are left out of it, see
/// [`ambiguous_line_art`]), it doubles OpenMoji's share of the data, and it is a different task (a drawing
/// without colour), so a model set opts in to it.
pub const DEFAULT_STYLES: &[EmojiStyle] = &[EmojiStyle::Noto, EmojiStyle::Twemoji, EmojiStyle::OpenMoji];

/// How many captions per image name its style (after its style-free ones).
pub const STYLE_CAPTIONS_PER_IMAGE: usize = 3;

impl EmojiStyle {
    /// Every style, in the order the data lists them.
    pub const ALL: [EmojiStyle; 4] = [EmojiStyle::Noto, EmojiStyle::Twemoji, EmojiStyle::OpenMoji, EmojiStyle::LineArt];

    /// The id in names, options and stats: `noto`, `twemoji`, `openmoji`, `line-art`.
    pub fn id(self) -> &'static str {
        match self {
            EmojiStyle::Noto => "noto",
            EmojiStyle::Twemoji => "twemoji",
            EmojiStyle::OpenMoji => "openmoji",
            EmojiStyle::LineArt => "line-art",
        }
    }

    /// The words that name the style in captions; no two styles share one, so that each selects its style.
    pub fn words(self) -> &'static [&'static str] {
        match self {
            EmojiStyle::Noto => &["noto", "glossy", "3d"],
            EmojiStyle::Twemoji => &["twemoji", "flat"],
            EmojiStyle::OpenMoji => &["openmoji", "outlined"],
            EmojiStyle::LineArt => &["line art", "black and white"],
        }
    }

    /// The image of an emoji in this style, relative to the data directory: the PNG or SVG file.
    fn file(self, v: &captions::Variant, openmoji_hex: Option<&str>) -> Option<PathBuf> {
        match self {
            EmojiStyle::Noto => v.has_google.then(|| Path::new("img/google/64").join(&v.image)),
            EmojiStyle::Twemoji => v.has_twitter.then(|| Path::new("img/twitter/64").join(&v.image)),
            EmojiStyle::OpenMoji => openmoji_hex.map(|h| Path::new("openmoji/color").join(format!("{h}.svg"))),
            EmojiStyle::LineArt => openmoji_hex.map(|h| Path::new("openmoji/black").join(format!("{h}.svg"))),
        }
    }
}

impl std::fmt::Display for EmojiStyle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for EmojiStyle {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        EmojiStyle::ALL
            .into_iter()
            .find(|st| st.id() == s.trim())
            .ok_or_else(|| Error::invalid(format!("unknown emoji style {s:?} (noto, twemoji, openmoji, line-art)")))
    }
}

/// Parses a comma-separated style list (`noto,twemoji,openmoji`; `all` for every style) into styles in
/// [`EmojiStyle::ALL`] order, each once, so that the data does not depend on how the list was written.
pub fn parse_styles(list: &str) -> Result<Vec<EmojiStyle>> {
    if list.trim() == "all" {
        return Ok(EmojiStyle::ALL.to_vec());
    }
    let mut styles = list.split(',').filter(|s| !s.trim().is_empty()).map(str::parse).collect::<Result<Vec<_>>>()?;
    if styles.is_empty() {
        return Err(Error::invalid("no emoji style named (noto, twemoji, openmoji, line-art)"));
    }
    styles.sort();
    styles.dedup();
    Ok(styles)
}

/// `<style>.<name>`, the name of one emoji image in the v2 data.
pub fn styled_name(style: EmojiStyle, name: &str) -> String {
    format!("{}.{name}", style.id())
}

/// The style and the emoji of a v2 image name (`twemoji.thumbsup_tone2` -> (Twemoji, `thumbsup_tone2`)).
pub fn split_styled_name(name: &str) -> Option<(EmojiStyle, &str)> {
    let (style, rest) = name.split_once('.')?;
    Some((style.parse().ok()?, rest))
}

/// The captions of one image that name its style: the label with the style, and the noun phrase as
/// "<style adjective> emoji" and as "<style name> emoji". `label` is the CLDR label ("thumbs up: medium-light
/// skin tone"), `phrase` the same as a noun phrase ("thumbs up with medium-light skin tone").
pub fn style_captions(style: EmojiStyle, label: &str, phrase: &str) -> Vec<String> {
    let c = match style {
        EmojiStyle::Noto => [
            format!("{label}, noto style"),
            format!("a glossy 3d emoji of {phrase}"),
            format!("a noto emoji of {phrase}"),
        ],
        EmojiStyle::Twemoji => {
            [format!("{label}, twemoji style"), format!("a flat emoji of {phrase}"), format!("a twemoji of {phrase}")]
        }
        EmojiStyle::OpenMoji => [
            format!("{label}, openmoji style"),
            format!("an outlined emoji of {phrase}"),
            format!("an openmoji of {phrase}"),
        ],
        EmojiStyle::LineArt => [
            format!("{label}, line art style"),
            format!("a black and white line drawing of {phrase}"),
            format!("a line art emoji of {phrase}"),
        ],
    };
    c.iter().map(|s| captions::clean(s)).collect()
}

/// What [`load_emoji_styles`] found, per style.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StyleCount {
    /// Training images of the style.
    pub train: usize,
    /// Held-out images of the style.
    pub held_out: usize,
    /// Concepts (emoji-datasource entries and skin-tone variants) without an image in the style: `"<name>: <why>"`.
    pub missing: Vec<String>,
}

/// The emoji v2 data: training and held-out sets of 64x64 RGBA images in the chosen styles.
#[derive(Debug, Clone)]
pub struct StyledEmojiData {
    /// The styles loaded, in [`EmojiStyle::ALL`] order.
    pub styles: Vec<EmojiStyle>,
    /// Every image not held out, ordered by concept name then style (the styles of one emoji side by side,
    /// so that the first N images cover few concepts in every style); names `<style>.<name>`.
    pub train: CaptionedSet,
    /// The [`EMOJI_HELD_OUT`] concepts (skin tones included) in every style, in the same order.
    pub held_out: CaptionedSet,
    /// Per style id: images and missing concepts.
    pub per_style: BTreeMap<&'static str, StyleCount>,
    /// Concepts in emoji-datasource's emoji.json, skin-tone variants included.
    pub concepts: usize,
    /// Concepts with an image in every loaded style.
    pub matched_in_all: usize,
    /// OpenMoji entries without an emoji-datasource concept (OpenMoji's extras), when an OpenMoji style is loaded.
    pub openmoji_unmatched: usize,
    /// Concepts whose labels and tags came from emoji.json alone (not in emojibase's en/data.json).
    pub without_emojibase: usize,
}

// The part of OpenMoji's data/openmoji.json that we read.
#[derive(Deserialize)]
struct OpenMojiEntry {
    hexcode: String,
}

/// One image to load.
struct Job {
    style: EmojiStyle,
    path: PathBuf,
    concept: usize,
}

/// Loads the emoji of `dir` (`.deps/emoji` after `scripts/setup.sh emoji`) in `styles`: PNGs as they are,
/// OpenMoji SVGs rasterised by [`rasterise_openmoji`]; all 64x64 straight RGBA, the colour of fully
/// transparent pixels 0. Deterministic: the same files give the same bytes in the same order.
///
/// Errors: no style, missing or malformed JSON, an unreadable image or SVG, a PNG not 64x64.
pub fn load_emoji_styles(dir: &Path, styles: &[EmojiStyle]) -> Result<StyledEmojiData> {
    let mut styles = styles.to_vec();
    styles.sort();
    styles.dedup();
    if styles.is_empty() {
        return Err(Error::invalid("emoji v2: no style selected"));
    }
    let cat = captions::emoji_catalogue(dir)?;
    let uses_openmoji = styles.iter().any(|s| matches!(s, EmojiStyle::OpenMoji | EmojiStyle::LineArt));
    // join key -> OpenMoji's hexcode as its file names spell it ("0023-FE0F-20E3").
    let mut openmoji: HashMap<String, String> = HashMap::new();
    if uses_openmoji {
        let om: Vec<OpenMojiEntry> =
            captions::read_json_file(&dir.join("openmoji/openmoji.json"), "run scripts/setup.sh emoji")?;
        for e in om {
            openmoji.insert(captions::join_key(&e.hexcode), e.hexcode);
        }
    }
    let mut order: Vec<usize> = (0..cat.variants.len()).collect();
    order.sort_by(|&a, &b| cat.variants[a].name.cmp(&cat.variants[b].name));
    if let Some(w) = order.windows(2).find(|w| cat.variants[w[0]].name == cat.variants[w[1]].name) {
        return Err(Error::invalid(format!("emoji.json: two images named {:?}", cat.variants[w[0]].name)));
    }
    let ambiguous_line_art =
        if styles.contains(&EmojiStyle::LineArt) { ambiguous_line_art(dir, &cat, &openmoji)? } else { Vec::new() };
    let mut per_style: BTreeMap<&'static str, StyleCount> =
        styles.iter().map(|s| (s.id(), StyleCount::default())).collect();
    let mut jobs = Vec::new();
    let mut matched_in_all = 0;
    for &k in &order {
        let v = &cat.variants[k];
        let key = captions::join_key(&v.unified);
        let mut all = true;
        for &style in &styles {
            let count = per_style.get_mut(style.id()).expect("every style has a count");
            match style.file(v, openmoji.get(&key).map(String::as_str)) {
                Some(_) if style == EmojiStyle::LineArt && ambiguous_line_art[k] => {
                    count.missing.push(format!("{}: line art drawn the same as other emoji's", v.name));
                    all = false;
                }
                Some(rel) if dir.join(&rel).is_file() => jobs.push(Job { style, path: dir.join(rel), concept: k }),
                Some(rel) => {
                    count.missing.push(format!("{}: {} missing", v.name, rel.display()));
                    all = false;
                }
                None => {
                    count.missing.push(format!("{}: no {} image ({})", v.name, style.id(), v.unified));
                    all = false;
                }
            }
        }
        matched_in_all += all as usize;
    }
    let dataset_keys: std::collections::HashSet<String> =
        cat.variants.iter().map(|v| captions::join_key(&v.unified)).collect();
    let openmoji_unmatched = openmoji.keys().filter(|k| !dataset_keys.contains(*k)).count();

    let pixels = captions::decode_parallel(&jobs, |j| match j.style {
        EmojiStyle::Noto | EmojiStyle::Twemoji => captions::load_emoji_png(&j.path),
        EmojiStyle::OpenMoji | EmojiStyle::LineArt => rasterise_openmoji_file(&j.path),
    })?;
    let categories: Vec<String> = cat
        .variants
        .iter()
        .map(|v| v.category.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let empty = CaptionedSet::empty_emoji(categories.clone());
    let (mut train, mut held_out) = (empty.clone(), empty);
    for (j, px) in jobs.iter().zip(pixels.chunks_exact((EMOJI_SIZE * EMOJI_SIZE * 4) as usize)) {
        let v = &cat.variants[j.concept];
        let label = categories.binary_search(&v.category).unwrap_or(0) as u32;
        let mut caps = v.captions.clone();
        for c in style_captions(j.style, &v.label, &v.phrase) {
            captions::add(&mut caps, &c);
        }
        let count = per_style.get_mut(j.style.id()).expect("every style has a count");
        let set = if EMOJI_HELD_OUT.contains(&v.base.as_str()) {
            count.held_out += 1;
            &mut held_out
        } else {
            count.train += 1;
            &mut train
        };
        set.push(styled_name(j.style, &v.name), caps, label, px);
    }
    Ok(StyledEmojiData {
        styles,
        train,
        held_out,
        per_style,
        concepts: cat.variants.len(),
        matched_in_all,
        openmoji_unmatched,
        without_emojibase: cat.without_emojibase,
    })
}

/// Per concept of `cat`: whether its OpenMoji line art is no picture of it alone. Without colour, a skin-tone
/// variant is drawn exactly as its base (OpenMoji's black set has one file content for the six), and the
/// country flags are all the same empty frame: identical images with different captions would teach
/// nothing but noise. Of a group of identical line-art files, the one concept without a skin tone keeps it
/// (the base emoji); when the group has several such concepts (the flags), none does.
fn ambiguous_line_art(dir: &Path, cat: &captions::Catalogue, openmoji: &HashMap<String, String>) -> Result<Vec<bool>> {
    let mut groups: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for (k, v) in cat.variants.iter().enumerate() {
        if let Some(rel) =
            EmojiStyle::LineArt.file(v, openmoji.get(&captions::join_key(&v.unified)).map(String::as_str))
        {
            let path = dir.join(rel);
            if path.is_file() {
                groups.entry(std::fs::read(&path).map_err(|e| Error::io(&path, e))?).or_default().push(k);
            }
        }
    }
    let mut ambiguous = vec![false; cat.variants.len()];
    for members in groups.values().filter(|m| m.len() > 1) {
        let bases: Vec<usize> =
            members.iter().copied().filter(|&k| cat.variants[k].name == cat.variants[k].base).collect();
        for &k in members {
            ambiguous[k] = !(bases.len() == 1 && bases[0] == k);
        }
    }
    Ok(ambiguous)
}

/// The square of OpenMoji's 72x72 canvas that becomes the 64x64 image (x, y, width, height in canvas
/// units): all of it. Measured on the pinned package (`mirage-train prepare emoji-v2`, stats.json
/// `art_extent`): the art's median box is canvas 11..62, but 5 % of the images come within 2 units of the
/// canvas edge, and cutting the canvas to its centre 64 units (one pixel per unit) cropped 1 052 of 3 758.
/// So OpenMoji art is a little smaller in the image (median 45 px wide) than Noto's (60 px) and Twemoji's
/// (edge to edge), but whole: 40 images touch the edge, where OpenMoji's own art touches its canvas edge.
pub const OPENMOJI_CROP: [f32; 4] = [0.0, 0.0, 72.0, 72.0];

/// Reads and rasterises one OpenMoji SVG ([`rasterise_openmoji`]), naming the file in errors.
pub fn rasterise_openmoji_file(path: &Path) -> Result<Vec<u8>> {
    let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    rasterise_openmoji(&data).map_err(|e| Error::Image(format!("{}: {e}", path.display())))
}

/// Rasterises an OpenMoji SVG (a 72x72 canvas) with resvg: the canvas square [`OPENMOJI_CROP`] (x, y,
/// width, height in canvas units, scaled from the SVG's own size when that is not 72) to 64x64 straight
/// RGBA, anti-aliased, on transparency; the colour of fully transparent pixels is 0.
pub fn rasterise_openmoji(svg: &[u8]) -> Result<Vec<u8>> {
    use resvg::{tiny_skia, usvg};
    let tree = usvg::Tree::from_data(svg, &usvg::Options::default()).map_err(|e| Error::Image(format!("SVG: {e}")))?;
    let unit = tree.size().width() / 72.0; // SVG units per OpenMoji canvas unit (1 for the pinned package)
    let [x, y, w, _] = OPENMOJI_CROP;
    let scale = EMOJI_SIZE as f32 / (w * unit);
    let mut pixmap = tiny_skia::Pixmap::new(EMOJI_SIZE, EMOJI_SIZE).ok_or_else(|| Error::Image("pixmap".into()))?;
    let t = tiny_skia::Transform::from_row(scale, 0.0, 0.0, scale, -x * unit * scale, -y * unit * scale);
    resvg::render(&tree, t, &mut pixmap.as_mut());
    // tiny-skia keeps premultiplied colour; the data set is straight alpha.
    let mut out = Vec::with_capacity((EMOJI_SIZE * EMOJI_SIZE * 4) as usize);
    for p in pixmap.pixels() {
        let c = p.demultiply();
        if c.alpha() == 0 {
            out.extend([0, 0, 0, 0]);
        } else {
            out.extend([c.red(), c.green(), c.blue(), c.alpha()]);
        }
    }
    Ok(out)
}

/// The alpha bounding box of a 64x64 RGBA image as [x0, y0, x1, y1] (x1, y1 exclusive); None when empty.
fn alpha_box(px: &[u8]) -> Option<[u32; 4]> {
    let s = EMOJI_SIZE;
    let mut b = [s, s, 0, 0];
    for (k, p) in px.chunks_exact(4).enumerate() {
        if p[3] > 0 {
            let (x, y) = (k as u32 % s, k as u32 / s);
            b = [b[0].min(x), b[1].min(y), b[2].max(x + 1), b[3].max(y + 1)];
        }
    }
    (b[2] > 0).then_some(b)
}

/// Names of the emoji the v2 contact sheet shows first (then an even spread of the rest): fruit, faces,
/// a skin-tone variant, a ZWJ sequence, a keycap, a flag, a symbol, the things the tests check.
const SHEET_FIRST: &[&str] = &[
    "apple",
    "grinning",
    "thumbsup_tone2",
    "heart",
    "smile",
    "cat2",
    "woman-heart-man",
    "hash",
    "flag-fr",
    "rainbow",
    "airplane",
    "fire",
];

/// The contact sheet of the v2 data: for each of `concepts` emoji, its styles side by side (a strip in
/// [`EmojiStyle::ALL`] order, checkerboard behind transparency), strips four to a row.
pub fn styles_sheet(set: &CaptionedSet, styles: &[EmojiStyle], concepts: usize) -> Result<Image> {
    // concept name -> image index per style.
    let mut by_concept: BTreeMap<&str, BTreeMap<EmojiStyle, usize>> = BTreeMap::new();
    for (i, n) in set.names.iter().enumerate() {
        if let Some((style, name)) = split_styled_name(n) {
            by_concept.entry(name).or_default().insert(style, i);
        }
    }
    let complete: Vec<&str> =
        by_concept.iter().filter(|(_, m)| styles.iter().all(|s| m.contains_key(s))).map(|(n, _)| *n).collect();
    let mut chosen: Vec<&str> = SHEET_FIRST.iter().copied().filter(|n| complete.contains(n)).collect();
    let rest: Vec<&str> = complete.iter().copied().filter(|n| !chosen.contains(n)).collect();
    let more = concepts.saturating_sub(chosen.len()).min(rest.len());
    chosen.extend((0..more).map(|k| rest[k * rest.len() / more]));
    let mut strips = Vec::with_capacity(chosen.len());
    for name in chosen {
        let row = styles
            .iter()
            .map(|s| captions::over_checkerboard(&set.image(by_concept[name][s])?))
            .collect::<Result<Vec<_>>>()?;
        strips.push(crate::image::grid(&row, styles.len(), 1, 255)?);
    }
    if strips.is_empty() {
        return Err(Error::invalid("no emoji in every style for a contact sheet"));
    }
    crate::image::grid(&strips, 4, 8, 255)
}

/// `mirage-train prepare emoji-v2`: loads `src` (`.deps/emoji`) in `styles` and writes into `out`
/// `captions.jsonl` (one line per image: name, style, concept, captions, held_out; training then held out),
/// `sheet.png` ([`styles_sheet`] of 64 emoji) and `stats.json`, which it also returns.
pub fn prepare_emoji_v2(src: &Path, out: &Path, styles: &[EmojiStyle]) -> Result<serde_json::Value> {
    let t0 = std::time::Instant::now();
    let d = load_emoji_styles(src, styles)?;
    let load_s = t0.elapsed().as_secs_f64();
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let path = out.join("captions.jsonl");
    let mut buf = Vec::new();
    let mut captions_total = 0;
    let mut captions_styled = 0;
    for (set, held) in [(&d.train, false), (&d.held_out, true)] {
        for i in 0..set.len() {
            let (style, concept) = split_styled_name(&set.names[i]).expect("v2 names are styled");
            let line = json!({
                "name": set.names[i],
                "style": style.id(),
                "concept": concept,
                "label": set.labels[i],
                "category": set.categories.get(set.labels[i] as usize),
                "captions": set.captions[i],
                "held_out": held,
            });
            use std::io::Write;
            writeln!(buf, "{line}").map_err(|e| Error::io(&path, e))?;
            captions_total += set.captions[i].len();
            captions_styled += set.captions[i]
                .iter()
                .filter(|c| EmojiStyle::ALL.iter().any(|s| s.words().iter().any(|w| mentions(c, w))))
                .count();
        }
    }
    super::write_atomic(&path, &buf)?;
    styles_sheet(&d.train, &d.styles, 64)?.save(&out.join("sheet.png"))?;
    // The art's extent per style: the median alpha box, the smallest margins (art to image edge, over the
    // four sides) at a few quantiles, and the images whose art reaches the edge (cropped, or edge to edge).
    let mut extent = serde_json::Map::new();
    for &style in &d.styles {
        let mut boxes: Vec<(usize, [u32; 4])> = (0..d.train.len())
            .filter(|&i| split_styled_name(&d.train.names[i]).map(|(s, _)| s) == Some(style))
            .filter_map(|i| alpha_box(d.train.pixels_of(i)).map(|b| (i, b)))
            .collect();
        let margin = |b: &[u32; 4]| b[0].min(b[1]).min(EMOJI_SIZE - b[2]).min(EMOJI_SIZE - b[3]);
        let at_edge: Vec<&str> =
            boxes.iter().filter(|(_, b)| margin(b) == 0).map(|(i, _)| d.train.names[*i].as_str()).collect();
        let mut margins: Vec<u32> = boxes.iter().map(|(_, b)| margin(b)).collect();
        margins.sort();
        let q = |p: f64| margins.get(((margins.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0);
        let mut median = |k: usize| {
            boxes.sort_by_key(|(_, b)| b[k]);
            boxes.get(boxes.len() / 2).map_or(0, |(_, b)| b[k])
        };
        let m = [median(0), median(1), median(2), median(3)];
        extent.insert(
            style.id().into(),
            json!({
                "median_alpha_box": m,
                "margin_quantiles_1_5_50_percent": [q(0.01), q(0.05), q(0.5)],
                "touching_the_edge": at_edge.len(),
                "touching_the_edge_first": &at_edge[..at_edge.len().min(20)],
            }),
        );
    }
    let stats = json!({
        "source": src,
        "version": 2,
        "size": EMOJI_SIZE,
        "styles": d.styles.iter().map(|s| s.id()).collect::<Vec<_>>(),
        "style_words": d.styles.iter().map(|s| (s.id(), s.words())).collect::<BTreeMap<_, _>>(),
        "concepts": d.concepts,
        "matched_in_all_styles": d.matched_in_all,
        "images": d.train.len() + d.held_out.len(),
        "train_images": d.train.len(),
        "held_out_images": d.held_out.len(),
        "per_style": d.per_style,
        "openmoji_entries_without_concept": d.openmoji_unmatched,
        "held_out_names": EMOJI_HELD_OUT,
        "captions": captions_total,
        "captions_with_style_words": captions_styled,
        "captions_without_style_words": captions_total - captions_styled,
        "art_extent": extent,
        "openmoji_crop": OPENMOJI_CROP,
        "without_emojibase": d.without_emojibase,
        "load_seconds": load_s,
    });
    super::write_json(&out.join("stats.json"), &stats)?;
    Ok(stats)
}

/// Whether caption `c` contains the style word(s) `w` as whole words.
pub fn mentions(c: &str, w: &str) -> bool {
    let words: Vec<&str> = c.split(|ch: char| !ch.is_alphanumeric()).filter(|s| !s.is_empty()).collect();
    let want: Vec<&str> = w.split(' ').collect();
    words.windows(want.len()).any(|win| win == want.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styles_parse_in_one_order() {
        assert_eq!(parse_styles("openmoji,noto").unwrap(), [EmojiStyle::Noto, EmojiStyle::OpenMoji]);
        assert_eq!(parse_styles(" twemoji , twemoji").unwrap(), [EmojiStyle::Twemoji]);
        assert_eq!(parse_styles("all").unwrap(), EmojiStyle::ALL);
        assert!(parse_styles("apple").unwrap_err().to_string().contains("apple"));
        assert!(parse_styles("").is_err());
    }

    #[test]
    fn styled_names_round_trip() {
        let n = styled_name(EmojiStyle::LineArt, "thumbsup_tone2");
        assert_eq!(n, "line-art.thumbsup_tone2");
        assert_eq!(split_styled_name(&n), Some((EmojiStyle::LineArt, "thumbsup_tone2")));
        assert_eq!(split_styled_name("thumbsup"), None);
    }

    #[test]
    fn style_words_are_exclusive() {
        for a in EmojiStyle::ALL {
            let caps = style_captions(a, "red apple", "red apple");
            assert_eq!(caps.len(), STYLE_CAPTIONS_PER_IMAGE);
            for c in &caps {
                for b in EmojiStyle::ALL {
                    let named = b.words().iter().any(|w| mentions(c, w));
                    assert_eq!(named, a == b, "{c:?} and style {b}");
                }
            }
        }
        assert!(mentions("a glossy 3d emoji of x", "3d") && !mentions("a 3dx", "3d"));
    }

    #[test]
    fn an_svg_is_rasterised_centred_with_transparent_corners() {
        // A red disc of radius 20 at the canvas centre (36, 36).
        let svg = br##"<svg viewBox="0 0 72 72" xmlns="http://www.w3.org/2000/svg"><circle cx="36" cy="36" r="20" fill="#ff0000"/></svg>"##;
        let px = rasterise_openmoji(svg).unwrap();
        assert_eq!(px.len(), 64 * 64 * 4);
        let at = |x: usize, y: usize| &px[(y * 64 + x) * 4..][..4];
        assert_eq!(at(0, 0), [0, 0, 0, 0]);
        assert_eq!(at(32, 32), [255, 0, 0, 255]);
        // The whole 72-unit canvas is the image: canvas 16..56 -> pixels 14.2..49.8.
        assert_eq!(alpha_box(&px), Some([14, 14, 50, 50]));
        // Anti-aliased edge pixels keep straight colour.
        assert!(px.chunks_exact(4).all(|p| p[3] == 0 && p[..3] == [0, 0, 0] || p[0] == 255));
        assert!(rasterise_openmoji(b"<svg").is_err());
    }
}
