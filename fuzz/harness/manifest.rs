//! Manifest parsing and validation on arbitrary bytes: never a panic, an abort or a hang; whatever
//! validates serialises and parses back to itself. Seeds: the shipped sets' manifests (corpus/manifest).

use mirage::manifest::Manifest;

/// One input (the fuzz target's body; the normal tests replay saved inputs through it).
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(m) = Manifest::parse(text) {
        let again = serde_json::to_string(&m).expect("a valid manifest serialises");
        assert_eq!(Manifest::parse(&again).expect("and parses back"), m);
    }
}
