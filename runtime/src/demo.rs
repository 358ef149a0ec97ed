//! Synthetic data for `trackc demo`: the example schema, filled with
//! contacts, subscriptions, invoices and orders that exercise every
//! example track. Deterministic: the same count gives the same data.

use crate::db::{format_sqlite_timestamp, Dialect, Store};
use crate::error::Result;

/// The example schema (PostgreSQL dialect), as shipped in `tracks/`.
pub const SCHEMA: &str = include_str!("../../tracks/schema.sql");

/// The example tracks, by file name.
pub const TRACKS: &[(&str, &str)] = &[
    ("tracks/dunning.dt", include_str!("../../tracks/dunning.dt")),
    (
        "tracks/lead_scoring.dt",
        include_str!("../../tracks/lead_scoring.dt"),
    ),
    (
        "tracks/onboarding.dt",
        include_str!("../../tracks/onboarding.dt"),
    ),
    (
        "tracks/order_followup.dt",
        include_str!("../../tracks/order_followup.dt"),
    ),
    (
        "tracks/qualified_handoff.dt",
        include_str!("../../tracks/qualified_handoff.dt"),
    ),
    (
        "tracks/renewals.dt",
        include_str!("../../tracks/renewals.dt"),
    ),
    ("tracks/winback.dt", include_str!("../../tracks/winback.dt")),
];

/// The schema as `dialect` runs it (SQLite: an auto-increment key for
/// `BIGSERIAL`).
pub fn schema_for(dialect: Dialect) -> String {
    match dialect {
        Dialect::Postgres => SCHEMA.to_string(),
        Dialect::Sqlite => SCHEMA.replace("BIGSERIAL PRIMARY KEY", "INTEGER PRIMARY KEY"),
        Dialect::MySql => SCHEMA
            .replace("BIGSERIAL PRIMARY KEY", "BIGINT AUTO_INCREMENT PRIMARY KEY")
            .replace("TIMESTAMPTZ", "DATETIME(6)"),
    }
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn ts(dialect: Dialect, micros: i64) -> String {
    match dialect {
        Dialect::Sqlite => format!("'{}'", format_sqlite_timestamp(micros)),
        Dialect::Postgres => format!("to_timestamp({})", micros as f64 / 1e6),
        // The session's time zone is UTC (db::mysql).
        Dialect::MySql => format!("'{}'", format_sqlite_timestamp(micros)),
    }
}

const DAY: i64 = 86_400_000_000;

/// The size of a part of the demo's filling script (see `populate`).
const PART_BYTES: usize = 256 << 10;

/// Creates the example tables and fills them with `contacts` contacts
/// (and about a third as many subscriptions, invoices and orders), raising
/// `order_placed` for each order. Does nothing if `contacts` exists.
pub fn populate(store: &mut dyn Store, contacts: u64, now: i64) -> Result<bool> {
    let exists = store.query_i64("SELECT count(*) FROM contacts").is_ok();
    if exists {
        return Ok(false);
    }
    let d = store.dialect();
    // One transaction in parts of about a thousand rows: all or nothing,
    // in time linear in the number of contacts.
    let mut parts = vec![schema_for(d)];
    let mut sql = String::new();
    let mut rng = Rng(42);
    let plans = ["free", "trial", "pro", "enterprise"];
    let countries = ["DE", "AT", "CH", "US", "FR", "PT", "GB", "unknown"];
    let batch = 1000;
    let mut id = 1u64;
    while id <= contacts {
        let end = (id + batch).min(contacts + 1);
        sql.push_str(
            "INSERT INTO contacts (id, email, name, plan, score, country, stage, signup_at, \
             last_seen_at, opted_out) VALUES\n",
        );
        let rows: Vec<String> = (id..end)
            .map(|i| {
                let plan = plans[rng.below(4) as usize];
                let country = countries[rng.below(8) as usize];
                let country = if country == "unknown" { "NULL".to_string() } else { format!("'{country}'") };
                let signup = now - rng.below(90) as i64 * DAY - rng.below(DAY as u64) as i64;
                let seen = if rng.below(5) == 0 {
                    "NULL".to_string()
                } else {
                    ts(d, now - rng.below(120) as i64 * DAY)
                };
                format!(
                    "({i}, 'contact{i}@example.com', 'Contact {i}', '{plan}', {}, {country}, 'new', {}, {seen}, {})",
                    rng.below(100),
                    ts(d, signup),
                    if rng.below(20) == 0 { "TRUE" } else { "FALSE" }
                )
            })
            .collect();
        sql.push_str(&rows.join(",\n"));
        sql.push_str(";\n");
        parts.push(std::mem::take(&mut sql));
        id = end;
    }
    // Subscriptions, invoices and orders for every third contact.
    let mut order_events = Vec::new();
    for i in (1..=contacts).step_by(3) {
        let renews = now + rng.below(60) as i64 * DAY;
        sql.push_str(&format!(
            "INSERT INTO subscriptions (id, contact_id, plan, mrr, renews_at, auto_renew) VALUES ({i}, {i}, 'pro', {}, {}, TRUE);\n",
            [49.0, 199.0, 1500.0][rng.below(3) as usize],
            ts(d, renews)
        ));
        let due = now - rng.below(30) as i64 * DAY;
        let paid = if rng.below(2) == 0 {
            ts(d, due)
        } else {
            "NULL".into()
        };
        sql.push_str(&format!(
            "INSERT INTO invoices (id, contact_id, amount, due_at, paid_at, attempts) VALUES ({i}, {i}, {}, {}, {paid}, {});\n",
            [0.0, 49.0, 199.0][rng.below(3) as usize],
            ts(d, due),
            rng.below(4)
        ));
        if rng.below(3) == 0 {
            sql.push_str(&format!(
                "INSERT INTO orders (id, contact_id, total, status, placed_at) VALUES ({i}, {i}, {}, '{}', {});\n",
                rng.below(500),
                ["placed", "shipped", "cancelled"][rng.below(3) as usize],
                ts(d, now - rng.below(10) as i64 * DAY)
            ));
            order_events.push(i);
        }
        if sql.len() > PART_BYTES {
            parts.push(std::mem::take(&mut sql));
        }
    }
    parts.push(sql);
    // The orders' events, raised by SQL as any system may (docs/runtime.md).
    for chunk in order_events.chunks(1000) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|i| format!("('order_placed', '{i}', {now})"))
            .collect();
        parts.push(format!(
            "INSERT INTO trackc_events (name, key, created_at) VALUES {};",
            rows.join(", ")
        ));
    }
    store.execute_script(&parts)?;
    Ok(true)
}
