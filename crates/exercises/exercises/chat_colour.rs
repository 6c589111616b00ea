//! Exercise `chat_colour` (chapter: SSE chat): a first small function.
//!
//! Goal: each chat user gets a colour derived from their name, so a reader tells speakers apart
//! at a glance without the server storing anything. The colour must be the same for the same
//! name on every message, after every restart and on every machine, must not depend on case or
//! surrounding spaces ("Ann", " ann " are one person), and different names should mostly differ.
//! It is a CSS colour `hsl(<hue 0-359>, 65%, 45%)`: fixed saturation and lightness keep every
//! hue readable on a white page.
//!
//! Check with `cargo run -p exercises -- check chat_colour`; stuck? `-- hint chat_colour`.

/// The CSS colour the chat shows `name` in.
// Unread until the TODO below is done.
#[allow(unused_variables)]
pub fn colour_for(name: &str) -> String {
    // TODO: derive the hue from `name`. Which hash gives the same number on every run and every
    // machine? (Not `std::collections::hash_map::DefaultHasher`: read its docs.)
    let hue = 0;
    format!("hsl({hue}, 65%, 45%)")
}
