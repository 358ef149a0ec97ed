//! Databases for the end-to-end tests: SQLite in a temp dir, or a fresh
//! PostgreSQL database dropped at the end.
//!
//! PostgreSQL: `TRACKC_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) is the admin connection.
//! Without a server the tests say so loudly and skip, unless
//! `TRACKC_REQUIRE_POSTGRES=1` (as `.ci/run` sets), where they fail.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trackc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A database to run against: SQLite in a temp dir, or a fresh
/// PostgreSQL database dropped at the end.
pub struct Db {
    pub url: String,
    pub store: Option<Box<dyn trackc_runtime::db::Store>>,
    drop_pg: Option<(String, String)>,
}

impl Db {
    pub fn sqlite(name: &str) -> Db {
        let path = temp_dir(name).join("t.db");
        let url = format!("sqlite:{}", path.display());
        let store =
            trackc_runtime::db::open(&trackc_runtime::db::DbUrl::parse(&url).unwrap()).unwrap();
        Db {
            url,
            store: Some(store),
            drop_pg: None,
        }
    }

    /// `None` (after a loud message) when no server is reachable and it is
    /// not required.
    pub fn postgres(name: &str) -> Option<Db> {
        Db::postgres_at(&admin_url(), name)
    }

    /// A fresh database `name` on the server of `admin` (an admin
    /// connection's URL).
    pub fn postgres_at(admin: &str, name: &str) -> Option<Db> {
        let admin = admin.to_string();
        let db = format!("trackc_test_{name}_{}", std::process::id());
        if let Err(e) = pg_admin(&admin, &format!("DROP DATABASE IF EXISTS {db}"))
            .and_then(|_| pg_admin(&admin, &format!("CREATE DATABASE {db}")))
        {
            if std::env::var("TRACKC_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!(
                    "PostgreSQL is required (TRACKC_REQUIRE_POSTGRES=1) but {admin} failed: {e}"
                );
            }
            eprintln!(
                "\n!!! SKIPPED: no PostgreSQL at {admin} ({e}); set TRACKC_TEST_POSTGRES !!!\n"
            );
            return None;
        }
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        let url = format!("{base}/{db}");
        let store =
            trackc_runtime::db::open(&trackc_runtime::db::DbUrl::parse(&url).unwrap()).unwrap();
        Some(Db {
            url,
            store: Some(store),
            drop_pg: Some((admin, db)),
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or_default()
    }

    /// Terminates every other connection to this database, as a restart
    /// or a failover does to each client.
    pub fn terminate_connections(&self) {
        let sql = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            self.name()
        );
        let admin = self
            .drop_pg
            .as_ref()
            .map(|(a, _)| a.as_str())
            .expect("a PostgreSQL database");
        pg_admin(admin, &sql).unwrap();
    }

    pub fn count(&mut self, sql: &str) -> i64 {
        let store = self.store.as_mut().expect("open");
        store
            .query_i64(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub fn execute(&mut self, sql: &str) {
        self.store
            .as_mut()
            .expect("open")
            .execute_batch(sql)
            .unwrap();
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some((admin, db)) = self.drop_pg.take() {
            // Close our connections first.
            self.store = None;
            let _ = pg_admin(
                &admin,
                &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
            );
        }
    }
}

/// A loopback port free now (a test's server binds it next).
/// `n` free loopback ports, all different: each is held until all are
/// picked (ports picked one at a time may come back the same, as a
/// node's peer port and another's HTTP port once did).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The admin connection of the machine's PostgreSQL.
pub fn admin_url() -> String {
    std::env::var("TRACKC_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `host:port` of a `postgres://user@host:port/db` URL.
pub fn server_of(url: &str) -> String {
    let rest = url.split_once('@').map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5432")
    }
}

pub fn pg_admin(url: &str, sql: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_postgres::connect(url, tokio_postgres::NoTls),
        )
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
        let task = tokio::spawn(conn);
        client.batch_execute(sql).await.map_err(|e| e.to_string())?;
        drop(client);
        let _ = task.await;
        Ok(())
    })
}
