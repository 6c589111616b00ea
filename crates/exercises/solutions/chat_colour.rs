//! Exercise `chat_colour` (chapter: SSE chat), reference solution.
//!
//! Goal: each chat user gets a colour derived from their name, so a reader tells speakers apart
//! at a glance without the server storing anything. The colour must be the same for the same
//! name on every message, after every restart and on every machine, must not depend on case or
//! surrounding spaces ("Ann", " ann " are one person), and different names should mostly differ.
//! It is a CSS colour `hsl(<hue 0-359>, 65%, 45%)`: fixed saturation and lightness keep every
//! hue readable on a white page.
//!
//! Check with `cargo run -p exercises -- check chat_colour`.

/// The CSS colour the chat shows `name` in.
pub fn colour_for(name: &str) -> String {
    // FNV-1a: a tiny hash whose output is fixed by its definition. `std`'s `DefaultHasher` is
    // not: its algorithm may change between Rust releases, and `RandomState` differs per process,
    // so a restart would repaint everyone.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.trim().to_lowercase().bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("hsl({}, 65%, 45%)", hash % 360)
}
