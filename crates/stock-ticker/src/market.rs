//! The simulated market: fictional symbols whose prices follow a geometric random walk, driven
//! by one seeded generator, so that the same seed always gives the same quotes in the same order.
//!
//! Nothing here knows about time, sockets or clients: [`Market::step`] moves one symbol and
//! returns its new [`Quote`]. The server calls it on a timer (see `lib.rs`); the tests call it in
//! a loop. Keeping the simulation pure is what makes "same seed, same prices" testable.
//!
//! Prices are integer cents, as an exchange quotes them in ticks: no float ever reaches a client,
//! so `0.1 + 0.2` never shows up as `0.30000000000000004` on the page.

use serde::{Deserialize, Serialize};

// ANCHOR: symbol_spec
/// One listed symbol and how its price moves.
#[derive(Debug, Clone, PartialEq)]
pub struct SymbolSpec {
    /// The ticker symbol clients subscribe with: 1 to 8 ASCII capital letters or digits.
    pub symbol: String,
    /// The company name shown on the page.
    pub name: String,
    /// The opening price, in cents.
    pub open_cents: u64,
    /// The mean log-return of one update of this symbol (0.0001 = 0.01 % up per update).
    pub drift: f64,
    /// The standard deviation of the log-return of one update (0.002 = moves of about 0.2 %).
    pub volatility: f64,
}
// ANCHOR_END: symbol_spec

impl SymbolSpec {
    /// A symbol with the default behaviour: opens at 100.00, no drift, 0.2 % volatility.
    /// Used for symbols named on the command line.
    pub fn plain(symbol: &str) -> Self {
        Self {
            symbol: symbol.to_owned(),
            name: symbol.to_owned(),
            open_cents: dollars(100, 0),
            drift: 0.0,
            volatility: 0.002,
        }
    }
}

/// Whether `symbol` is a valid ticker symbol: 1 to 8 ASCII capital letters or digits. Clients
/// send symbols back in URLs and JSON; a small alphabet means they never need escaping.
pub fn is_valid_symbol(symbol: &str) -> bool {
    (1..=8).contains(&symbol.len())
        && symbol
            .bytes()
            .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit())
}

/// `dollars` and `cents` as a whole number of cents, the unit of every price here.
pub const fn dollars(dollars: u64, cents: u64) -> u64 {
    dollars * 100 + cents
}

/// The eight fictional companies the demo lists by default, each with its own temperament.
pub fn default_symbols() -> Vec<SymbolSpec> {
    let spec = |symbol: &str, name: &str, open_cents, drift, volatility| SymbolSpec {
        symbol: symbol.to_owned(),
        name: name.to_owned(),
        open_cents,
        drift,
        volatility,
    };
    vec![
        spec("ACME", "Acme Corporation", dollars(142, 50), 0.0002, 0.003),
        spec("GLBX", "Globex", dollars(87, 20), 0.0, 0.002),
        spec("INIT", "Initech", dollars(23, 75), -0.0001, 0.004),
        spec("UMBR", "Umbrella Corp", dollars(310, 0), 0.0001, 0.0025),
        spec("HOOL", "Hooli", dollars(1_204, 0), 0.0003, 0.0015),
        spec("WONK", "Wonka Industries", dollars(56, 40), 0.0, 0.005),
        spec("STRK", "Stark Industries", dollars(455, 10), 0.0002, 0.002),
        spec("CYBD", "Cyberdyne Systems", dollars(9, 99), 0.0, 0.008),
    ]
}

// ANCHOR: quote
/// One price update of one symbol: what every client receives, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    /// The market-wide sequence number: one more for every update of any symbol, so a client
    /// can order quotes and tell which is newer. Also the event `id` on the SSE stream.
    pub seq: u64,
    /// The ticker symbol.
    pub symbol: String,
    /// The last price, in cents.
    pub price: u64,
    /// The opening price, in cents: `change` is measured from it.
    pub open: u64,
    /// The highest price since the open, in cents.
    pub high: u64,
    /// The lowest price since the open, in cents.
    pub low: u64,
    /// `price - open`, in cents.
    pub change: i64,
    /// `change` as a percentage of `open`, rounded to two decimals.
    pub change_pct: f64,
}
// ANCHOR_END: quote

/// A symbol's spec and where its price is now.
#[derive(Debug)]
struct Listing {
    spec: SymbolSpec,
    price: u64,
    high: u64,
    low: u64,
}

impl Listing {
    fn quote(&self, seq: u64) -> Quote {
        let open = self.spec.open_cents;
        let change = self.price as i64 - open as i64;
        Quote {
            seq,
            symbol: self.spec.symbol.clone(),
            price: self.price,
            open,
            high: self.high,
            low: self.low,
            change,
            change_pct: (change as f64 * 10_000.0 / open as f64).round() / 100.0,
        }
    }
}

// ANCHOR: market
/// The whole market: every listing and the one generator that moves them.
#[derive(Debug)]
pub struct Market {
    /// The only source of randomness. Every update draws from it in the same order, so the
    /// sequence of quotes depends on the seed alone, not on timing or on how many clients listen.
    random: SplitMix64,
    /// The listed symbols, in the order they were configured; their index is their identity
    /// inside the server.
    listings: Vec<Listing>,
    /// The `seq` of the last quote produced (0 before the first update).
    last_seq: u64,
}

impl Market {
    /// Opens the market: every symbol at its opening price. `symbols` must not be empty.
    pub fn open(symbols: Vec<SymbolSpec>, seed: u64) -> Self {
        assert!(!symbols.is_empty(), "a market needs at least one symbol");
        let listings = symbols
            .into_iter()
            .map(|spec| Listing {
                price: spec.open_cents,
                high: spec.open_cents,
                low: spec.open_cents,
                spec,
            })
            .collect();
        Self {
            random: SplitMix64::new(seed),
            listings,
            last_seq: 0,
        }
    }

    /// The current quote of every symbol, in configuration order. Before the first update they
    /// carry `seq` 0: the opening prices.
    pub fn quotes(&self) -> Vec<Quote> {
        self.listings
            .iter()
            .map(|listing| listing.quote(0))
            .collect()
    }

    /// Moves one symbol, picked at random, by one step of its random walk, and returns its index
    /// and new quote.
    ///
    /// A geometric random walk multiplies the price by `exp(r)`, with `r` a normal draw of mean
    /// `drift - volatility²/2` and standard deviation `volatility`: moves are proportional to the
    /// price (a 1 % move is 1 % at any price) and the price never goes below zero. The `-σ²/2`
    /// term makes `drift` the mean growth of the price itself, as in the Black-Scholes model.
    pub fn step(&mut self) -> (usize, Quote) {
        let index = self.random.below(self.listings.len());
        let normal = self.random.standard_normal();
        self.last_seq += 1;
        let listing = &mut self.listings[index];
        let SymbolSpec {
            drift, volatility, ..
        } = listing.spec;
        let log_return = drift - volatility * volatility / 2.0 + volatility * normal;
        let moved = (listing.price as f64 * log_return.exp()).round();
        // Rounding to whole cents is the exchange's tick size; one cent is the floor, so a
        // collapsing company still has a price.
        listing.price = if moved >= 1.0 { moved as u64 } else { 1 };
        listing.high = listing.high.max(listing.price);
        listing.low = listing.low.min(listing.price);
        (index, listing.quote(self.last_seq))
    }
}
// ANCHOR_END: market

// ANCHOR: prng
/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014):
/// a 64-bit counter passed through a mixing function. Ten lines, no dependency, and its output
/// for a seed is fixed by the algorithm, so a seed gives the same market on every version of
/// this program. It is not for cryptography; nothing here needs that.
///
/// (The `rand` crates would also do: `rand_chacha::ChaCha8Rng::seed_from_u64` is reproducible
/// too. We need 64 random bits and a normal draw, which is less code than the dependency.)
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose whole future output is decided by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform number in `(0, 1]`: the top 53 bits (an `f64`'s precision), never zero, so its
    /// logarithm is finite.
    fn unit_open_below(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A uniform index below `n` (Lemire's multiply-shift). Its bias is at most `n / 2^64`,
    /// far below anything a market of a few symbols could show.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A draw from the standard normal distribution (mean 0, standard deviation 1), by the
    /// Box-Muller transform of two uniform draws.
    pub fn standard_normal(&mut self) -> f64 {
        let radius = (-2.0 * self.unit_open_below().ln()).sqrt();
        let angle = std::f64::consts::TAU * self.unit_open_below();
        radius * angle.cos()
    }
}
// ANCHOR_END: prng

#[cfg(test)]
mod tests {
    use super::*;

    /// The generator is SplitMix64 itself: its published first outputs for seed 0.
    #[test]
    fn splitmix64_matches_the_reference_outputs() {
        let mut random = SplitMix64::new(0);
        assert_eq!(random.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(random.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(random.next_u64(), 0x06C4_5D18_8009_454F);
    }

    /// Same seed, same quotes, in the same order; another seed, other quotes.
    #[test]
    fn same_seed_gives_the_same_quotes() {
        let run = |seed| {
            let mut market = Market::open(default_symbols(), seed);
            (0..1000).map(|_| market.step()).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    /// Sequence numbers count every update; high and low bound the price; change is from open.
    #[test]
    fn quotes_are_consistent() {
        let mut market = Market::open(default_symbols(), 7);
        for expected_seq in 1..=10_000 {
            let (index, quote) = market.step();
            assert_eq!(quote.seq, expected_seq);
            assert_eq!(quote.symbol, default_symbols()[index].symbol);
            assert!(quote.low <= quote.price && quote.price <= quote.high);
            assert!(quote.low <= quote.open && quote.open <= quote.high);
            assert_eq!(quote.change, quote.price as i64 - quote.open as i64);
            assert!(quote.price >= 1);
        }
    }

    /// Every symbol gets updates, and the normal draws have about the right mean and spread.
    #[test]
    fn draws_are_spread_as_intended() {
        let mut random = SplitMix64::new(1);
        let mut hits = [0u32; 8];
        for _ in 0..80_000 {
            hits[random.below(8)] += 1;
        }
        assert!(
            hits.iter().all(|&n| (9_000..11_000).contains(&n)),
            "{hits:?}"
        );
        let draws: Vec<f64> = (0..100_000).map(|_| random.standard_normal()).collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let variance = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / draws.len() as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((variance - 1.0).abs() < 0.02, "variance {variance}");
    }

    /// Symbols are short capitals and digits, nothing that would need escaping in a URL.
    #[test]
    fn symbol_validation() {
        for good in ["A", "ACME", "BRK2", "ABCDEFGH"] {
            assert!(is_valid_symbol(good), "{good}");
        }
        for bad in ["", "acme", "AC ME", "ABCDEFGHI", "A,B", "É"] {
            assert!(!is_valid_symbol(bad), "{bad}");
        }
    }
}
