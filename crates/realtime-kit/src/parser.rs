//! Server-Sent Events, client side: a streaming parser that follows the WHATWG HTML rules
//! ("Interpreting an event stream" and "Dispatch the event",
//! <https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>).
//!
//! Bytes arrive in chunks that split lines, and even a CR LF pair, anywhere; [`SseParser::feed`]
//! takes any chunk and returns the events completed by it. The rules, in short:
//! - lines end with CR LF, LF or a lone CR; one byte-order mark at the very start is skipped;
//! - a line starting with `:` is a comment; a line without a colon is a field with an empty value;
//!   one space after the colon is removed;
//! - `data` lines are joined with `\n`; `event` sets the type (default `message`); `id` sets the
//!   last event id unless it contains NUL; `retry` counts only if it is all ASCII digits;
//! - a blank line dispatches the event, unless no data was given; an unfinished event at the end
//!   of the stream is discarded.
//!
//! The tests, the examples and the load generator use this parser to read what the servers send.

use std::time::Duration;

/// An event as a browser's `EventSource` would deliver it to a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEvent {
    /// The event type: the `event:` field, or `message` when there was none.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The last event id at the time of dispatch (ids persist across events).
    pub last_event_id: String,
}

/// A streaming event-stream parser: feed it bytes, get complete events back.
#[derive(Debug)]
pub struct SseParser {
    /// Bytes of the line being read, not yet ended by CR or LF.
    line: Vec<u8>,
    /// True until the first line is complete: only that line may start with a BOM.
    at_stream_start: bool,
    /// The previous chunk ended with CR, so an LF starting the next chunk ends no extra line.
    after_cr: bool,
    data: String,
    event_type: String,
    id_buffer: String,
    last_event_id: String,
    retry: Option<Duration>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self {
            line: Vec::new(),
            at_stream_start: true,
            after_cr: false,
            data: String::new(),
            event_type: String::new(),
            id_buffer: String::new(),
            last_event_id: String::new(),
            retry: None,
        }
    }

    /// The id to send as `Last-Event-ID` when reconnecting ("" if none was received).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection delay the server asked for with `retry:`, if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Parses the next chunk of the stream and returns the events it completed, in order.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Vec<MessageEvent> {
        let mut events = Vec::new();
        // An empty chunk says nothing about the byte after a CR; it must not forget the CR.
        if chunk.is_empty() {
            return events;
        }
        if self.after_cr && chunk.first() == Some(&b'\n') {
            chunk = &chunk[1..];
        }
        self.after_cr = false;
        while let Some(end) = chunk.iter().position(|&b| b == b'\r' || b == b'\n') {
            self.line.extend_from_slice(&chunk[..end]);
            let mut next = end + 1;
            if chunk[end] == b'\r' {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    // The LF of this CR LF may be the first byte of the next chunk.
                    None => self.after_cr = true,
                }
            }
            self.end_of_line(&mut events);
            chunk = &chunk[next..];
        }
        self.line.extend_from_slice(chunk);
        events
    }

    // ANCHOR: interpret
    fn end_of_line(&mut self, events: &mut Vec<MessageEvent>) {
        let mut bytes = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.at_stream_start) && bytes.starts_with("\u{FEFF}".as_bytes()) {
            bytes.drain(..3);
        }
        // The stream is UTF-8; invalid bytes become U+FFFD, as in a browser. Lines split only on
        // ASCII bytes, so a character is never cut in two.
        let line = String::from_utf8_lossy(&bytes);
        if line.is_empty() {
            self.dispatch(events);
        } else if line.starts_with(':') {
            // A comment, such as a keep-alive.
        } else if let Some((field, value)) = line.split_once(':') {
            self.field(field, value.strip_prefix(' ').unwrap_or(value));
        } else {
            self.field(&line, "");
        }
        self.line = bytes;
        self.line.clear();
    }

    fn field(&mut self, name: &str, value: &str) {
        match name {
            "event" => value.clone_into(&mut self.event_type),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => value.clone_into(&mut self.id_buffer),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // All digits but too large for u64: ignored, like any other invalid value.
                if let Ok(ms) = value.parse() {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, events: &mut Vec<MessageEvent>) {
        self.last_event_id.clone_from(&self.id_buffer);
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        self.data.pop(); // the `\n` added after the last data line
        let event = if self.event_type.is_empty() {
            "message".to_owned()
        } else {
            std::mem::take(&mut self.event_type)
        };
        events.push(MessageEvent {
            event,
            data: std::mem::take(&mut self.data),
            last_event_id: self.last_event_id.clone(),
        });
    }
    // ANCHOR_END: interpret
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(stream: &str) -> Vec<MessageEvent> {
        SseParser::new().feed(stream.as_bytes())
    }

    fn data(events: &[MessageEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    /// The spec's first example: several data lines make one event joined by LF.
    #[test]
    fn spec_example_multi_line_data() {
        let events = parse("data: YHOO\ndata: +2\ndata: 10\n\n");
        assert_eq!(data(&events), ["YHOO\n+2\n10"]);
        assert_eq!(events[0].event, "message");
    }

    /// The spec's second example: comments, ids that persist, an `id` line that resets it, and
    /// only one leading space removed.
    #[test]
    fn spec_example_ids_and_spaces() {
        let events = parse(
            ": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
        );
        assert_eq!(
            data(&events),
            ["first event", "second event", " third event"]
        );
        let ids: Vec<&str> = events.iter().map(|e| e.last_event_id.as_str()).collect();
        assert_eq!(ids, ["1", "", ""]);
    }

    /// The spec's third example: a field line without a colon, an empty and a two-line payload,
    /// and an unfinished event at the end that is never dispatched.
    #[test]
    fn spec_example_fields_without_colon() {
        assert_eq!(data(&parse("data\n\ndata\ndata\n\ndata:")), ["", "\n"]);
    }

    /// An empty chunk between a CR and its LF changes nothing: the CR LF is still one line end,
    /// not two (a blank line that would dispatch the event early).
    #[test]
    fn an_empty_chunk_after_a_cr_is_not_a_line_end() {
        let mut parser = SseParser::new();
        assert!(parser.feed(b"data: a\r").is_empty());
        assert!(parser.feed(b"").is_empty());
        assert!(
            parser.feed(b"\n").is_empty(),
            "CR, empty chunk, LF ended an event"
        );
        assert_eq!(data(&parser.feed(b"\n")), ["a"]);
    }

    /// The spec's fourth example: the space after the colon is optional.
    #[test]
    fn spec_example_optional_space() {
        assert_eq!(
            data(&parse("data:test\n\ndata: test\n\n")),
            ["test", "test"]
        );
    }

    /// CR, LF and CR LF all end lines, and may be mixed in one stream.
    #[test]
    fn all_three_line_endings() {
        let events = parse("data: a\r\rdata: b\n\ndata: c\r\n\r\nevent: x\rdata: d\r\n\n");
        assert_eq!(data(&events), ["a", "b", "c", "d"]);
        assert_eq!(events[3].event, "x");
    }

    /// Fed one byte at a time (so every CR LF is split across chunks), the result is the same.
    #[test]
    fn chunk_boundaries_do_not_matter() {
        let stream =
            "\u{FEFF}id: 1\r\ndata: é\r\ndata: ü\r\n\r\nevent: e\rdata: x\r\r: c\ndata\n\n";
        let whole = parse(stream);
        let mut parser = SseParser::new();
        let bytewise: Vec<_> = stream.bytes().flat_map(|b| parser.feed(&[b])).collect();
        assert_eq!(whole, bytewise);
        assert_eq!(data(&whole), ["é\nü", "x", ""]);
    }

    /// A CR at the end of one chunk and an LF at the start of the next are one line ending.
    #[test]
    fn cr_lf_split_across_chunks_is_one_line_end() {
        let mut parser = SseParser::new();
        assert!(parser.feed(b"data: a\r").is_empty());
        // If the LF counted as a second line end, this would dispatch "a" now.
        assert!(parser.feed(b"\ndata: b\r").is_empty());
        let events = parser.feed(b"\n\r\n");
        assert_eq!(data(&events), ["a\nb"]);
    }

    /// One leading byte-order mark is stripped; a second is part of the field name.
    #[test]
    fn only_one_leading_bom_is_stripped() {
        assert_eq!(data(&parse("\u{FEFF}data: a\n\n")), ["a"]);
        assert!(parse("\u{FEFF}\u{FEFF}data: a\n\n").is_empty());
        // A BOM later in the stream is not special either.
        assert!(parse("data: a\n\n\u{FEFF}data: b\n\n").len() == 1);
    }

    /// The `event` field names the type; the type does not leak into the next event.
    #[test]
    fn event_type_is_per_event() {
        let events = parse("event: add\ndata: 1\n\ndata: 2\n\n");
        assert_eq!(events[0].event, "add");
        assert_eq!(events[1].event, "message");
    }

    /// An `event` with no data dispatches nothing, and its type is forgotten.
    #[test]
    fn event_without_data_is_not_dispatched() {
        let events = parse("event: lonely\n\ndata: next\n\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "message");
    }

    /// `id` persists across events and is updated even by an event that is not dispatched;
    /// an id containing NUL is ignored.
    #[test]
    fn id_persists_and_nul_is_ignored() {
        let mut parser = SseParser::new();
        let events = parser.feed(b"id: 5\ndata: a\n\ndata: b\n\nid: 6\n\nid: 7\0x\ndata: c\n\n");
        let ids: Vec<&str> = events.iter().map(|e| e.last_event_id.as_str()).collect();
        assert_eq!(ids, ["5", "5", "6"]);
        assert_eq!(parser.last_event_id(), "6");
    }

    /// `retry` is taken only when its value is all ASCII digits.
    #[test]
    fn retry_only_when_all_digits() {
        let mut parser = SseParser::new();
        parser.feed(b"retry: 3000\n");
        assert_eq!(parser.retry(), Some(Duration::from_millis(3000)));
        for bad in [
            "retry: 10a\n",
            "retry: -1\n",
            "retry:\n",
            "retry: 1.5\n",
            "retry:  20\n",
        ] {
            parser.feed(bad.as_bytes());
            assert_eq!(parser.retry(), Some(Duration::from_millis(3000)), "{bad:?}");
        }
    }

    /// Comments and unknown fields are ignored; field names are case-sensitive.
    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        let events = parse(": keep-alive\nfoo: bar\nDATA: shout\ndata: ok\n\n");
        assert_eq!(data(&events), ["ok"]);
    }

    /// Only the first colon separates name and value.
    #[test]
    fn value_may_contain_colons() {
        assert_eq!(data(&parse("data: a: b:c\n\n")), ["a: b:c"]);
    }

    /// Invalid UTF-8 is replaced, not rejected, as a browser does.
    #[test]
    fn invalid_utf8_becomes_replacement_character() {
        let events = SseParser::new().feed(b"data: a\xffb\n\n");
        assert_eq!(data(&events), ["a\u{FFFD}b"]);
    }
}
