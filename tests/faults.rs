//! Database faults under the store, against the PostgreSQL of this
//! machine: a COMMIT that succeeded but whose answer was lost (through a
//! fault-injecting relay), a row lock held by another session for longer
//! than the lock timeout. Each ends with every effect exactly once.
//!
//! Restarts of a private cluster and terminated connections during whole
//! runs are in `tests/runtime.rs`; the group's faults in `tests/group.rs`.

#[path = "support/db.rs"]
mod db;
#[path = "support/relay.rs"]
mod relay;

use db::{server_of, Db};
use relay::Relay;
use std::time::{Duration, Instant};
use trackc_compiler::value::Value;
use trackc_runtime::db::{
    Change, DbUrl, EffectRow, OutboxKind, OutboxRow, RecordState, Statement, Store,
};

const RECORDS: i64 = 200;

fn items(db: &mut Db) {
    db.execute(&format!(
        "CREATE TABLE items (id BIGINT PRIMARY KEY, counter INT NOT NULL DEFAULT 0);
         INSERT INTO items (id) SELECT generate_series(1, {RECORDS});"
    ));
}

/// Every record of a block moves from sequence number `seq - 1` (no
/// state, for the first block) to `seq`, adding one to its item's counter and writing an outbox
/// row: effects that show at once if a change is applied twice.
fn block(seq: i64) -> Vec<Change> {
    (1..=RECORDS)
        .map(|i| Change {
            key: i.to_string(),
            expected_seq: (seq > 1).then_some(seq - 1),
            state: RecordState {
                step: Some(format!("step{seq}")),
                entered_at: seq,
                wake_at: None,
                seq,
                run_id: seq,
            },
            effects: vec![
                EffectRow::Sql(Statement {
                    sql: "UPDATE items SET counter = counter + 1 WHERE id = :id".into(),
                    params: vec![("id".into(), Value::Int(i))],
                }),
                EffectRow::Outbox(OutboxRow {
                    id: format!("t/{i}/{seq}/0"),
                    kind: OutboxKind::Webhook,
                    track: "t".into(),
                    key: i.to_string(),
                    target: "http://127.0.0.1:9/hook".into(),
                    recipient: None,
                    payload: "{}".into(),
                    at: seq,
                }),
            ],
            history: None,
        })
        .collect()
}

fn open(url: &str) -> Box<dyn Store> {
    trackc_runtime::db::open(&DbUrl::parse(url).unwrap()).unwrap()
}

/// The exactly-once picture after blocks 1..=`blocks`.
fn check_once(db: &mut Db, blocks: i64) {
    assert_eq!(
        db.count("SELECT CAST(sum(counter) AS BIGINT) FROM items"),
        RECORDS * blocks,
        "each record's action SQL ran once per block"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM items WHERE counter <> (SELECT min(counter) FROM items)"),
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM trackc_outbox"),
        RECORDS * blocks
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM trackc_state WHERE track = 't' AND seq = {blocks}"
        )),
        RECORDS
    );
}

#[test]
fn a_commit_whose_answer_was_lost_is_decided_again_and_changes_nothing_twice() {
    let Some(mut db) = Db::postgres("lostcommit") else {
        return;
    };
    items(&mut db);
    let relay = Relay::start(server_of(&db.url).parse().unwrap());
    let through_relay = db.url.replace(&server_of(&db.url), &relay.addr.to_string());
    let mut store = open(&through_relay);
    let connections = relay.connections();
    // New records (INSERT … ON CONFLICT DO NOTHING), then records that
    // move on (UPDATE … WHERE seq = expected): both paths of a block.
    for seq in 1..=2 {
        relay.lose_commit_answers(1);
        let applied = store
            .writer()
            .apply("t", &block(seq), None)
            .unwrap_or_else(|e| panic!("block {seq}: {e}"));
        assert_eq!(
            relay.commit_answers_lost(),
            seq as usize,
            "the fault happened"
        );
        // The answer was lost after the server committed: the try on the
        // new connection finds every state written and does nothing.
        assert_eq!(
            (applied.changes, applied.stale, applied.outbox, applied.sql),
            (0, RECORDS as u64, 0, 0),
            "block {seq}: the second try wrote nothing"
        );
        check_once(&mut db, seq);
    }
    assert!(
        relay.connections() >= connections + 2,
        "the store reconnected after each lost answer"
    );
    // And the store goes on working on its new connection.
    let applied = store.writer().apply("t", &block(3), None).unwrap();
    assert_eq!(applied.changes, RECORDS as u64);
    check_once(&mut db, 3);
}

/// Every trackc session gets the server-side timeouts that keep a hung
/// statement, a held lock or a client stopped inside a transaction from
/// blocking the group, unless the URL sets its own.
#[test]
fn sessions_get_the_timeouts_unless_the_url_sets_them() {
    let Some(db) = Db::postgres("timeouts") else {
        return;
    };
    let seconds = |store: &mut Box<dyn Store>, name: &str| {
        store
            .query_i64(&format!(
                "SELECT CAST(EXTRACT(epoch FROM CAST(current_setting('{name}') AS interval)) \
                 AS BIGINT)"
            ))
            .unwrap()
    };
    let mut store = open(&db.url);
    assert_eq!(seconds(&mut store, "statement_timeout"), 120);
    assert_eq!(seconds(&mut store, "lock_timeout"), 10);
    assert_eq!(
        seconds(&mut store, "idle_in_transaction_session_timeout"),
        60
    );
    let mut store = open(&format!("{}?options=-c%20lock_timeout%3D2s", db.url));
    assert_eq!(seconds(&mut store, "lock_timeout"), 2);
    assert_eq!(
        seconds(&mut store, "idle_in_transaction_session_timeout"),
        60
    );
}

#[test]
fn a_row_lock_held_past_the_lock_timeout_is_waited_out() {
    let Some(mut db) = Db::postgres("rowlock") else {
        return;
    };
    items(&mut db);
    let held = Duration::from_secs(3);
    // Another session locks item 7, which the block's action SQL updates,
    // and keeps it for longer than the store's lock timeout (300 ms).
    let (locked_tx, locked) = std::sync::mpsc::channel();
    let url = db.url.clone();
    let holder = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .batch_execute("BEGIN; SELECT * FROM items WHERE id = 7 FOR UPDATE")
                .await
                .unwrap();
            locked_tx.send(()).unwrap();
            tokio::time::sleep(held).await;
            client.batch_execute("COMMIT").await.unwrap();
        });
    });
    locked.recv().unwrap();
    let mut store = open(&format!("{}?options=-c%20lock_timeout%3D300ms", db.url));
    let started = Instant::now();
    let applied = store.writer().apply("t", &block(1), None).unwrap();
    let waited = started.elapsed();
    holder.join().unwrap();
    assert_eq!(applied.changes, RECORDS as u64);
    assert!(
        store.options().health.retries() >= 2,
        "the lock timeout ended tries that were then retried"
    );
    assert!(
        waited >= held - Duration::from_millis(500),
        "the block committed after {waited:?}, before the lock was released: \
         it did not wait for the lock"
    );
    check_once(&mut db, 1);
}

#[test]
fn an_event_emitted_when_the_commit_answer_was_lost_is_raised_once() {
    let Some(mut db) = Db::postgres("lostemit") else {
        return;
    };
    let relay = Relay::start(server_of(&db.url).parse().unwrap());
    let mut store = open(&db.url.replace(&server_of(&db.url), &relay.addr.to_string()));
    relay.lose_answers("INSERT", 1);
    store.insert_event("ping", Some("7"), 1).unwrap();
    assert_eq!(relay.answers_lost(), 1, "the fault happened");
    // A second emit of the same event is a new event.
    store.insert_event("ping", Some("7"), 2).unwrap();
    assert_eq!(
        db.count("SELECT count(*) FROM trackc_events WHERE name = 'ping' AND key = '7'"),
        2,
        "the insert tried again after the lost answer raised nothing more"
    );
}
