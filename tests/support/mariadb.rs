//! A fresh MariaDB/MySQL database per test, on the server of
//! `TRACKC_TEST_MARIADB` (default `mysql://root@127.0.0.1:3306`, the
//! MariaDB of this machine), dropped at the end. Without a server the
//! tests say so loudly and skip, except under `TRACKC_REQUIRE_MARIADB=1`
//! (as `.ci/run` sets), where they fail.

#![allow(dead_code)]

use mysql::prelude::Queryable;

pub fn admin_url() -> String {
    std::env::var("TRACKC_TEST_MARIADB").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

pub struct MariaDb {
    /// The database's URL (`mysql://…/NAME`).
    pub url: String,
    pub name: String,
    conn: mysql::Conn,
}

impl MariaDb {
    /// `None` (after a loud message) when no server is reachable and it is
    /// not required.
    pub fn new(name: &str) -> Option<MariaDb> {
        let admin = admin_url();
        let db = format!("trackc_test_{name}_{}", std::process::id());
        let made = mysql::Conn::new(mysql::Opts::from_url(&admin).expect("TRACKC_TEST_MARIADB"))
            .and_then(|mut c| {
                c.query_drop(format!("DROP DATABASE IF EXISTS {db}"))?;
                c.query_drop(format!("CREATE DATABASE {db} CHARACTER SET utf8mb4"))?;
                c.query_drop(format!("USE {db}"))?;
                Ok(c)
            });
        let conn = match made {
            Ok(c) => c,
            Err(e) => {
                if std::env::var("TRACKC_REQUIRE_MARIADB").as_deref() == Ok("1") {
                    panic!(
                        "MariaDB is required (TRACKC_REQUIRE_MARIADB=1) but {admin} failed: {e}"
                    );
                }
                eprintln!(
                    "\n!!! SKIPPED: no MariaDB at {admin} ({e}); set TRACKC_TEST_MARIADB !!!\n"
                );
                return None;
            }
        };
        Some(MariaDb {
            url: format!("{}/{db}", admin.trim_end_matches('/')),
            name: db,
            conn,
        })
    }

    /// Runs statements separated by `;` at line ends.
    pub fn execute(&mut self, sql: &str) {
        for statement in sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
            self.conn
                .query_drop(statement)
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    }

    /// Kills every other connection to this database, as a server restart
    /// or its `wait_timeout` does to an idle client; how many.
    pub fn kill_connections(&mut self) -> usize {
        let ids = self.other_connections();
        for id in &ids {
            let _ = self.conn.query_drop(format!("KILL CONNECTION {id}"));
        }
        ids.len()
    }

    /// Waits (at most `within`) until `n` other connections are open to
    /// this database, and says how many there are. A connection a client
    /// has just closed, or that was just killed, stays in the server's
    /// process list for a moment (seen once under CI's load); one that is
    /// still there after `within` is open.
    pub fn await_connections(&mut self, n: usize, within: std::time::Duration) -> usize {
        let until = std::time::Instant::now() + within;
        loop {
            let open = self.other_connections().len();
            if open == n || std::time::Instant::now() >= until {
                return open;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn other_connections(&mut self) -> Vec<u64> {
        self.conn
            .query(format!(
                "SELECT id FROM information_schema.processlist \
                 WHERE db = '{}' AND id <> CONNECTION_ID()",
                self.name
            ))
            .unwrap()
    }

    pub fn count(&mut self, sql: &str) -> i64 {
        self.conn
            .query_first::<i64, _>(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or(0)
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self
            .conn
            .query_drop(format!("DROP DATABASE IF EXISTS {}", self.name));
    }
}

/// A TCP relay in front of MariaDB on loopback that the test can cut:
/// while `severed`, every relayed connection is closed and new ones are
/// closed at once (a partition between a node and its source database).
pub struct CutRelay {
    pub port: u16,
    severed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    live: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl CutRelay {
    pub fn start(server: &str) -> CutRelay {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let severed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let live = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (cut, streams, server) = (severed.clone(), live.clone(), server.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(upstream) = std::net::TcpStream::connect(&server) else {
                    continue;
                };
                let mut open = streams.lock().unwrap();
                open.retain(|s: &std::net::TcpStream| s.peer_addr().is_ok());
                open.push(client.try_clone().unwrap());
                open.push(upstream.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        CutRelay {
            port,
            severed,
            live,
        }
    }

    pub fn sever(&self, severed: bool) {
        self.severed
            .store(severed, std::sync::atomic::Ordering::SeqCst);
        if severed {
            for s in self.live.lock().unwrap().drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}
