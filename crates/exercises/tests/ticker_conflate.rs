//! Tests of exercise `ticker_conflate`: run with `cargo run -p exercises -- check ticker_conflate`.

use exercises::ticker_conflate::{PendingQuotes, Quote};

fn quote(symbol: &str, price_cents: i64) -> Quote {
    Quote {
        symbol: symbol.to_string(),
        price_cents,
    }
}

/// However many quotes arrive, one per symbol waits, and it is the newest.
#[test]
fn a_flood_of_quotes_keeps_one_per_symbol_the_newest() {
    let mut pending = PendingQuotes::new();
    for price in 0..10_000 {
        pending.push(quote(
            ["ACME", "GLOBEX", "INITECH"][price as usize % 3],
            price,
        ));
    }
    assert_eq!(
        pending.len(),
        3,
        "10,000 quotes of 3 symbols must leave 3 waiting, one per symbol; see the TODOs in \
         exercises/ticker_conflate.rs"
    );
    assert_eq!(
        pending.pop(),
        Some(quote("ACME", 9_999)),
        "ACME's newest price is 99.99"
    );
    assert_eq!(pending.pop(), Some(quote("GLOBEX", 9_997)));
    assert_eq!(pending.pop(), Some(quote("INITECH", 9_998)));
    assert_eq!(pending.pop(), None);
    assert!(pending.is_empty());
}

/// A busy symbol does not jump the queue: the symbol that has waited longest goes first.
#[test]
fn a_replaced_quote_keeps_its_symbols_place() {
    let mut pending = PendingQuotes::new();
    pending.push(quote("ACME", 1));
    pending.push(quote("GLOBEX", 2));
    pending.push(quote("ACME", 3));
    assert_eq!(
        pending.pop(),
        Some(quote("ACME", 3)),
        "ACME waited first, and its newest price replaced the older one in place"
    );
    pending.push(quote("ACME", 4));
    assert_eq!(
        pending.pop(),
        Some(quote("GLOBEX", 2)),
        "then GLOBEX, which waited next"
    );
    assert_eq!(
        pending.pop(),
        Some(quote("ACME", 4)),
        "then ACME again, queued anew"
    );
    assert_eq!(pending.len(), 0);
}
