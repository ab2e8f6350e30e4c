//! Realistic shop sessions for `strom demo`: visitors land on a page, search, view products,
//! add to cart, and most of them check out within seconds; the rest leave their cart. The
//! traffic is deterministic for a seed and a sequence of clock readings (time is passed in),
//! and every event is valid against the example catalog (`catalog/`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde_json::{Value, json};

const CATEGORIES: [&str; 5] = ["shoes", "shirts", "bags", "hats", "socks"];
const QUERIES: [&str; 6] = ["running shoes", "linen shirt", "weekender bag", "wool hat", "socks 3-pack", "sale"];
const PAGES: [(&str, &str); 4] = [("/", "Home"), ("/sale", "Sale"), ("/new", "New arrivals"), ("/about", "About us")];

/// Where a visitor is in their visit.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    Landing,
    Browsing {
        views_left: u32,
    },
    /// Adds the product to the cart.
    AddingToCart,
    /// Checks out, or leaves the cart behind.
    Deciding,
    Leaving,
}

#[derive(Debug)]
struct Session {
    user: String,
    anonymous: String,
    step: Step,
    cart: Option<Cart>,
    known: bool,
}

#[derive(Clone, Debug)]
struct Cart {
    id: String,
    sku: String,
    category: &'static str,
    price: f64,
    quantity: u32,
}

/// The shop: a fixed number of concurrent visits, each replaced by a new visitor when it ends.
pub struct Shop {
    rng: fastrand::Rng,
    sessions: Vec<Session>,
    /// (due time, session index): the next step of each visit.
    due: BinaryHeap<Reverse<(i64, usize)>>,
    /// The chance that a visitor with a cart checks out (a failing payment page lowers it).
    pub checkout_probability: f64,
    carts: u64,
    visitors: u64,
    users: u64,
}

impl Shop {
    pub fn new(seed: u64, sessions: usize, users: u64, now_ms: i64) -> Shop {
        let mut shop = Shop {
            rng: fastrand::Rng::with_seed(seed),
            sessions: Vec::with_capacity(sessions),
            due: BinaryHeap::new(),
            checkout_probability: 0.7,
            carts: 0,
            visitors: 0,
            users: users.max(1),
        };
        for index in 0..sessions {
            let session = shop.new_session();
            shop.sessions.push(session);
            // Spread the first steps over a few seconds, not all at once.
            let first = now_ms + shop.rng.i64(0..5000);
            shop.due.push(Reverse((first, index)));
        }
        shop
    }

    fn new_session(&mut self) -> Session {
        self.visitors += 1;
        let user = format!("user-{:06}", self.rng.u64(0..self.users));
        Session {
            anonymous: format!("anon-{:08x}", self.rng.u32(..)),
            user,
            step: Step::Landing,
            cart: None,
            known: self.rng.f64() < 0.3,
        }
    }

    /// The events due at or before `now_ms`, in time order, each stamped with its due time.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<Value>) {
        while let Some(&Reverse((due, index))) = self.due.peek() {
            if due > now_ms {
                break;
            }
            self.due.pop();
            let (event, wait_ms) = self.step(index, due);
            if let Some(event) = event {
                out.push(event);
            }
            self.due.push(Reverse((due + wait_ms, index)));
        }
    }

    /// One step of a visit: the event it sends (if any) and the pause before the next step.
    fn step(&mut self, index: usize, now_ms: i64) -> (Option<Value>, i64) {
        let think = 800 + self.rng.i64(0..4000);
        let step = self.sessions[index].step;
        let (event, next) = match step {
            Step::Landing => {
                let (path, title) = PAGES[self.rng.usize(0..PAGES.len())];
                let page = json!({"type": "page", "name": title, "properties": {
                    "path": path, "url": format!("https://shop.example{path}"), "title": title}});
                let next = match self.rng.f64() {
                    p if p < 0.15 => Step::Leaving,
                    _ => Step::Browsing { views_left: 1 + self.rng.u32(0..4) },
                };
                (Some(page), next)
            }
            Step::Browsing { views_left } => {
                if self.rng.f64() < 0.2 {
                    let query = QUERIES[self.rng.usize(0..QUERIES.len())];
                    let searched =
                        json!({"type": "track", "event": "ProductsSearched", "properties": {"query": query}});
                    (Some(searched), step)
                } else {
                    let (sku, category, price) = self.product();
                    let viewed = json!({"type": "track", "event": "ProductViewed", "properties": {
                        "sku": sku, "category": category, "price": price, "currency": "EUR"}});
                    let next = if views_left > 1 {
                        Step::Browsing { views_left: views_left - 1 }
                    } else if self.rng.f64() < 0.45 {
                        self.carts += 1;
                        let cart = Cart {
                            id: format!("cart-{:06}", self.carts),
                            sku,
                            category,
                            price,
                            quantity: 1 + self.rng.u32(0..3),
                        };
                        self.sessions[index].cart = Some(cart);
                        Step::AddingToCart
                    } else {
                        Step::Leaving
                    };
                    (Some(viewed), next)
                }
            }
            Step::AddingToCart => match &self.sessions[index].cart {
                Some(cart) => {
                    let added = json!({"type": "track", "event": "AddToCart", "properties": {
                        "cart_id": cart.id, "sku": cart.sku, "category": cart.category,
                        "price": cart.price, "quantity": cart.quantity, "currency": "EUR"}});
                    (Some(added), Step::Deciding)
                }
                None => (None, Step::Leaving),
            },
            Step::Deciding => match self.sessions[index].cart.take() {
                Some(cart) if self.rng.f64() < self.checkout_probability => {
                    let value = (cart.price * f64::from(cart.quantity) * 100.0).round() / 100.0;
                    let checkout = json!({"type": "track", "event": "Checkout", "properties": {
                        "cart_id": cart.id, "value": value, "currency": "EUR", "items": cart.quantity}});
                    (Some(checkout), Step::Leaving)
                }
                _ => (None, Step::Leaving),
            },
            Step::Leaving => {
                // A new visitor takes this place after a pause.
                let session = self.new_session();
                self.sessions[index] = session;
                return (None, 2000 + self.rng.i64(0..8000));
            }
        };
        self.sessions[index].step = next;
        let event = event.map(|mut event| {
            let session = &self.sessions[index];
            event["anonymousId"] = json!(session.anonymous);
            if session.known {
                event["userId"] = json!(session.user);
            }
            event["messageId"] = json!(format!("{}-{now_ms}-{index}", session.anonymous));
            event["timestamp"] = json!(rfc3339(now_ms));
            event
        });
        (event, think)
    }

    fn product(&mut self) -> (String, &'static str, f64) {
        let number = self.rng.u32(0..500);
        let category = CATEGORIES[(number % 5) as usize];
        let price = 5.0 + f64::from(number % 97) * 1.5;
        (format!("SKU-{number:05}"), category, price)
    }
}

/// Milliseconds since the epoch as RFC 3339 in UTC (the tracking spec's timestamps).
pub fn rfc3339(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rest = ms.rem_euclid(86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn sessions_add_to_cart_and_mostly_check_out() {
        let mut shop = Shop::new(7, 100, 1000, 0);
        let mut events = Vec::new();
        for second in 0..600 {
            shop.tick(second * 1000, &mut events);
        }
        let count = |name: &str| events.iter().filter(|e| e["event"] == name).count();
        let (adds, checkouts) = (count("AddToCart"), count("Checkout"));
        assert!(events.len() > 5000, "{}", events.len());
        assert!(adds > 100 && checkouts > adds / 3 && checkouts < adds, "{adds} adds, {checkouts} checkouts");
        // Every checkout closes a cart that was added before it, by the same visitor.
        let mut carts = std::collections::HashMap::new();
        for event in &events {
            let cart = event["properties"]["cart_id"].to_string();
            match event["event"].as_str() {
                Some("AddToCart") => assert!(carts.insert(cart, event["anonymousId"].clone()).is_none()),
                Some("Checkout") => assert_eq!(carts.get(&cart), Some(&event["anonymousId"]), "{event}"),
                _ => {}
            }
        }
        // Deterministic for a seed.
        let mut again = Vec::new();
        let mut shop = Shop::new(7, 100, 1000, 0);
        for second in 0..600 {
            shop.tick(second * 1000, &mut again);
        }
        assert_eq!(events, again);
    }
}
