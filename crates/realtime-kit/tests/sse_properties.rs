//! Property tests for the kit's SSE code: the encoder ([`Event`]) and the streaming parser
//! ([`SseParser`]) checked against each other and against the WHATWG rules ("Interpreting an
//! event stream", <https://html.spec.whatwg.org/multipage/server-sent-events.html>) on generated
//! inputs, where the unit tests in `sse.rs` and `parser.rs` check chosen examples.
//!
//! Run with `cargo test -p realtime-kit --test sse_properties`. Each property runs a fixed,
//! modest number of cases (256), so the file runs in about a second in a debug build. A failure
//! prints the smallest input proptest could shrink it to and saves its seed in
//! `sse_properties.proptest-regressions` beside this file, so the next run tries it first
//! (commit that file with the fix, so the case stays tested).
//!
//! The contract being pinned down:
//! - the encoder takes any `data` and refuses (with an error) an `id` or `event` name containing
//!   CR, LF or NUL, and nothing else;
//! - whatever it encodes, the parser reads back as exactly that one event, however the bytes are
//!   cut into chunks;
//! - the parser never panics, gives the same events for any chunking of the same bytes, and
//!   dispatches nothing until a blank line ends an event that has data.

use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use realtime_kit::parser::{MessageEvent, SseParser};
use realtime_kit::sse::Event;

/// The fields of one event as a test sets them; `None` means the setter is not called.
#[derive(Debug, Clone)]
struct Fields {
    event: Option<String>,
    id: Option<String>,
    data: String,
    comment: Option<String>,
    retry_ms: Option<u64>,
}

impl Fields {
    /// Builds the event; the generators only give `id` and `event` values the encoder accepts.
    fn encode(&self) -> Vec<u8> {
        let mut event = Event::new().data(self.data.clone());
        if let Some(name) = &self.event {
            event = event
                .event(name.clone())
                .expect("generated names are single lines");
        }
        if let Some(id) = &self.id {
            event = event
                .id(id.clone())
                .expect("generated ids are single lines");
        }
        if let Some(comment) = &self.comment {
            event = event.comment(comment.clone());
        }
        if let Some(ms) = self.retry_ms {
            event = event.retry(Duration::from_millis(ms));
        }
        event.encode().to_vec()
    }

    /// What a browser delivers for this event, given the last event id before it: line breaks
    /// in `data` come back as `\n`, an empty or absent type is `message`, and an event without
    /// an `id` keeps the previous one (ids persist across events).
    fn expected(&self, previous_id: &str) -> MessageEvent {
        MessageEvent {
            event: match self.event.as_deref() {
                None | Some("") => "message".to_owned(),
                Some(name) => name.to_owned(),
            },
            data: self.data.replace("\r\n", "\n").replace('\r', "\n"),
            last_event_id: self.id.as_deref().unwrap_or(previous_id).to_owned(),
        }
    }
}

/// Text built from pieces that matter to the parser (every line ending, empty lines, colons,
/// field names, a BOM, NUL) mixed with arbitrary Unicode, so generated inputs hit the edge
/// cases far more often than uniformly random strings would.
fn tricky_text(pieces: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "(?s).{0,6}",
        1 => Just("\n".to_owned()),
        1 => Just("\r\n".to_owned()),
        1 => Just("\r".to_owned()),
        1 => Just("\n\n".to_owned()),
        1 => Just("\r\r".to_owned()),
        1 => Just(" ".to_owned()),
        1 => Just(":".to_owned()),
        1 => Just("data: ".to_owned()),
        1 => Just("event:".to_owned()),
        1 => Just("id: ".to_owned()),
        1 => Just("retry: 5".to_owned()),
        1 => Just("\u{FEFF}".to_owned()),
        1 => Just("\0".to_owned()),
        1 => Just("é😀".to_owned()),
    ];
    prop::collection::vec(piece, 0..pieces).prop_map(|pieces| pieces.concat())
}

/// What the encoder refuses in an `id` or `event` value: each of these would end the field's
/// line (CR, LF) or, for an id, make a browser ignore it (NUL).
const FORBIDDEN: [char; 3] = ['\r', '\n', '\0'];

/// A value the encoder accepts as an `id` or `event` name: tricky text without CR, LF or NUL.
fn single_line() -> impl Strategy<Value = String> {
    tricky_text(8).prop_map(|text| text.replace(FORBIDDEN, ""))
}

/// A single-line value with one forbidden character put in somewhere.
fn with_forbidden_char() -> impl Strategy<Value = String> {
    (
        single_line(),
        prop::sample::select(FORBIDDEN.to_vec()),
        any::<Index>(),
    )
        .prop_map(|(text, bad, at)| {
            let mut chars: Vec<char> = text.chars().collect();
            chars.insert(at.index(chars.len() + 1), bad);
            chars.into_iter().collect()
        })
}

fn fields() -> impl Strategy<Value = Fields> {
    (
        prop::option::of(single_line()),
        prop::option::of(single_line()),
        tricky_text(12),
        prop::option::of(tricky_text(4)),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(event, id, data, comment, retry_ms)| Fields {
            event,
            id,
            data,
            comment,
            retry_ms,
        })
}

/// Bytes that look like an event stream often enough to exercise every rule: tricky text
/// (valid UTF-8) mixed with arbitrary bytes, so invalid UTF-8 and split characters occur too.
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => tricky_text(4).prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

/// Cut points to split a byte string of any length into pieces.
fn cuts() -> impl Strategy<Value = Vec<Index>> {
    prop::collection::vec(any::<Index>(), 0..32)
}

/// Splits `bytes` at the given points. The pieces are never empty, as a socket read never is:
/// an empty `feed` is a case of its own (`empty_pieces_change_nothing`).
fn split<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
    at.extend([0, bytes.len()]);
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|pair| &bytes[pair[0]..pair[1]]).collect()
}

/// Feeds the pieces one by one to a new parser; returns every event and the parser.
fn parse_pieces(pieces: &[&[u8]]) -> (Vec<MessageEvent>, SseParser) {
    let mut parser = SseParser::new();
    let events = pieces.iter().flat_map(|piece| parser.feed(piece)).collect();
    (events, parser)
}

/// Lines with no line ending inside and never empty, each ended by one line ending: a stream
/// with no blank line in it, so one that never ends an event.
fn lines_without_a_blank_one() -> impl Strategy<Value = Vec<u8>> {
    let line = tricky_text(4)
        .prop_map(|text| text.replace(['\r', '\n'], ""))
        .prop_filter("a line is not empty", |line| !line.is_empty());
    let ending = prop::sample::select(vec!["\n", "\r\n", "\r"]);
    prop::collection::vec((line, ending), 0..8).prop_map(|lines| {
        lines
            .into_iter()
            .flat_map(|(line, ending)| [line, ending.to_owned()])
            .collect::<String>()
            .into_bytes()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The encoder refuses exactly the `id` and `event` values that contain CR, LF or NUL, and
    /// refuses them with an error (not a panic) that names the rule.
    #[test]
    fn encoder_refuses_exactly_cr_lf_and_nul_in_id_and_event(
        value in prop_oneof![single_line(), with_forbidden_char(), "(?s).{0,12}"],
    ) {
        let forbidden = value.contains(FORBIDDEN);
        for result in [Event::new().id(value.as_str()), Event::new().event(value.as_str())] {
            match result {
                Ok(_) => prop_assert!(!forbidden, "accepted {value:?}"),
                Err(error) => {
                    prop_assert!(forbidden, "refused {value:?}");
                    prop_assert!(error.to_string().contains("CR, LF or NUL"), "{error}");
                }
            }
        }
    }

    /// An encoded event, arriving whole, is read back as exactly one event with the same type,
    /// data and id, and sets the reconnection delay it carries.
    #[test]
    fn encoded_event_round_trips_whole(fields in fields()) {
        let (events, parser) = parse_pieces(&[&fields.encode()]);
        prop_assert_eq!(events, vec![fields.expected("")]);
        prop_assert_eq!(parser.last_event_id(), fields.id.as_deref().unwrap_or(""));
        prop_assert_eq!(parser.retry(), fields.retry_ms.map(Duration::from_millis));
    }

    /// Split in two at every possible point (a CR LF, a UTF-8 character or the final blank line
    /// cut in half), an encoded event still reads back as exactly one event; the first piece,
    /// which lacks the event's blank line, dispatches nothing.
    #[test]
    fn encoded_event_round_trips_split_anywhere_in_two(fields in fields()) {
        let bytes = fields.encode();
        let expected = vec![fields.expected("")];
        for at in 0..=bytes.len() {
            let mut parser = SseParser::new();
            let first = parser.feed(&bytes[..at]);
            let second = parser.feed(&bytes[at..]);
            if at < bytes.len() {
                prop_assert!(first.is_empty(), "dispatched early at {}: {:?}", at, first);
                prop_assert_eq!(&second, &expected, "split at {}", at);
            } else {
                prop_assert_eq!(&first, &expected);
                prop_assert!(second.is_empty());
            }
        }
    }

    /// Cut into many pieces at random points, an encoded event still reads back as exactly one
    /// event.
    #[test]
    fn encoded_event_round_trips_in_many_pieces(fields in fields(), cuts in cuts()) {
        let bytes = fields.encode();
        let (events, parser) = parse_pieces(&split(&bytes, &cuts));
        prop_assert_eq!(events, vec![fields.expected("")]);
        prop_assert_eq!(parser.retry(), fields.retry_ms.map(Duration::from_millis));
    }

    /// A stream of encoded events, in random pieces, reads back as the same events in order,
    /// each id persisting until the next event that sets one; an unfinished event after them
    /// (no blank line) is never dispatched, and a leading BOM changes nothing.
    #[test]
    fn stream_of_events_round_trips(
        events in prop::collection::vec(fields(), 1..6),
        bom in any::<bool>(),
        unfinished in lines_without_a_blank_one(),
        cuts in cuts(),
    ) {
        let mut bytes = if bom { "\u{FEFF}".as_bytes().to_vec() } else { Vec::new() };
        let mut expected = Vec::new();
        let mut last_id = String::new();
        for fields in &events {
            bytes.extend(fields.encode());
            let event = fields.expected(&last_id);
            last_id.clone_from(&event.last_event_id);
            expected.push(event);
        }
        let complete = bytes.len();
        bytes.extend(&unfinished);
        let (parsed, _) = parse_pieces(&split(&bytes, &cuts));
        prop_assert_eq!(parsed, expected.clone());
        // The same events, from the complete events alone: the tail added nothing.
        let (parsed, _) = parse_pieces(&[&bytes[..complete]]);
        prop_assert_eq!(parsed, expected);
    }

    /// An event without data is not dispatched (WHATWG: an empty data buffer dispatches
    /// nothing), but its id still becomes the last event id and is carried by the next event.
    #[test]
    fn event_without_data_dispatches_nothing_but_sets_the_id(
        name in prop::option::of(single_line()),
        id in single_line(),
        next in fields(),
    ) {
        let mut silent = Event::new().id(id.as_str()).expect("generated ids are single lines");
        if let Some(name) = &name {
            silent = silent.event(name.as_str()).expect("generated names are single lines");
        }
        let mut parser = SseParser::new();
        prop_assert!(parser.feed(&silent.encode()).is_empty());
        prop_assert_eq!(parser.last_event_id(), id.as_str());
        // Neither the id nor the type is lost or leaked: the next event has its own type and
        // inherits the id unless it sets one.
        prop_assert_eq!(parser.feed(&next.encode()), vec![next.expected(&id)]);
    }

    /// On arbitrary bytes the parser never panics, and any chunking gives the same events,
    /// last event id and retry as the bytes fed whole.
    #[test]
    fn arbitrary_bytes_parse_the_same_in_any_pieces(bytes in stream_bytes(), cuts in cuts()) {
        let (whole, whole_parser) = parse_pieces(&[&bytes]);
        let (pieces, pieces_parser) = parse_pieces(&split(&bytes, &cuts));
        prop_assert_eq!(pieces, whole);
        prop_assert_eq!(pieces_parser.last_event_id(), whole_parser.last_event_id());
        prop_assert_eq!(pieces_parser.retry(), whole_parser.retry());
    }

    /// An empty piece anywhere changes nothing. (It once did: after a chunk ending in CR, an
    /// empty `feed` forgot the CR, and the LF that followed ended a second, blank line.)
    #[test]
    fn empty_pieces_change_nothing(bytes in stream_bytes(), cuts in cuts()) {
        let (whole, whole_parser) = parse_pieces(&[&bytes]);
        let pieces = split(&bytes, &cuts);
        let with_empties: Vec<&[u8]> = pieces.iter().flat_map(|piece| [*piece, b""]).collect();
        let (events, parser) = parse_pieces(&with_empties);
        prop_assert_eq!(events, whole);
        prop_assert_eq!(parser.last_event_id(), whole_parser.last_event_id());
    }

    /// Fed one byte at a time, arbitrary bytes dispatch events only at a byte that ends a
    /// blank line: a CR or LF right after another line ending (or at the start of the stream,
    /// after nothing but a BOM), never in the middle of a line.
    #[test]
    fn events_are_dispatched_only_by_a_blank_line(bytes in stream_bytes()) {
        let mut parser = SseParser::new();
        let mut blank_lines = 0;
        let mut dispatched = 0;
        for (at, byte) in bytes.iter().enumerate() {
            let before = &bytes[..at];
            // The LF of a CR LF ends no line of its own.
            let ends_line = *byte == b'\r' || (*byte == b'\n' && before.last() != Some(&b'\r'));
            let line_is_empty = before.is_empty()
                || before == "\u{FEFF}".as_bytes()
                || matches!(before.last(), Some(b'\r' | b'\n'));
            let ends_blank_line = ends_line && line_is_empty;
            blank_lines += usize::from(ends_blank_line);
            let events = parser.feed(&[*byte]);
            prop_assert!(
                events.is_empty() || ends_blank_line,
                "byte {} ({:?}) dispatched {:?}", at, char::from(*byte), events
            );
            dispatched += events.len();
        }
        prop_assert!(
            dispatched <= blank_lines,
            "{} events from {} blank lines", dispatched, blank_lines
        );
    }

    /// Bytes with no blank line in them dispatch nothing, however they are chunked, even when
    /// they are full of `data:` fields.
    #[test]
    fn no_blank_line_no_event(bytes in lines_without_a_blank_one(), cuts in cuts()) {
        let (events, _) = parse_pieces(&split(&bytes, &cuts));
        prop_assert!(events.is_empty(), "{:?}", events);
    }
}
