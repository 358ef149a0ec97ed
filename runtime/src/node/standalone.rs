//! `trackc serve`: the web console and the API of one database, without a
//! group: no peers, no runs (a `trackc run` beside it decides; the
//! console reads and does the operator's and author's actions).

use super::api::{self, ApiContext, ApiJob};
use super::config::NodeConfig;
use super::Shared;
use crate::db::{self, DbOptions, DbUrl, Health};
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Serves `config.http` until `stop` is set; `ready` is told the address
/// once it listens.
pub fn serve(
    config: NodeConfig,
    stop: Arc<AtomicBool>,
    ready: impl FnOnce(std::net::SocketAddr),
) -> Result<()> {
    let url = DbUrl::parse(&config.database)?;
    let options = DbOptions {
        health: Health::new("serve"),
        ..DbOptions::default()
    };
    let health = options.health.clone();
    let open = || -> Result<Box<dyn db::Store>> {
        let mut store = db::open_with(&url, &options)?;
        store.migrate()?;
        Ok(store)
    };
    let shared = Arc::new(Shared::default());
    let (jobs_tx, jobs_rx) = std::sync::mpsc::sync_channel::<ApiJob>(api::API_JOBS_MAX);
    let (owner_tx, _owner_rx) = std::sync::mpsc::channel();
    let store = open()?;
    let databases = config.databases.clone();
    let api_thread = std::thread::Builder::new()
        .name("api".into())
        .spawn(move || api::serve_jobs(store, jobs_rx, owner_tx, databases, false))
        .map_err(|e| Error::Io(format!("cannot start a thread: {e}")))?;
    // The status the pages show: this database, reachable or not, each
    // cycle.
    let mut pinger = open()?;
    let (sh, st, cycle) = (shared.clone(), stop.clone(), config.cycle);
    let status_thread = std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let _ = pinger.ping();
                *sh.status.lock().expect("status") = serde_json::json!({
                    "node": null,
                    "standalone": true,
                    "database": {
                        "reachable": health.is_reachable(),
                        "error": health.last_error(),
                        "retries": health.retries(),
                    },
                    "nodes": [],
                    "tracks": [],
                    "metrics": {},
                });
                std::thread::sleep(cycle);
            }
        })
        .map_err(|e| Error::Io(format!("cannot start a thread: {e}")))?;
    let (inputs_tx, _inputs_rx) = std::sync::mpsc::channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("cannot start the network runtime: {e}")))?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(config.http))
        .map_err(|e| Error::Io(format!("--http {}: {e}", config.http)))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Io(format!("--http {}: {e}", config.http)))?;
    let context = Arc::new(ApiContext {
        config,
        auth: Default::default(),
        shared,
        jobs: jobs_tx,
        inputs: Mutex::new(inputs_tx),
        sessions: Default::default(),
        standalone: true,
    });
    ready(bound);
    rt.block_on(async {
        let server = tokio::spawn(api::serve_http(listener, context, None));
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        server.abort();
    });
    drop(rt);
    let _ = status_thread.join();
    let _ = api_thread.join();
    Ok(())
}
