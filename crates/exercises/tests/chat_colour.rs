//! Tests of exercise `chat_colour`: run with `cargo run -p exercises -- check chat_colour`.

use std::collections::HashSet;

use exercises::chat_colour::colour_for;

/// The hue of an `hsl(<hue>, 65%, 45%)` colour, or a failure saying what the format must be.
fn hue(colour: &str) -> u32 {
    colour
        .strip_prefix("hsl(")
        .and_then(|rest| rest.strip_suffix(", 65%, 45%)"))
        .and_then(|hue| hue.parse().ok())
        .filter(|hue| *hue < 360)
        .unwrap_or_else(|| panic!("`{colour}` must look like `hsl(<0-359>, 65%, 45%)`"))
}

/// The same person always gets the same colour, whatever the case and the spaces around.
#[test]
fn same_name_same_colour() {
    assert_eq!(colour_for("ann"), colour_for("ann"));
    assert_eq!(
        colour_for("Ann"),
        colour_for(" ann "),
        "\"Ann\" and \" ann \" are one person: trim and lowercase the name before hashing"
    );
}

/// Different names are spread over the colour wheel.
#[test]
fn different_names_mostly_differ() {
    let names = [
        "ann", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
        "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter",
        "zoe",
    ];
    let hues: HashSet<u32> = names.iter().map(|name| hue(&colour_for(name))).collect();
    assert!(
        hues.len() >= 12,
        "20 names gave only {} different hues: derive the hue from a hash of the name; see the \
         TODO in exercises/chat_colour.rs",
        hues.len()
    );
}
