//! Exercise `ticker_conflate` (chapter: Stock ticker), reference solution.
//!
//! Goal: a client on a slow link cannot take every quote, and a queue of old prices helps nobody:
//! by the time it is sent, a newer price exists. `PendingQuotes` is what a session holds for a
//! slow client between writes: at most ONE quote per symbol, always the newest (a newer quote
//! replaces the pending one of its symbol), handed out oldest-waiting symbol first, so a busy
//! symbol cannot starve a quiet one. Its size is bounded by the number of symbols, whatever the
//! feed's rate.
//!
//! Check with `cargo run -p exercises -- check ticker_conflate`.

use std::collections::{HashMap, VecDeque};

/// One price of one symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// The ticker symbol, such as `ACME`.
    pub symbol: String,
    /// The price in whole cents.
    pub price_cents: i64,
}

/// The quotes waiting to be written to one slow client, conflated per symbol.
#[derive(Debug, Default)]
pub struct PendingQuotes {
    /// The newest quote of each symbol that has one waiting.
    latest: HashMap<String, Quote>,
    /// The symbols with a quote waiting, in the order they started waiting.
    order: VecDeque<String>,
}

impl PendingQuotes {
    /// Nothing waiting.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `quote`; it replaces a waiting quote of the same symbol, which keeps its place.
    pub fn push(&mut self, quote: Quote) {
        if !self.latest.contains_key(&quote.symbol) {
            self.order.push_back(quote.symbol.clone());
        }
        self.latest.insert(quote.symbol.clone(), quote);
    }

    /// The quote to write next: the newest of the symbol that has waited longest.
    pub fn pop(&mut self) -> Option<Quote> {
        let symbol = self.order.pop_front()?;
        self.latest.remove(&symbol)
    }

    /// How many quotes are waiting: at most one per symbol.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}
