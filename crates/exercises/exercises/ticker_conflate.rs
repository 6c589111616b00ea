//! Exercise `ticker_conflate` (chapter: Stock ticker): conflate a slow client's quotes.
//!
//! Goal: a client on a slow link cannot take every quote, and a queue of old prices helps nobody:
//! by the time it is sent, a newer price exists. `PendingQuotes` is what a session holds for a
//! slow client between writes: at most ONE quote per symbol, always the newest (a newer quote
//! replaces the pending one of its symbol), handed out oldest-waiting symbol first, so a busy
//! symbol cannot starve a quiet one. Its size is bounded by the number of symbols, whatever the
//! feed's rate.
//!
//! Check with `cargo run -p exercises -- check ticker_conflate`; stuck? `-- hint ticker_conflate`.

use std::collections::VecDeque;

/// One price of one symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// The ticker symbol, such as `ACME`.
    pub symbol: String,
    /// The price in whole cents.
    pub price_cents: i64,
}

/// The quotes waiting to be written to one slow client, conflated per symbol.
// TODO: a plain queue grows without bound and hands out stale prices. Choose fields that keep
// at most one quote per symbol (the newest) AND remember which symbol has waited longest.
#[derive(Debug, Default)]
pub struct PendingQuotes {
    /// Every quote, in arrival order.
    queue: VecDeque<Quote>,
}

impl PendingQuotes {
    /// Nothing waiting.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `quote`; it replaces a waiting quote of the same symbol, which keeps its place.
    pub fn push(&mut self, quote: Quote) {
        // TODO: replace a waiting quote of the same symbol instead of queueing another.
        self.queue.push_back(quote);
    }

    /// The quote to write next: the newest of the symbol that has waited longest.
    pub fn pop(&mut self) -> Option<Quote> {
        self.queue.pop_front()
    }

    /// How many quotes are waiting: at most one per symbol.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}
