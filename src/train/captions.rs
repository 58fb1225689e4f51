//! Captioned image sets for text-to-image training, in plain Rust (no torch): the Noto emoji with captions
//! built from their names, labels, keyword tags and categories, and Fashion-MNIST with captions per class.
//!
//! Emoji come from two npm packages that `scripts/setup.sh emoji` unpacks into `.deps/emoji/`:
//! - `emoji-datasource-google@16.0.0`: `emoji.json` (code points, short names, Unicode names, categories,
//!   skin-tone variations) and `img/google/64/<code points>.png`, 64x64 RGBA;
//! - `emojibase-data@17.0.0`: `en/data.json` (CLDR labels such as "waving hand: light skin tone" and
//!   keyword tags), joined on the code points without variation selectors (U+FE0F).
//!
//! A fixed list of emoji, [`EMOJI_HELD_OUT`], never enters the training set (nor do their skin-tone
//! variants), so that a text-to-image model can be asked for concepts it has only seen in words.
//! `mirage-train prepare emoji|fashion` writes what is here to disk for a look ([`prepare_emoji`],
//! [`prepare_fashion`]); the trainer calls [`load_emoji`] directly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::json;

use crate::error::{Error, Result};
use crate::fashion;
use crate::image::Image;

/// Where `scripts/setup.sh emoji` puts the emoji data, relative to the repository root.
pub const EMOJI_DIR: &str = ".deps/emoji";

/// Side of every emoji image.
pub const EMOJI_SIZE: u32 = 64;

/// Emoji held out of training entirely (by the set's [`CaptionedSet::names`], skin-tone variants included).
/// Everyday concepts that a pretrained text encoder knows and that training still covers nearby: the
/// dog and cat faces go while the whole-body dog and cat stay, the pizza goes while other foods stay, the
/// waving and clapping hands go with all their skin tones while other hands stay.
pub const EMOJI_HELD_OUT: &[&str] = &[
    "dog",        // dog face
    "cat",        // cat face
    "tiger",      // tiger face
    "penguin",    //
    "owl",        //
    "pizza",      //
    "banana",     //
    "strawberry", //
    "hamburger",  //
    "guitar",     //
    "umbrella",   //
    "rocket",     //
    "crown",      //
    "key",        //
    "sunglasses", // smiling face with sunglasses
    "joy",        // face with tears of joy
    "wave",       // waving hand, five skin tones
    "clap",       // clapping hands, five skin tones
];

/// Images with several captions each, all of one size.
#[derive(Debug, Clone, Default)]
pub struct CaptionedSet {
    /// Image width, height and channels: 64, 64, 4 (straight RGBA) for emoji; 28, 28, 1 for Fashion-MNIST.
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// Channels per pixel: 4 (straight RGBA) or 1 (grey).
    pub channels: u32,
    /// `len() * height * width * channels` bytes, row-major HWC per image.
    pub pixels: Vec<u8>,
    /// A stable id per image: the emoji's short name with a skin-tone suffix (`thumbsup_tone2`), or
    /// `<class>-<index>` for Fashion-MNIST.
    pub names: Vec<String>,
    /// Several distinct lower-case captions per image.
    pub captions: Vec<Vec<String>>,
    /// Index into `categories` per image (emoji category; Fashion-MNIST class 0..10).
    pub labels: Vec<u32>,
    /// Category names, the same list for a training set and its held-out set.
    pub categories: Vec<String>,
}

impl CaptionedSet {
    /// An empty set of emoji-sized RGBA images (EMOJI_SIZE square) with these category labels.
    pub fn empty_emoji(categories: Vec<String>) -> CaptionedSet {
        CaptionedSet { width: EMOJI_SIZE, height: EMOJI_SIZE, channels: 4, categories, ..CaptionedSet::default() }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the set has no images.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Bytes of one image.
    pub fn image_len(&self) -> usize {
        (self.width * self.height * self.channels) as usize
    }

    /// The pixels of image `i` (HWC).
    pub fn pixels_of(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Image `i` as an [`Image`] (for PNG output and grids).
    pub fn image(&self, i: usize) -> Result<Image> {
        Image::new(self.width, self.height, self.channels, self.pixels_of(i).to_vec())
    }

    pub(crate) fn push(&mut self, name: String, captions: Vec<String>, label: u32, pixels: &[u8]) {
        self.names.push(name);
        self.captions.push(captions);
        self.labels.push(label);
        self.pixels.extend_from_slice(pixels);
    }
}

/// Everything [`load_emoji_report`] found: the two sets and what it had to leave out.
#[derive(Debug, Clone)]
pub struct EmojiData {
    /// Every emoji not held out, sorted by name.
    pub train: CaptionedSet,
    /// The [`EMOJI_HELD_OUT`] emoji and their skin-tone variants, sorted by name.
    pub held_out: CaptionedSet,
    /// Entries of `emoji.json` without a 64 px Google image: `"<name>: <why>"`.
    pub skipped: Vec<String>,
    /// Names of [`EMOJI_HELD_OUT`] that the data does not have (empty for the pinned packages).
    pub held_out_missing: Vec<String>,
    /// Entries whose labels and tags came from emoji.json alone (not found in emojibase's en/data.json).
    pub without_emojibase: usize,
}

/// Loads the emoji of `dir` (`.deps/emoji`) as (training set, held-out set). See [`load_emoji_report`].
pub fn load_emoji(dir: &Path) -> Result<(CaptionedSet, CaptionedSet)> {
    let d = load_emoji_report(dir)?;
    Ok((d.train, d.held_out))
}

// The parts of emoji-datasource's emoji.json that we read.
#[derive(Deserialize)]
struct DsEntry {
    unified: String,
    #[serde(default)]
    name: Option<String>,
    short_name: String,
    #[serde(default)]
    short_names: Vec<String>,
    category: String,
    #[serde(default)]
    subcategory: String,
    image: String,
    #[serde(default)]
    has_img_google: bool,
    #[serde(default)]
    has_img_twitter: bool,
    #[serde(default)]
    skin_variations: Option<BTreeMap<String, DsSkin>>,
}

#[derive(Deserialize)]
struct DsSkin {
    unified: String,
    image: String,
    #[serde(default)]
    has_img_google: bool,
    #[serde(default)]
    has_img_twitter: bool,
}

// The parts of emojibase's en/data.json that we read (skins carry no tags: they take their base's).
#[derive(Deserialize)]
struct EbEntry {
    hexcode: String,
    label: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    skins: Vec<EbEntry>,
}

/// One emoji image to load, before the split.
struct Item {
    name: String,
    base: String,
    category: String,
    captions: Vec<String>,
    path: PathBuf,
}

/// Code points as the join key: upper-case, without the emoji variation selector FE0F, which the
/// packages write differently ("0023-FE0F-20E3" against "0023-20E3").
pub(crate) fn join_key(hex: &str) -> String {
    hex.split('-').map(str::to_ascii_uppercase).filter(|p| p != "FE0F").collect::<Vec<_>>().join("-")
}

/// The Fitzpatrick modifier code point -> (suffix number, CLDR phrase).
fn tone_of(code: &str) -> Option<(u32, &'static str)> {
    match code.to_ascii_uppercase().as_str() {
        "1F3FB" => Some((1, "light skin tone")),
        "1F3FC" => Some((2, "medium-light skin tone")),
        "1F3FD" => Some((3, "medium skin tone")),
        "1F3FE" => Some((4, "medium-dark skin tone")),
        "1F3FF" => Some((5, "dark skin tone")),
        _ => None,
    }
}

/// The short name used as the id: the first one made only of `[a-z0-9_-]` and not starting with `-`
/// ("+1" becomes "thumbsup", "-1" "thumbsdown"), so that names work as file names and shell arguments.
fn id_of(e: &DsEntry) -> String {
    let plain = |s: &&String| {
        s.bytes().next().is_some_and(|b| b != b'-')
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    e.short_names.iter().find(plain).unwrap_or(&e.short_name).clone()
}

/// Lower-case, single spaces, trimmed.
pub(crate) fn clean(s: &str) -> String {
    s.to_lowercase().split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(crate) fn article(word: &str) -> &'static str {
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

/// Pushes `c` (cleaned) unless empty or already there.
pub(crate) fn add(out: &mut Vec<String>, c: &str) {
    let c = clean(c);
    if !c.is_empty() && !out.contains(&c) {
        out.push(c);
    }
}

/// What the captions of one emoji are made of.
struct CaptionParts<'a> {
    /// The CLDR label, with the skin tone for a variant ("waving hand: light skin tone").
    label: &'a str,
    /// The CLDR label of the base emoji ("waving hand").
    base_label: &'a str,
    /// The Unicode name ("waving hand sign").
    unicode_name: &'a str,
    /// The chosen short name ("wave").
    short: &'a str,
    tags: &'a [String],
    category: &'a str,
    subcategory: &'a str,
    /// The skin-tone phrase(s) of a variant ("light skin tone, dark skin tone"), empty otherwise.
    tone: &'a str,
}

/// The captions of one emoji, most specific first: the label alone, as sentences, the Unicode name,
/// the keyword tags, the category and the short name, each with the skin tone where there is one.
/// Varied phrasings keep a text-conditioned model from learning one template instead of the concept.
fn emoji_captions(p: &CaptionParts) -> Vec<String> {
    let label = clean(p.label);
    let base = clean(p.base_label);
    let with_tone = |s: &str| if p.tone.is_empty() { s.to_string() } else { format!("{s}: {}", p.tone) };
    // "thumbs up with medium-light skin tone" reads as a sentence where the CLDR colon does not.
    let phrase = if p.tone.is_empty() { base.clone() } else { format!("{base} with {}", p.tone) };
    let mut out = Vec::new();
    add(&mut out, &label);
    add(&mut out, &format!("an emoji of {phrase}"));
    add(&mut out, &with_tone(&format!("{base} emoji")));
    add(&mut out, &with_tone(p.unicode_name));
    // Tags that only repeat the label's words add nothing; the rest are the words people search with.
    let label_words: BTreeSet<&str> = base.split(|c: char| !c.is_alphanumeric()).collect();
    let tags: Vec<String> = p
        .tags
        .iter()
        .map(|t| clean(t))
        .filter(|t| !t.is_empty() && !label_words.contains(t.as_str()))
        .take(3)
        .collect();
    if !tags.is_empty() {
        let mut t = tags.join(", ");
        if !p.tone.is_empty() {
            t = format!("{t}, {}", p.tone);
        }
        add(&mut out, &t);
        add(&mut out, &format!("{phrase}, {}", tags[0]));
    }
    let category = clean(p.category);
    if !category.is_empty() {
        add(&mut out, &format!("{} {category} emoji: {phrase}", article(&category)));
    }
    let sub = clean(&p.subcategory.replace('-', " "));
    if !sub.is_empty() {
        add(&mut out, &with_tone(&format!("{base} ({sub})")));
    }
    add(&mut out, &with_tone(&p.short.replace(['_', '-'], " ")));
    out
}

/// One emoji (or one skin-tone variant) of emoji-datasource's `emoji.json`, with its captions, before any
/// style's image is looked for.
pub(crate) struct Variant {
    /// The id: short name plus skin-tone suffix (`thumbsup_tone2`).
    pub name: String,
    /// The id of the base emoji (`thumbsup`), what [`EMOJI_HELD_OUT`] lists.
    pub base: String,
    /// emoji-datasource's category ("People & Body").
    pub category: String,
    /// The style-free captions ([`emoji_captions`]).
    pub captions: Vec<String>,
    /// The CLDR label ("thumbs up: medium-light skin tone").
    pub label: String,
    /// The label as a noun phrase ("thumbs up with medium-light skin tone").
    pub phrase: String,
    /// The code points as emoji-datasource writes them ("1F44D-1F3FC").
    pub unified: String,
    /// The image file name in emoji-datasource's `img/<set>/64/`.
    pub image: String,
    pub has_google: bool,
    pub has_twitter: bool,
}

/// Every emoji of `emoji.json`, skin-tone variants included, in file order, with captions.
pub(crate) struct Catalogue {
    pub variants: Vec<Variant>,
    /// Variants whose labels and tags came from emoji.json alone (not in emojibase's en/data.json).
    pub without_emojibase: usize,
}

/// Reads `emoji.json` and `en/data.json` of `dir` and makes every variant's captions.
pub(crate) fn emoji_catalogue(dir: &Path) -> Result<Catalogue> {
    let ds: Vec<DsEntry> = read_json_file(&dir.join("emoji.json"), "run scripts/setup.sh emoji")?;
    let eb: Vec<EbEntry> = read_json_file(&dir.join("en/data.json"), "run scripts/setup.sh emoji")?;
    let mut labels: HashMap<String, (&str, &[String])> = HashMap::new();
    for e in &eb {
        labels.insert(join_key(&e.hexcode), (&e.label, &e.tags));
        for s in &e.skins {
            labels.insert(join_key(&s.hexcode), (&s.label, &e.tags));
        }
    }
    let mut variants = Vec::new();
    let mut without_emojibase = 0;
    for e in &ds {
        let base = id_of(e);
        let unicode_name = clean(e.name.as_deref().unwrap_or_default());
        let (base_label, tags): (String, &[String]) = match labels.get(&join_key(&e.unified)) {
            Some((l, t)) => (clean(l), t),
            None => {
                without_emojibase += 1;
                (if unicode_name.is_empty() { base.replace(['_', '-'], " ") } else { unicode_name.clone() }, &[])
            }
        };
        let mut these = vec![(
            base.clone(),
            base_label.clone(),
            String::new(),
            &e.unified,
            &e.image,
            e.has_img_google,
            e.has_img_twitter,
        )];
        for (codes, s) in e.skin_variations.iter().flatten() {
            let tones = codes
                .split('-')
                .map(|c| {
                    tone_of(c).ok_or_else(|| Error::invalid(format!("emoji.json: {base}: unknown skin tone {codes}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let suffix: String = tones.iter().map(|(n, _)| format!("_tone{n}")).collect();
            let tone = tones.iter().map(|(_, t)| *t).collect::<Vec<_>>().join(", ");
            let label = match labels.get(&join_key(&s.unified)) {
                Some((l, _)) => clean(l),
                None => {
                    without_emojibase += 1;
                    format!("{base_label}: {tone}")
                }
            };
            these.push((
                format!("{base}{suffix}"),
                label,
                tone,
                &s.unified,
                &s.image,
                s.has_img_google,
                s.has_img_twitter,
            ));
        }
        for (name, label, tone, unified, image, has_google, has_twitter) in these {
            let captions = emoji_captions(&CaptionParts {
                label: &label,
                base_label: &base_label,
                unicode_name: &unicode_name,
                short: &base,
                tags,
                category: &e.category,
                subcategory: &e.subcategory,
                tone: &tone,
            });
            let phrase = if tone.is_empty() { base_label.clone() } else { format!("{base_label} with {tone}") };
            variants.push(Variant {
                name,
                base: base.clone(),
                category: e.category.clone(),
                captions,
                label: clean(&label),
                phrase,
                unified: unified.clone(),
                image: image.clone(),
                has_google,
                has_twitter,
            });
        }
    }
    Ok(Catalogue { variants, without_emojibase })
}

/// Loads the emoji of `dir` (`.deps/emoji`: `emoji.json`, `en/data.json`, `img/google/64/*.png`), with
/// every skin-tone variant that has an image, split into training and [`EMOJI_HELD_OUT`] sets, both
/// sorted by name. Images are 64x64 straight RGBA, with the colour of fully transparent pixels set to 0.
///
/// Errors: a missing or malformed JSON file, an unreadable PNG, a PNG that is not 64x64 (each naming
/// the file), an unknown skin-tone code, two entries with one name.
pub fn load_emoji_report(dir: &Path) -> Result<EmojiData> {
    let cat = emoji_catalogue(dir)?;
    let img_dir = dir.join("img/google/64");
    let mut items = Vec::new();
    let mut skipped = Vec::new();
    for v in cat.variants {
        let path = img_dir.join(&v.image);
        if !v.has_google {
            skipped.push(format!("{}: no Google image ({})", v.name, v.unified));
            continue;
        }
        if !path.is_file() {
            skipped.push(format!("{}: {} missing", v.name, path.display()));
            continue;
        }
        items.push(Item { name: v.name, base: v.base, category: v.category, captions: v.captions, path });
    }
    let without_emojibase = cat.without_emojibase;
    items.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = items.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(Error::invalid(format!("emoji.json: two images named {:?}", w[0].name)));
    }
    let categories: Vec<String> =
        items.iter().map(|i| i.category.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let pixels = decode_parallel(&items, |item| load_emoji_png(&item.path))?;
    let empty = CaptionedSet::empty_emoji(categories.clone());
    let (mut train, mut held_out) = (empty.clone(), empty);
    for (item, px) in items.iter().zip(pixels.chunks_exact((EMOJI_SIZE * EMOJI_SIZE * 4) as usize)) {
        let label = categories.binary_search(&item.category).unwrap_or(0) as u32;
        let set = if EMOJI_HELD_OUT.contains(&item.base.as_str()) { &mut held_out } else { &mut train };
        set.push(item.name.clone(), item.captions.clone(), label, px);
    }
    let present: BTreeSet<&str> = items.iter().map(|i| i.base.as_str()).collect();
    let held_out_missing = EMOJI_HELD_OUT.iter().filter(|n| !present.contains(**n)).map(|n| n.to_string()).collect();
    Ok(EmojiData { train, held_out, skipped, held_out_missing, without_emojibase })
}

pub(crate) fn read_json_file<T: serde::de::DeserializeOwned>(path: &Path, hint: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(path, std::io::Error::new(e.kind(), format!("{e} ({hint})"))))?;
    serde_json::from_str(&text).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
}

/// Decodes every item's 64x64 RGBA image with `decode`, in order, on up to 4 threads (decoding is most of
/// `load_emoji`'s time), into one buffer.
pub(crate) fn decode_parallel<T: Sync>(items: &[T], decode: impl Fn(&T) -> Result<Vec<u8>> + Sync) -> Result<Vec<u8>> {
    let per = (EMOJI_SIZE * EMOJI_SIZE * 4) as usize;
    let mut out = vec![0u8; items.len() * per];
    if items.is_empty() {
        return Ok(out);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let chunk = items.len().div_ceil(threads);
    let decode = &decode;
    std::thread::scope(|s| {
        let jobs: Vec<_> = items
            .chunks(chunk)
            .zip(out.chunks_mut(chunk * per))
            .map(|(its, dst)| {
                s.spawn(move || -> Result<()> {
                    for (item, d) in its.iter().zip(dst.chunks_exact_mut(per)) {
                        d.copy_from_slice(&decode(item)?);
                    }
                    Ok(())
                })
            })
            .collect();
        jobs.into_iter()
            .try_for_each(|j| j.join().unwrap_or_else(|_| Err(Error::invalid("image decoding thread panicked"))))
    })?;
    Ok(out)
}

/// One emoji PNG as 64x64 straight RGBA (palette and grey PNGs expanded), transparent pixels zeroed:
/// their colour is invisible but would otherwise be arbitrary, and a model trained on RGBA sees it.
pub fn load_emoji_png(path: &Path) -> Result<Vec<u8>> {
    let img = image::open(path).map_err(|e| Error::Image(format!("{}: {e}", path.display())))?;
    if (img.width(), img.height()) != (EMOJI_SIZE, EMOJI_SIZE) {
        return Err(Error::Image(format!(
            "{}: {}x{}, every emoji image must be {EMOJI_SIZE}x{EMOJI_SIZE}",
            path.display(),
            img.width(),
            img.height()
        )));
    }
    let mut px = img.into_rgba8().into_raw();
    for p in px.chunks_exact_mut(4) {
        if p[3] == 0 {
            p[..3].fill(0);
        }
    }
    Ok(px)
}

/// Noun phrases of the ten Fashion-MNIST classes (in label order) as a caption says them, and synonyms.
const FASHION_NOUNS: [(&str, &[&str]); 10] = [
    ("t-shirt", &["top", "tee"]),
    ("pair of trousers", &["pair of pants", "trousers"]),
    ("pullover", &["sweater", "jumper"]),
    ("dress", &["gown"]),
    ("coat", &["jacket"]),
    ("sandal", &["summer shoe"]),
    ("shirt", &["button-up shirt"]),
    ("sneaker", &["trainer", "running shoe"]),
    ("bag", &["handbag", "purse"]),
    ("ankle boot", &["boot"]),
];

/// The canonical prompt of a Fashion-MNIST class for evaluation: "a photo of a t-shirt", ...,
/// "a photo of an ankle boot". Panics when `class >= 10`.
pub fn fashion_prompt(class: usize) -> String {
    let noun = FASHION_NOUNS[class].0;
    format!("a photo of {} {noun}", article(noun))
}

/// Several lower-case captions of a Fashion-MNIST class (the prompt first): plain nouns, photo and
/// black-and-white phrasings, and synonyms. Panics when `class >= 10`.
pub fn fashion_captions(class: usize) -> Vec<String> {
    let (noun, synonyms) = FASHION_NOUNS[class];
    let mut out = vec![fashion_prompt(class)];
    for n in std::iter::once(noun).chain(synonyms.iter().copied()) {
        let a = article(n);
        for c in [
            format!("{a} {n}"),
            format!("a photo of {a} {n}"),
            format!("a black and white picture of {a} {n}"),
            format!("a small grey photo of {a} {n}"),
        ] {
            add(&mut out, &c);
        }
    }
    add(&mut out, noun);
    out
}

/// A Fashion-MNIST class's id for names: "t-shirt-top", "ankle-boot".
fn fashion_slug(class: usize) -> String {
    fashion::CLASSES[class].to_lowercase().replace(['/', ' '], "-")
}

/// A Fashion-MNIST split as a captioned set (28x28 grey): names `<class>-<index>`, every image of a
/// class with that class's [`fashion_captions`].
pub fn load_fashion(dir: &Path, split: fashion::Split, limit: Option<usize>) -> Result<CaptionedSet> {
    let s = fashion::load(dir, split, limit)?;
    let captions: Vec<Vec<String>> = (0..10).map(fashion_captions).collect();
    let slugs: Vec<String> = (0..10).map(fashion_slug).collect();
    Ok(CaptionedSet {
        width: 28,
        height: 28,
        channels: 1,
        pixels: s.images,
        names: s.labels.iter().enumerate().map(|(i, &l)| format!("{}-{i}", slugs[l as usize])).collect(),
        captions: s.labels.iter().map(|&l| captions[l as usize].clone()).collect(),
        labels: s.labels.iter().map(|&l| l as u32).collect(),
        categories: fashion::CLASSES.iter().map(|c| c.to_string()).collect(),
    })
}

/// Lays out the first `max` images of `set` 16 to a row; RGBA images are composited over a grey
/// checkerboard so that transparency shows. The result is RGB (or grey for grey sets).
pub fn contact_sheet(set: &CaptionedSet, max: usize) -> Result<Image> {
    let n = set.len().min(max);
    let mut images = Vec::with_capacity(n);
    for i in 0..n {
        let img = set.image(i)?;
        images.push(if img.channels == 4 { over_checkerboard(&img)? } else { img });
    }
    crate::image::grid(&images, 16, 2, 255)
}

pub(crate) fn over_checkerboard(img: &Image) -> Result<Image> {
    let mut data = Vec::with_capacity((img.width * img.height * 3) as usize);
    for (k, p) in img.data.chunks_exact(4).enumerate() {
        let (x, y) = (k as u32 % img.width, k as u32 / img.width);
        let bg: u32 = if (x / 8 + y / 8) % 2 == 0 { 204 } else { 153 };
        let a = p[3] as u32;
        data.extend(p[..3].iter().map(|&c| ((c as u32 * a + bg * (255 - a) + 127) / 255) as u8));
    }
    Image::new(img.width, img.height, 3, data)
}

/// Writes `captions.jsonl` lines for `set` (name, label, category, captions, held_out).
pub(crate) fn write_caption_lines(
    out: &mut impl Write,
    set: &CaptionedSet,
    held_out: bool,
    path: &Path,
) -> Result<usize> {
    let mut count = 0;
    for i in 0..set.len() {
        let line = json!({
            "name": set.names[i],
            "label": set.labels[i],
            "category": set.categories.get(set.labels[i] as usize),
            "captions": set.captions[i],
            "held_out": held_out,
        });
        writeln!(out, "{line}").map_err(|e| Error::io(path, e))?;
        count += set.captions[i].len();
    }
    Ok(count)
}

/// `mirage-train prepare emoji`: loads `src` (`.deps/emoji`) and writes into `out` `captions.jsonl`
/// (one line per image, training then held out), `sheet.png` (the first 256 training images over a
/// checkerboard) and `stats.json`, which it also returns.
pub fn prepare_emoji(src: &Path, out: &Path) -> Result<serde_json::Value> {
    let t0 = std::time::Instant::now();
    let d = load_emoji_report(src)?;
    let load_s = t0.elapsed().as_secs_f64();
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let path = out.join("captions.jsonl");
    let mut buf = Vec::new();
    let captions = write_caption_lines(&mut buf, &d.train, false, &path)?
        + write_caption_lines(&mut buf, &d.held_out, true, &path)?;
    super::write_atomic(&path, &buf)?;
    contact_sheet(&d.train, 256)?.save(&out.join("sheet.png"))?;
    let per_category: BTreeMap<&str, usize> = d
        .train
        .categories
        .iter()
        .enumerate()
        .map(|(k, c)| (c.as_str(), d.train.labels.iter().filter(|&&l| l as usize == k).count()))
        .collect();
    let stats = json!({
        "source": src,
        "images": d.train.len() + d.held_out.len(),
        "train_images": d.train.len(),
        "held_out_images": d.held_out.len(),
        "captions": captions,
        "categories": d.train.categories,
        "train_per_category": per_category,
        "held_out_names": EMOJI_HELD_OUT,
        "held_out_images_names": d.held_out.names,
        "held_out_missing": d.held_out_missing,
        "skipped": d.skipped.len(),
        "skipped_entries": d.skipped,
        "without_emojibase": d.without_emojibase,
        "load_seconds": load_s,
    });
    super::write_json(&out.join("stats.json"), &stats)?;
    Ok(stats)
}

/// `mirage-train prepare fashion`: writes into `out` `captions.jsonl` (one line per class: its captions),
/// `sheet.png` (the first 256 training images) and `stats.json` (images per class), which it returns.
pub fn prepare_fashion(src: &Path, out: &Path) -> Result<serde_json::Value> {
    let train = load_fashion(src, fashion::Split::Train, None)?;
    let test_n = fashion::load(src, fashion::Split::Test, None)?.n;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let path = out.join("captions.jsonl");
    let mut buf = Vec::new();
    let mut captions = 0;
    for class in 0..10 {
        let c = fashion_captions(class);
        captions += c.len();
        let line = json!({
            "name": fashion_slug(class),
            "label": class,
            "category": fashion::CLASSES[class],
            "prompt": fashion_prompt(class),
            "captions": c,
            "held_out": false,
        });
        writeln!(buf, "{line}").map_err(|e| Error::io(&path, e))?;
    }
    super::write_atomic(&path, &buf)?;
    contact_sheet(&train, 256)?.save(&out.join("sheet.png"))?;
    let per_class: BTreeMap<String, usize> =
        (0..10).map(|k| (fashion_slug(k), train.labels.iter().filter(|&&l| l as usize == k).count())).collect();
    let stats = json!({
        "source": src,
        "train_images": train.len(),
        "test_images": test_n,
        "classes": fashion::CLASSES,
        "train_per_class": per_class,
        "captions_per_class": (0..10).map(|k| fashion_captions(k).len()).collect::<Vec<_>>(),
        "captions": captions,
        "prompts": (0..10).map(fashion_prompt).collect::<Vec<_>>(),
    });
    super::write_json(&out.join("stats.json"), &stats)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A palette PNG (colour type 3) with a tRNS chunk, written by hand: the image crate only encodes
    /// grey and RGB(A), and the real emoji set holds palette PNGs.
    fn palette_png(w: u32, h: u32, palette: &[[u8; 3]], alpha: &[u8], index: impl Fn(u32, u32) -> u8) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend((data.len() as u32).to_be_bytes());
            let mut crc = flate2::Crc::new();
            crc.update(kind);
            crc.update(data);
            out.extend(kind);
            out.extend(data);
            out.extend(crc.sum().to_be_bytes());
        }
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = w.to_be_bytes().to_vec();
        ihdr.extend(h.to_be_bytes());
        ihdr.extend([8, 3, 0, 0, 0]); // 8 bits, palette, deflate, adaptive filters, no interlace
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(&mut out, b"PLTE", &palette.concat());
        chunk(&mut out, b"tRNS", alpha);
        let mut raw = Vec::new();
        for y in 0..h {
            raw.push(0); // filter: none
            raw.extend((0..w).map(|x| index(x, y)));
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&raw).unwrap();
        chunk(&mut out, b"IDAT", &z.finish().unwrap());
        chunk(&mut out, b"IEND", &[]);
        out
    }

    fn save_rgba(path: &Path, size: u32, px: impl Fn(u32, u32) -> [u8; 4]) {
        let data: Vec<u8> = (0..size * size).flat_map(|k| px(k % size, k / size)).collect();
        Image::new(size, size, 4, data).unwrap().save(path).unwrap();
    }

    /// A tiny emoji dir: "grinning" (RGBA, one transparent pixel with a colour), "dog" (palette, held
    /// out), "+1"/"thumbsup" with one skin tone (grey PNG), and "ghost" without a Google image.
    fn tiny_emoji_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img/google/64");
        std::fs::create_dir_all(&img).unwrap();
        std::fs::create_dir_all(d.path().join("en")).unwrap();
        save_rgba(&img.join("1f600.png"), 64, |x, y| if (x, y) == (0, 0) { [9, 8, 7, 0] } else { [250, 200, 0, 255] });
        let pal = palette_png(64, 64, &[[200, 10, 10], [0, 0, 255]], &[0, 255], |x, _| (x >= 32) as u8);
        std::fs::write(img.join("1f436.png"), pal).unwrap();
        save_rgba(&img.join("1f44d.png"), 64, |_, _| [255, 220, 90, 255]);
        let grey: Vec<u8> = (0..64 * 64).map(|k| (k % 256) as u8).collect();
        Image::new(64, 64, 1, grey).unwrap().save(&img.join("1f44d-1f3fc.png")).unwrap();
        let emoji_json = json!([
            {"unified": "1F600", "name": "GRINNING FACE", "short_name": "grinning", "short_names": ["grinning"],
             "category": "Smileys & Emotion", "subcategory": "face-smiling", "image": "1f600.png", "has_img_google": true},
            {"unified": "1F436", "name": "DOG FACE", "short_name": "dog", "short_names": ["dog"],
             "category": "Animals & Nature", "subcategory": "animal-mammal", "image": "1f436.png", "has_img_google": true},
            {"unified": "1F44D", "name": "THUMBS UP SIGN", "short_name": "+1", "short_names": ["+1", "thumbsup"],
             "category": "People & Body", "subcategory": "hand-fingers-closed", "image": "1f44d.png", "has_img_google": true,
             "skin_variations": {"1F3FC": {"unified": "1F44D-1F3FC", "image": "1f44d-1f3fc.png", "has_img_google": true}}},
            {"unified": "1F47B", "name": "GHOST", "short_name": "ghost", "short_names": ["ghost"],
             "category": "Smileys & Emotion", "subcategory": "face-costume", "image": "1f47b.png", "has_img_google": false},
        ]);
        std::fs::write(d.path().join("emoji.json"), emoji_json.to_string()).unwrap();
        let data_json = json!([
            {"hexcode": "1F600", "label": "grinning face", "tags": ["face", "grin", "happy"]},
            {"hexcode": "1F47B", "label": "ghost", "tags": ["halloween"]},
            {"hexcode": "1F436", "label": "dog face", "tags": ["animal", "dog", "pet", "puppy"]},
            {"hexcode": "1F44D", "label": "thumbs up", "tags": ["+1", "good", "hand", "like"],
             "skins": [{"hexcode": "1F44D-1F3FC", "label": "thumbs up: medium-light skin tone"}]},
        ]);
        std::fs::write(d.path().join("en/data.json"), data_json.to_string()).unwrap();
        d
    }

    #[test]
    fn loads_the_tiny_emoji_set() {
        let d = tiny_emoji_dir();
        let r = load_emoji_report(d.path()).unwrap();
        assert_eq!(r.train.names, ["grinning", "thumbsup", "thumbsup_tone2"]);
        assert_eq!(r.held_out.names, ["dog"]);
        assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
        assert!(r.skipped[0].starts_with("ghost"));
        assert_eq!(r.without_emojibase, 0);
        assert_eq!(r.train.categories, ["Animals & Nature", "People & Body", "Smileys & Emotion"]);
        assert_eq!(r.train.categories, r.held_out.categories);
        assert_eq!(r.train.labels, [2, 1, 1]);
        assert_eq!(r.train.pixels.len(), 3 * 64 * 64 * 4);
        // The transparent pixel's colour is zeroed; opaque ones keep theirs.
        assert_eq!(&r.train.pixels_of(0)[..8], &[0, 0, 0, 0, 250, 200, 0, 255]);
        // Palette with tRNS: index 0 is transparent (its red zeroed), index 1 opaque blue.
        let dog = r.held_out.pixels_of(0);
        assert_eq!(&dog[..4], &[0, 0, 0, 0]);
        assert_eq!(&dog[32 * 4..33 * 4], &[0, 0, 255, 255]);
        // Grey becomes opaque RGBA.
        assert_eq!(&r.train.pixels_of(2)[4..8], &[1, 1, 1, 255]);
        for caps in r.train.captions.iter().chain(&r.held_out.captions) {
            assert!(caps.len() >= 3, "{caps:?}");
            assert_eq!(caps.iter().collect::<BTreeSet<_>>().len(), caps.len(), "duplicates in {caps:?}");
            assert!(caps.iter().all(|c| !c.is_empty() && *c == c.to_lowercase()), "{caps:?}");
        }
        let tone = &r.train.captions[2];
        assert_eq!(tone[0], "thumbs up: medium-light skin tone");
        assert!(tone.contains(&"thumbs up sign: medium-light skin tone".to_string()), "{tone:?}");
        assert!(tone.contains(&"+1, good, hand, medium-light skin tone".to_string()), "{tone:?}");
        assert!(tone.contains(&"an emoji of thumbs up with medium-light skin tone".to_string()), "{tone:?}");
        assert!(r.train.captions[0].contains(&"a smileys & emotion emoji: grinning face".to_string()));
        assert!(r.held_out.captions[0].contains(&"an emoji of dog face".to_string()));
        let (train, held_out) = load_emoji(d.path()).unwrap();
        assert_eq!((train.len(), held_out.len()), (3, 1));
    }

    #[test]
    fn a_wrong_size_png_is_an_error_naming_it() {
        let d = tiny_emoji_dir();
        save_rgba(&d.path().join("img/google/64/1f600.png"), 32, |_, _| [1, 2, 3, 255]);
        let e = load_emoji(d.path()).unwrap_err().to_string();
        assert!(e.contains("1f600.png") && e.contains("32x32"), "{e}");
    }

    #[test]
    fn missing_data_says_how_to_get_it() {
        let d = tempfile::tempdir().unwrap();
        let e = load_emoji(d.path()).unwrap_err().to_string();
        assert!(e.contains("emoji.json") && e.contains("setup.sh emoji"), "{e}");
    }

    #[test]
    fn a_missing_image_file_is_skipped_and_counted() {
        let d = tiny_emoji_dir();
        std::fs::remove_file(d.path().join("img/google/64/1f44d-1f3fc.png")).unwrap();
        let r = load_emoji_report(d.path()).unwrap();
        assert_eq!(r.train.names, ["grinning", "thumbsup"]);
        assert_eq!(r.skipped.len(), 2, "{:?}", r.skipped);
    }

    #[test]
    fn join_keys_ignore_the_variation_selector() {
        assert_eq!(join_key("0023-FE0F-20E3"), "0023-20E3");
        assert_eq!(join_key("1f44d-1f3fc"), "1F44D-1F3FC");
    }

    #[test]
    fn fashion_captions_name_every_class() {
        assert_eq!(fashion_prompt(0), "a photo of a t-shirt");
        assert_eq!(fashion_prompt(9), "a photo of an ankle boot");
        for class in 0..10 {
            let c = fashion_captions(class);
            assert_eq!(c[0], fashion_prompt(class));
            assert!(c.len() >= 5, "{c:?}");
            assert_eq!(c.iter().collect::<BTreeSet<_>>().len(), c.len(), "duplicates in {c:?}");
            assert!(c.iter().all(|s| *s == s.to_lowercase()));
        }
        assert!(fashion_captions(5).contains(&"a black and white picture of a sandal".to_string()));
        assert!(fashion_captions(8).contains(&"a handbag".to_string()));
    }

    #[test]
    fn contact_sheet_shows_alpha_over_a_checkerboard() {
        let d = tiny_emoji_dir();
        let (train, _) = load_emoji(d.path()).unwrap();
        let sheet = contact_sheet(&train, 256).unwrap();
        assert_eq!(sheet.channels, 3);
        assert_eq!((sheet.width, sheet.height), (3 * 66 + 2, 66 + 2));
        // Pixel (0, 0) of the first image is transparent: the checkerboard's light square shows.
        let at = |x: u32, y: u32| &sheet.data[((y * sheet.width + x) * 3) as usize..][..3];
        assert_eq!(at(2, 2), &[204, 204, 204]);
        assert_eq!(at(3, 2), &[250, 200, 0]);
    }
}
