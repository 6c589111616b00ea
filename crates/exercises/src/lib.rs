//! Classroom exercises on the demos of this workspace, checked automatically.
//!
//! Each exercise is one module: the starter a student edits lives in `exercises/<name>.rs`, its
//! reference solution in `solutions/<name>.rs`, its tests in `tests/<name>.rs`, and its goal and
//! hint in `info.toml`. The `solutions` feature swaps every starter for its solution.
//!
//! ```text
//! cargo run -p exercises -- list             # the exercises and their status
//! cargo run -p exercises -- check clock_retry
//! cargo run -p exercises -- hint clock_retry
//! ```
//!
//! Each test file is a `[[test]]` target of Cargo.toml that requires the `check` feature, so a
//! plain `cargo test --workspace` skips them: it stays green while the exercises are unsolved,
//! and lists no empty test binaries. `check` and `verify` turn the feature on.

/// Picks the starter, or with the `solutions` feature the reference solution, of each exercise.
macro_rules! exercise {
    ($name:ident, $starter:literal, $solution:literal) => {
        #[cfg_attr(not(feature = "solutions"), path = $starter)]
        #[cfg_attr(feature = "solutions", path = $solution)]
        pub mod $name;
    };
}

exercise!(
    clock_retry,
    "../exercises/clock_retry.rs",
    "../solutions/clock_retry.rs"
);
exercise!(
    clock_minute,
    "../exercises/clock_minute.rs",
    "../solutions/clock_minute.rs"
);
exercise!(
    clock_resume,
    "../exercises/clock_resume.rs",
    "../solutions/clock_resume.rs"
);
exercise!(
    chat_replay,
    "../exercises/chat_replay.rs",
    "../solutions/chat_replay.rs"
);
exercise!(
    chat_colour,
    "../exercises/chat_colour.rs",
    "../solutions/chat_colour.rs"
);
exercise!(
    chat_typing,
    "../exercises/chat_typing.rs",
    "../solutions/chat_typing.rs"
);
exercise!(
    echo_binary,
    "../exercises/echo_binary.rs",
    "../solutions/echo_binary.rs"
);
exercise!(
    echo_idle,
    "../exercises/echo_idle.rs",
    "../solutions/echo_idle.rs"
);
exercise!(
    echo_stats,
    "../exercises/echo_stats.rs",
    "../solutions/echo_stats.rs"
);
exercise!(
    ticker_unsubscribe,
    "../exercises/ticker_unsubscribe.rs",
    "../solutions/ticker_unsubscribe.rs"
);
exercise!(
    ticker_range,
    "../exercises/ticker_range.rs",
    "../solutions/ticker_range.rs"
);
exercise!(
    ticker_conflate,
    "../exercises/ticker_conflate.rs",
    "../solutions/ticker_conflate.rs"
);
