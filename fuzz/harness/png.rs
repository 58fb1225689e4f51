//! Arbitrary bytes as an image file (`Image::decode`, what `Image::load` and the CLI's --image/--mask
//! read: PNG or GIF). Property: an image within the limits (at most 4096 px a side, its buffer exactly
//! width x height x channels) or an error; never a panic, an abort or a huge allocation (libFuzzer's
//! -rss_limit_mb and -malloc_limit_mb catch those).

use mirage::image::{Image, MAX_IMAGE_SIDE};

/// One input (the fuzz target's body; the normal tests replay saved inputs through it).
pub fn run(data: &[u8]) {
    if let Ok(img) = Image::decode(data) {
        assert!(img.width >= 1 && img.width <= MAX_IMAGE_SIDE && img.height >= 1 && img.height <= MAX_IMAGE_SIDE);
        assert!([1, 3, 4].contains(&img.channels));
        assert_eq!(img.data.len(), (img.width * img.height * img.channels) as usize);
    }
}
