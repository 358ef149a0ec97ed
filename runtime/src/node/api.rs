//! The node's HTTP API (hyper, HTTP/1.1): bearer tokens checked against
//! the users of `node.toml` (their SHA-256), roles enforced before any
//! work, JSON in and out.
//!
//! | route | role | does |
//! |---|---|---|
//! | `GET /status` | viewer | the group as this node sees it |
//! | `GET /metrics` | viewer | the same counters for Prometheus |
//! | `GET /why?track=T&key=K` | viewer | a record's path (`trackc why`) |
//! | `GET /versions` | viewer | the deploy history (`trackc versions`) |
//! | `GET /audit?since=MICROS` | viewer | the audit log (`trackc audit`) |
//! | `POST /plan` | author | what deploying a bundle would do (`trackc plan`) |
//! | `POST /deploy` | author | check, store and load a bundle |
//! | `POST /rollback/N` | author | deploy N's files again (`trackc rollback`) |
//! | `POST /drain/ID` | operator | node ID hands over and leaves |
//! | `POST /move?track=T&to=N` | operator | track T's owner hands it to node N |
//! | `POST /emit` | operator | raise an event for a key |
//! | `POST /outbox/retry` | operator | parked deliveries back in the queue |
//!
//! A missing or unknown token is 401, a role that may not is 403; either
//! changes nothing and is written to the audit log, as is every deploy,
//! rollback, drain, emit and retry. Database work goes to the API thread
//! (`serve_jobs`), through a queue of at most `API_JOBS_MAX`.

use super::auth_limit::{AuthLimiter, Failure, AUTH_FAILURES_MAX, AUTH_FAILURE_WINDOW};
use super::config::{NodeConfig, UserRole};
use super::metrics::NodeMetrics;
use super::tls::ServerTls;
use super::{Input, Shared};
use crate::bundle;
use crate::clock::now_micros;
use crate::db::audit::AUDIT_LIST_MAX;
use crate::db::deploys::DEPLOYS_LIST_MAX;
use crate::db::{Actor, AuditAction, AuditEntry, NewEvent, Store, EMIT_BATCH_MAX};
use crate::error::{Error, Result};
use crate::group::protocol::Command;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use trackc_compiler::jit::Jit;

/// The largest request body (a bundle of track files).
const BODY_BYTES_MAX: usize = 8 << 20;
/// A client must send a request's headers within this time (a slow client
/// holding connections open, slowloris, is cut off).
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// And its body within this time: 8 MiB at a modest 1 MiB/s, with room.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Connections served at once; more wait to be accepted. Operators and CI
/// open a few; this bounds the threads' memory a crowd of clients costs.
const CONNECTIONS_MAX: usize = 256;
/// Requests waiting for the API thread (deploys, plans, reads of the
/// history, audit entries); more are answered 503. One thread serves them
/// in turn, and a queue longer than this only makes clients wait longer.
pub const API_JOBS_MAX: usize = 256;

/// A track file or the schema, as `trackc deploy` sends it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeployRequest {
    pub files: Vec<SourceFile>,
    pub schema: Option<SourceFile>,
    #[serde(default)]
    pub map: Vec<String>,
    /// The named source databases the tracks read (`source from NAME`),
    /// each with its dialect and schema; a name not given keeps its
    /// deployed schema.
    #[serde(default)]
    pub databases: Vec<DatabaseSchema>,
}

/// A named source database's dialect (`postgres`, `sqlite`, `mysql`) and
/// schema, as `trackc deploy` sends it from trackc.toml or `--schema
/// NAME=FILE`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatabaseSchema {
    pub name: String,
    pub dialect: String,
    pub schema: Option<SourceFile>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EmitRequest {
    pub event: String,
    pub key: Option<String>,
}

/// `POST /emit`'s body: one event, or an array of at most
/// `EMIT_BATCH_MAX`, raised in one transaction.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EmitBody {
    One(EmitRequest),
    Many(Vec<EmitRequest>),
}

/// The events of an emit request, checked: a reply if they are refused.
pub(crate) fn emit_events(body: &[u8]) -> std::result::Result<Vec<NewEvent>, Reply> {
    let requests = match serde_json::from_slice(body) {
        Ok(EmitBody::One(r)) => vec![r],
        Ok(EmitBody::Many(rs)) => rs,
        Err(e) => {
            return Err(failure(
                StatusCode::BAD_REQUEST,
                format!("the emit request: {e}: send {{\"event\", \"key\"}} or an array of them"),
            ))
        }
    };
    if requests.len() > EMIT_BATCH_MAX {
        return Err(failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} events in one request: at most {EMIT_BATCH_MAX}, send them in parts",
                requests.len()
            ),
        ));
    }
    if let Some(n) = requests.iter().position(|r| r.event.trim().is_empty()) {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            format!("event {n} of the request has no name"),
        ));
    }
    Ok(requests
        .into_iter()
        .map(|r| NewEvent {
            name: r.event,
            key: r.key,
        })
        .collect())
}

/// Database work for the API thread: what, asked by whom from where,
/// and where to answer (`None`: nothing waits for it, an audit entry).
pub struct ApiJob {
    pub work: Work,
    pub by: Actor,
    pub address: IpAddr,
    pub reply: Option<tokio::sync::oneshot::Sender<Reply>>,
}

/// What the API thread does for a request.
pub enum Work {
    Deploy(DeployRequest),
    Rollback {
        number: i64,
        map: Vec<String>,
    },
    Emit(Vec<NewEvent>),
    RetryParked(Option<String>),
    Plan(DeployRequest),
    Why {
        track: String,
        key: String,
    },
    Versions,
    AuditLog {
        since: i64,
    },
    /// The database's gauges for `/metrics`, answered on their own
    /// channel (none when the database does not answer).
    Gauges(tokio::sync::oneshot::Sender<Gauges>),
    /// A page of the web console, answered on its own channel.
    Console(
        crate::console::pages::Page,
        crate::console::pages::Viewer,
        tokio::sync::oneshot::Sender<(StatusCode, String)>,
    ),
    /// A drain was asked for (the protocol thread does it): audit only.
    Drained(u64),
    /// A track's move was asked for, and the protocol's answer: audit only.
    Moved {
        track: String,
        to: u64,
        reply: Reply,
    },
    /// A request refused before any work (401, 403): audit only.
    Refused {
        route: String,
        status: StatusCode,
        why: String,
    },
}

/// `POST /rollback/N`'s body (optional).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RollbackRequest {
    #[serde(default)]
    pub map: Vec<String>,
}

/// `POST /outbox/retry`'s body: one row, or every parked row without `id`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RetryRequest {
    pub id: Option<String>,
}

/// A status and a JSON body.
pub type Reply = (StatusCode, serde_json::Value);

/// A refusal or failure, as `{"error": "…"}`.
fn failure(status: StatusCode, e: impl std::fmt::Display) -> Reply {
    (status, serde_json::json!({ "error": e.to_string() }))
}

pub struct ApiContext {
    pub config: NodeConfig,
    /// Failed authentications per address.
    pub auth: AuthLimiter,
    pub shared: Arc<Shared>,
    pub jobs: SyncSender<ApiJob>,
    pub inputs: Mutex<Sender<Input>>,
    /// The web console's signed-in sessions.
    pub sessions: crate::console::session::Sessions,
    /// `trackc serve`: one database, no group.
    pub standalone: bool,
}

impl ApiContext {
    /// Writes a refused request to the audit log.
    pub(crate) fn refused(
        &self,
        by: Actor,
        address: IpAddr,
        route: &str,
        status: StatusCode,
        why: &str,
    ) {
        let work = Work::Refused {
            route: route.to_string(),
            status,
            why: why.to_string(),
        };
        self.audit_only(work, by, address);
    }

    /// Queues an audit entry; when the queue is full it is dropped and
    /// said so (the refusals of a flood must not hold up real work).
    pub(crate) fn audit_only(&self, work: Work, by: Actor, address: IpAddr) {
        let job = ApiJob {
            work,
            by,
            address,
            reply: None,
        };
        if let Err(TrySendError::Full(_)) = self.jobs.try_send(job) {
            eprintln!(
                "node {}: the API queue is full ({API_JOBS_MAX}): an audit entry of a request \
                 from {address} was not written",
                self.config.id
            );
        }
    }
}

/// Accepts connections until the runtime ends; over TLS when `tls` is
/// given (the handshake has the header timeout too).
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    context: Arc<ApiContext>,
    tls: Option<Arc<ServerTls>>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, peer)) = listener.accept().await else {
            return;
        };
        let context = context.clone();
        let tls = tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            let _slot = slot;
            let Some(acceptor) = tls else {
                return serve_connection(stream, peer.ip(), context).await;
            };
            // A client that does not speak TLS, or whose certificate is
            // refused, is told so by the handshake; nothing is logged per
            // connection (a scanner would fill the log).
            let handshake = tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream));
            if let Ok(Ok(stream)) = handshake.await {
                serve_connection(stream, peer.ip(), context).await;
            }
        });
    }
}

/// Serves the requests of one connection, plain or TLS.
async fn serve_connection<S>(stream: S, ip: IpAddr, context: Arc<ApiContext>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let context = context.clone();
        async move { Ok::<_, std::convert::Infallible>(respond(req, ip, &context).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("a header"),
    );
    r
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Full<Bytes>> {
    let (status, body) = failure(status, message);
    json(status, body)
}

/// What a request asks for, read from its method and path before anything
/// else (the role it needs is checked before its body is read).
enum Route {
    Status,
    Metrics,
    Why,
    Versions,
    Audit,
    Plan,
    Deploy,
    Rollback(String),
    Emit,
    Drain(String),
    Move,
    RetryParked,
}

impl Route {
    fn of(method: &Method, path: &str) -> Option<Route> {
        Some(match (method, path) {
            (&Method::GET, "/status") => Route::Status,
            (&Method::GET, "/metrics") => Route::Metrics,
            (&Method::GET, "/why") => Route::Why,
            (&Method::GET, "/versions") => Route::Versions,
            (&Method::GET, "/audit") => Route::Audit,
            (&Method::POST, "/plan") => Route::Plan,
            (&Method::POST, "/deploy") => Route::Deploy,
            (&Method::POST, "/emit") => Route::Emit,
            (&Method::POST, "/outbox/retry") => Route::RetryParked,
            (&Method::POST, "/move") => Route::Move,
            (&Method::POST, p) => match p.strip_prefix("/rollback/") {
                Some(n) => Route::Rollback(n.to_string()),
                None => Route::Drain(p.strip_prefix("/drain/")?.to_string()),
            },
            _ => return None,
        })
    }

    fn needs(&self) -> UserRole {
        match self {
            Route::Status | Route::Metrics | Route::Why | Route::Versions | Route::Audit => {
                UserRole::Viewer
            }
            Route::Plan | Route::Deploy | Route::Rollback(_) => UserRole::Author,
            Route::Emit | Route::Drain(_) | Route::Move | Route::RetryParked => UserRole::Operator,
        }
    }
}

/// How long `POST /move` waits for the protocol thread's answer (it
/// answers within a cycle; a node too busy to is said so).
const MOVE_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `POST /move?track=T&to=N`: the protocol thread checks the move and
/// starts it (or asks the owner); 202 with what it did, 409 with why not.
async fn ask_move(context: &ApiContext, query: Option<&str>) -> Reply {
    let Some(track) = query_value(query, "track").filter(|t| !t.is_empty()) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "give the track: /move?track=T&to=N",
        );
    };
    let Some(to) = query_value(query, "to") else {
        return failure(StatusCode::BAD_REQUEST, "give the node: /move?track=T&to=N");
    };
    let Ok(to) = to.parse::<u64>() else {
        return failure(StatusCode::BAD_REQUEST, format!("`{to}` is not a node id"));
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let input = Input::Move {
        track: track.clone(),
        to,
        reply: tx,
    };
    let _ = context.inputs.lock().expect("inputs").send(input);
    match tokio::time::timeout(MOVE_ANSWER_WAIT, rx).await {
        Ok(Ok(Ok(done))) => (
            StatusCode::ACCEPTED,
            serde_json::json!({ "track": track, "to": to, "moving": done }),
        ),
        Ok(Ok(Err(why))) => failure(StatusCode::CONFLICT, why),
        _ => failure(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the node's protocol did not answer within {} s",
                MOVE_ANSWER_WAIT.as_secs()
            ),
        ),
    }
}

/// The value of `name` in a query string (percent-decoded).
fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The work of a request whose body has arrived, or the refusal.
fn work_of(route: Route, query: Option<&str>, body: &[u8]) -> std::result::Result<Work, Reply> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        failure(StatusCode::BAD_REQUEST, format!("the {what} request: {e}"))
    };
    // The optional bodies (rollback, retry) may be empty.
    let optional: &[u8] = if body.is_empty() { b"{}" } else { body };
    Ok(match route {
        Route::Status | Route::Metrics | Route::Drain(_) | Route::Move => {
            return Err(failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal: this route is answered without the API thread",
            ))
        }
        Route::Why => {
            let (Some(track), Some(key)) = (query_value(query, "track"), query_value(query, "key"))
            else {
                return Err(bad("why", &"give ?track=TRACK&key=KEY"));
            };
            Work::Why { track, key }
        }
        Route::Versions => Work::Versions,
        Route::Audit => {
            let since = match query_value(query, "since") {
                None => 0,
                Some(s) => s
                    .parse()
                    .map_err(|_| bad("audit", &format!("since=`{s}` is not microseconds")))?,
            };
            Work::AuditLog { since }
        }
        Route::Plan => Work::Plan(serde_json::from_slice(body).map_err(|e| bad("plan", &e))?),
        Route::Deploy => Work::Deploy(serde_json::from_slice(body).map_err(|e| bad("deploy", &e))?),
        Route::Rollback(n) => {
            let number = n
                .parse()
                .map_err(|_| bad("rollback", &format!("`{n}` is not a deploy number")))?;
            let request: RollbackRequest =
                serde_json::from_slice(optional).map_err(|e| bad("rollback", &e))?;
            Work::Rollback {
                number,
                map: request.map,
            }
        }
        Route::Emit => Work::Emit(emit_events(body)?),
        Route::RetryParked => {
            let request: RetryRequest =
                serde_json::from_slice(optional).map_err(|e| bad("retry", &e))?;
            Work::RetryParked(request.id)
        }
    })
}

async fn respond(
    req: Request<Incoming>,
    ip: IpAddr,
    context: &ApiContext,
) -> Response<Full<Bytes>> {
    if crate::console::handles(req.method(), req.uri().path()) {
        return crate::console::respond(req, ip, context).await;
    }
    let Some(route) = Route::of(req.method(), req.uri().path()) else {
        return error(StatusCode::NOT_FOUND, "no such route");
    };
    if let Some(wait) = context.auth.retry_after(ip, Instant::now()) {
        let seconds = wait.as_secs() + 1;
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{AUTH_FAILURES_MAX} failed authentications from {ip} within {} s: try again \
                 in {seconds} s",
                AUTH_FAILURE_WINDOW.as_secs()
            ),
        );
        r.headers_mut().insert(
            "retry-after",
            seconds.to_string().parse().expect("a header"),
        );
        return r;
    }
    let asked = format!("{} {}", req.method(), req.uri().path());
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(user) = token.and_then(|t| context.config.user(t)) else {
        let id = context.config.id;
        match context.auth.failed(ip, Instant::now()) {
            Failure::First => {
                eprintln!("node {id}: a request from {ip} without a valid token (401)")
            }
            Failure::Limited => eprintln!(
                "node {id}: {AUTH_FAILURES_MAX} failed authentications from {ip}: refusing it \
                 for the rest of {} s (429)",
                AUTH_FAILURE_WINDOW.as_secs()
            ),
            Failure::Counted => {}
        }
        let why = match token {
            None => "no bearer token",
            Some(_) => "a token no user has",
        };
        let nobody = Actor {
            name: "unknown".into(),
            role: "none".into(),
        };
        let work = Work::Refused {
            route: asked,
            status: StatusCode::UNAUTHORIZED,
            why: why.into(),
        };
        context.audit_only(work, nobody, ip);
        return error(StatusCode::UNAUTHORIZED, "a valid bearer token is needed");
    };
    let by = Actor {
        name: user.name.clone(),
        role: user.role.name().into(),
    };
    let needed = route.needs();
    if !user.role.allows(needed) {
        let why = format!(
            "user `{}` ({}) may not do this: it needs the {} role",
            user.name,
            user.role.name(),
            needed.name()
        );
        let work = Work::Refused {
            route: asked,
            status: StatusCode::FORBIDDEN,
            why: format!("needs the {} role", needed.name()),
        };
        context.audit_only(work, by, ip);
        return error(StatusCode::FORBIDDEN, why);
    }
    let query = req.uri().query().map(str::to_string);
    let body = Limited::new(req.into_body(), BODY_BYTES_MAX).collect();
    let body = match tokio::time::timeout(BODY_READ_TIMEOUT, body).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => return error(StatusCode::PAYLOAD_TOO_LARGE, e),
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            )
        }
    };
    let status = || context.shared.status.lock().expect("status").clone();
    match route {
        Route::Status => return json(StatusCode::OK, status()),
        Route::Metrics => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let job = ApiJob {
                work: Work::Gauges(tx),
                by,
                address: ip,
                reply: None,
            };
            let gauges = match context.jobs.try_send(job) {
                Ok(()) => tokio::time::timeout(GAUGES_WAIT, rx)
                    .await
                    .ok()
                    .and_then(|r| r.ok()),
                Err(_) => None,
            };
            let text = prometheus(&status(), &context.shared.metrics, gauges.as_ref());
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                "content-type",
                "text/plain; version=0.0.4; charset=utf-8"
                    .parse()
                    .expect("a header"),
            );
            return r;
        }
        Route::Drain(id) => {
            let Ok(id) = id.parse::<u64>() else {
                return error(StatusCode::BAD_REQUEST, format!("`{id}` is not a node id"));
            };
            let _ = context
                .inputs
                .lock()
                .expect("inputs")
                .send(Input::Drain(id));
            context.audit_only(Work::Drained(id), by, ip);
            return json(StatusCode::ACCEPTED, serde_json::json!({ "draining": id }));
        }
        Route::Move => {
            let reply = ask_move(context, query.as_deref()).await;
            let (track, to) = (
                query_value(query.as_deref(), "track"),
                query_value(query.as_deref(), "to"),
            );
            let work = Work::Moved {
                track: track.unwrap_or_default(),
                to: to.and_then(|t| t.parse().ok()).unwrap_or(0),
                reply: reply.clone(),
            };
            context.audit_only(work, by, ip);
            return json(reply.0, reply.1);
        }
        _ => {}
    }
    let work = match work_of(route, query.as_deref(), &body) {
        Ok(work) => work,
        Err((status, body)) => return json(status, body),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job = ApiJob {
        work,
        by,
        address: ip,
        reply: Some(tx),
    };
    match context.jobs.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the node is busy: {API_JOBS_MAX} requests wait; try again shortly"),
            )
        }
        Err(TrySendError::Disconnected(_)) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping")
        }
    }
    match rx.await {
        Ok((status, body)) => json(status, body),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping"),
    }
}

/// What `/metrics` reads from the database, through the API thread.
#[derive(Debug, Default)]
pub struct Gauges {
    /// (kind, state, rows).
    pub outbox: Vec<(String, String, i64)>,
    pub events_pending: i64,
}

/// How long a scrape waits for the database's gauges; without them it
/// still answers the node's own counters (and `trackc_db_up`).
const GAUGES_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The node's metrics in Prometheus' text exposition format (0.0.4); the
/// names are docs/operations.md's.
pub fn prometheus(
    status: &serde_json::Value,
    metrics: &NodeMetrics,
    gauges: Option<&Gauges>,
) -> String {
    use super::metrics::label;
    use std::fmt::Write;
    let mut out = String::new();
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    let number = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    // A sample per member of a JSON object of counts, labelled by its name.
    let by_label = |out: &mut String, name: &str, key: &str, counts: &serde_json::Value| {
        for (value, n) in counts.as_object().into_iter().flatten() {
            let _ = writeln!(out, "{name}{{{key}=\"{}\"}} {n}", label(value));
        }
    };
    let m = &status["metrics"];
    family(
        &mut out,
        "trackc_frames_accepted_total",
        "counter",
        "Peer frames accepted.",
    );
    let _ = writeln!(
        out,
        "trackc_frames_accepted_total {}",
        number(&m["frames_accepted"])
    );
    family(
        &mut out,
        "trackc_frames_rejected_total",
        "counter",
        "Peer frames refused, by reason.",
    );
    by_label(
        &mut out,
        "trackc_frames_rejected_total",
        "reason",
        &m["frames_rejected"],
    );
    family(
        &mut out,
        "trackc_blocks_total",
        "counter",
        "Blocks this node executed, by outcome.",
    );
    by_label(
        &mut out,
        "trackc_blocks_total",
        "outcome",
        &m["blocks_executed"],
    );
    family(
        &mut out,
        "trackc_blocks_refused_total",
        "counter",
        "Blocks this node refused (no room).",
    );
    let _ = writeln!(
        out,
        "trackc_blocks_refused_total {}",
        number(&m["blocks_refused"])
    );
    family(
        &mut out,
        "trackc_blocks_outstanding",
        "gauge",
        "Blocks this node queued or has in flight as an owner.",
    );
    let _ = writeln!(
        out,
        "trackc_blocks_outstanding {}",
        number(&m["blocks_outstanding"])
    );
    let database = &status["database"];
    family(
        &mut out,
        "trackc_db_up",
        "gauge",
        "1 when this node reaches the database.",
    );
    let _ = writeln!(
        out,
        "trackc_db_up {}",
        u8::from(database["reachable"] == true)
    );
    family(
        &mut out,
        "trackc_database_retries_total",
        "counter",
        "Database operations tried again after a transient fault.",
    );
    let _ = writeln!(
        out,
        "trackc_database_retries_total {}",
        number(&database["retries"])
    );
    family(
        &mut out,
        "trackc_node_up",
        "gauge",
        "1 for each node this node sees alive (or draining), 0 for one it declared unavailable.",
    );
    for n in status["nodes"].as_array().into_iter().flatten() {
        let up = u8::from(n["state"] != "unavailable");
        let _ = writeln!(out, "trackc_node_up{{node=\"{}\"}} {up}", n["id"]);
    }
    family(
        &mut out,
        "trackc_track_owner",
        "gauge",
        "1 for each track and the node that owns it, as this node sees them.",
    );
    for t in status["tracks"].as_array().into_iter().flatten() {
        if let Some(owner) = t["owner"].as_u64() {
            let track = label(t["name"].as_str().unwrap_or(""));
            let _ = writeln!(
                out,
                "trackc_track_owner{{track=\"{track}\",node=\"{owner}\"}} 1"
            );
        }
    }
    metrics.render(&mut out);
    if let Some(g) = gauges {
        family(&mut out, "trackc_outbox_rows", "gauge", "Outbox rows by kind and state (the group's database: every node reports the same; aggregate with max).");
        for (kind, state, n) in &g.outbox {
            let _ = writeln!(
                out,
                "trackc_outbox_rows{{kind=\"{}\",state=\"{}\"}} {n}",
                label(kind),
                label(state)
            );
        }
        family(
            &mut out,
            "trackc_events_pending",
            "gauge",
            "Events raised and not yet decided (the group's database; aggregate with max).",
        );
        let _ = writeln!(out, "trackc_events_pending {}", g.events_pending);
    }
    out
}

/// The database's gauges for `/metrics`.
pub fn gauges(store: &mut dyn Store) -> Result<Gauges> {
    Ok(Gauges {
        outbox: store.outbox_counts()?,
        events_pending: store.query_i64(EVENTS_PENDING)?,
    })
}

/// Events waiting for the tracks that listen for them (the partial index
/// `trackc_events_waiting` holds exactly these).
const EVENTS_PENDING: &str = "SELECT count(*) FROM trackc_events WHERE done_at IS NULL";

/// The API thread: the requests that need the database, one at a time,
/// on its own connection; each deploy, rollback, drain, emit, retry and
/// refusal is written to the audit log with how it ended.
///
/// `databases` are node.toml's `[databases]`: a plan opens the ones its
/// tracks read. `advertised`: the node is in a group, whose adverts must
/// carry the tracks deployed (`trackc serve` is not).
pub fn serve_jobs(
    mut store: Box<dyn Store>,
    jobs: Receiver<ApiJob>,
    owner: Sender<Command>,
    databases: Databases,
    advertised: bool,
) {
    let jit = Jit::new().ok();
    while let Ok(job) = jobs.recv() {
        let store = store.as_mut();
        let (answer, audit) = match &jit {
            Some(jit) => do_work(store, jit, &databases, advertised, job.work, &job.by),
            None => (
                failure(StatusCode::INTERNAL_SERVER_ERROR, "the JIT could not start"),
                None,
            ),
        };
        if let Some((action, target)) = audit {
            let result = outcome(&answer);
            let mut entry = AuditEntry::new(now_micros(), &job.by, action, &target, &result);
            entry.address = Some(job.address.to_string());
            crate::db::audit::write(store, &entry);
        }
        let changed = matches!(answer.1.get("deploy"), Some(serde_json::Value::Number(_)));
        if answer.0 == StatusCode::OK && changed {
            let _ = owner.send(Command::CheckBundle);
        }
        if let Some(reply) = job.reply {
            let _ = reply.send(answer);
        }
    }
}

/// How a request ended, for the audit log: `ok`, or `refused (409): why`.
fn outcome((status, body): &Reply) -> String {
    let detail = body["error"].as_str().or(body["summary"].as_str());
    match (status.is_success(), detail) {
        (true, None) => "ok".into(),
        (true, Some(d)) => format!("ok: {d}"),
        (false, d) => {
            let kind = if status.is_client_error() {
                "refused"
            } else {
                "failed"
            };
            format!("{kind} ({}): {}", status.as_u16(), d.unwrap_or("?"))
        }
    }
}

/// Does one request's work: its answer, and what to write to the audit
/// log (action and target) if it is audited.
/// A node's named source databases (node.toml `[databases]`): name → URL.
pub type Databases = std::collections::BTreeMap<String, String>;

fn do_work(
    store: &mut dyn Store,
    jit: &Jit,
    databases: &Databases,
    advertised: bool,
    work: Work,
    by: &Actor,
) -> (Reply, Option<(AuditAction, String)>) {
    let internal = |e: Error| failure(StatusCode::INTERNAL_SERVER_ERROR, e);
    match work {
        Work::Deploy(request) => {
            let target = request
                .files
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let answer =
                deploy(store, jit, request, by, advertised).unwrap_or_else(|refusal| refusal);
            (answer, Some((AuditAction::Deploy, target)))
        }
        Work::Rollback { number, map } => {
            let answer = match bundle::rollback(store, jit, number, &map, by) {
                Ok((_, deployed)) => deployed_reply(&deployed),
                Err(e) => deploy_refused(e),
            };
            (
                answer,
                Some((AuditAction::Rollback, format!("deploy {number}"))),
            )
        }
        Work::Emit(events) => {
            let target = emitted(&events);
            let answer = match store.insert_events(&events, now_micros()) {
                Ok(()) => (
                    StatusCode::OK,
                    serde_json::json!({ "emitted": events.len() }),
                ),
                Err(e) => internal(e),
            };
            (answer, Some((AuditAction::Emit, target)))
        }
        Work::RetryParked(id) => {
            let target = match &id {
                Some(id) => format!("outbox row {id}"),
                None => "every parked outbox row".into(),
            };
            let answer = match store.retry_parked(id.as_deref(), now_micros()) {
                Ok(n) => (
                    StatusCode::OK,
                    serde_json::json!({ "requeued": n, "summary": format!("{n} re-queued") }),
                ),
                Err(e) => internal(e),
            };
            (answer, Some((AuditAction::OutboxRetry, target)))
        }
        Work::Plan(request) => {
            let answer = plan(store, jit, databases, request).unwrap_or_else(|refusal| refusal);
            (answer, None)
        }
        Work::Why { track, key } => {
            let answer = match crate::why::report(store, jit, &track, &key) {
                Ok(report) => (StatusCode::OK, report),
                Err(e @ Error::Config(_)) => failure(StatusCode::NOT_FOUND, e),
                Err(e) => internal(e),
            };
            (answer, None)
        }
        Work::Versions => {
            let answer = match store.deploys(DEPLOYS_LIST_MAX) {
                Ok(list) => (StatusCode::OK, serde_json::json!({ "deploys": list })),
                Err(e) => internal(e),
            };
            (answer, None)
        }
        Work::AuditLog { since } => {
            let answer = match store.audit_log(since, AUDIT_LIST_MAX) {
                Ok(entries) => (StatusCode::OK, serde_json::json!({ "entries": entries })),
                Err(e) => internal(e),
            };
            (answer, None)
        }
        Work::Gauges(answer) => {
            match gauges(store) {
                Ok(g) => {
                    let _ = answer.send(g);
                }
                Err(e) => eprintln!("/metrics: the database's gauges: {e}"),
            }
            ((StatusCode::OK, serde_json::json!({})), None)
        }
        Work::Console(page, viewer, answer) => {
            let _ = answer.send(crate::console::pages::page(
                store, jit, databases, page, &viewer,
            ));
            ((StatusCode::OK, serde_json::json!({})), None)
        }
        Work::Drained(id) => (
            (StatusCode::ACCEPTED, serde_json::json!({})),
            Some((AuditAction::Drain, format!("node {id}"))),
        ),
        Work::Moved { track, to, reply } => (
            reply,
            Some((AuditAction::Move, format!("track {track} to node {to}"))),
        ),
        Work::Refused { route, status, why } => {
            (failure(status, why), Some((AuditAction::Refused, route)))
        }
    }
}

/// An emit's target for the audit log: the event and how many keys.
pub fn emitted(events: &[NewEvent]) -> String {
    let mut names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    format!("event {} ({} raised)", names.join(", "), events.len())
}

/// The answer to a deploy or rollback that went through.
fn deployed_reply(deployed: &bundle::Deployed) -> Reply {
    let summary = deployed.summary();
    (
        StatusCode::OK,
        serde_json::json!({
            "changed": deployed.changed,
            "deploy": deployed.number,
            "summary": summary,
        }),
    )
}

/// The named databases of a deploy or plan request: those it gives, and
/// the deployed ones it does not name (as they are deployed); and the
/// ones it gives, to keep with the deploy.
fn databases_of(
    store: &mut dyn Store,
    given: &[DatabaseSchema],
) -> Result<(Vec<bundle::SourceSchema>, Vec<bundle::SourceSchema>)> {
    let given = given
        .iter()
        .map(|d| {
            let dialect = crate::db::Dialect::from_name(&d.dialect).ok_or_else(|| {
                Error::Config(format!(
                    "database `{}`: unknown dialect `{}` (postgres, sqlite or mysql)",
                    d.name, d.dialect
                ))
            })?;
            Ok(bundle::SourceSchema {
                name: d.name.clone(),
                dialect,
                schema: d.schema.clone().map(|f| (f.name, f.text)),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut all = given.clone();
    for d in store.source_schemas()? {
        if !all.iter().any(|g| g.name == d.name) {
            all.push(d);
        }
    }
    Ok((all, given))
}

/// The files and schema of a deploy or plan request, as `(name, text)`;
/// without a schema, the deployed one.
fn sources_of(store: &mut dyn Store, request: DeployRequest) -> Result<bundle::Sources> {
    let files = request
        .files
        .into_iter()
        .map(|f| (f.name, f.text))
        .collect();
    let schema = match request.schema {
        Some(s) => Some((s.name, s.text)),
        None => store.schema()?,
    };
    Ok((files, schema))
}

/// A deploy or plan request's sources, compiled: 422 with the diagnostics
/// when the tracks have errors.
fn load_request(
    store: &mut dyn Store,
    jit: &Jit,
    request: DeployRequest,
) -> std::result::Result<LoadedRequest, Reply> {
    let (databases, given) = databases_of(store, &request.databases).map_err(|e| match e {
        Error::Config(_) => failure(StatusCode::UNPROCESSABLE_ENTITY, e),
        e => failure(StatusCode::INTERNAL_SERVER_ERROR, e),
    })?;
    let sources =
        sources_of(store, request).map_err(|e| failure(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let tracks = bundle::load_with(
        jit,
        &sources.0,
        sources.1.clone(),
        store.dialect(),
        databases,
    )
    .map_err(|e| failure(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    Ok(LoadedRequest {
        sources,
        databases: given,
        tracks,
    })
}

/// A deploy or plan request compiled: its sources, the named databases it
/// gave, its tracks.
struct LoadedRequest {
    sources: bundle::Sources,
    databases: Vec<bundle::SourceSchema>,
    tracks: Vec<bundle::LoadedTrack>,
}

/// A deploy or rollback that failed: 409 when it was refused (stranded
/// records, a bad `--map`, an unknown deploy), else 500.
fn deploy_refused(e: Error) -> Reply {
    match e {
        Error::Deploy(_) | Error::Config(_) => failure(StatusCode::CONFLICT, e),
        e => failure(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Compiles the bundle against its schema, refuses it with the
/// diagnostics if it has errors, else deploys it (refusing a deploy that
/// would strand records, as `trackc run` does). In a group (`advertised`)
/// it also refuses a bundle whose tracks an advertisement could not carry.
fn deploy(
    store: &mut dyn Store,
    jit: &Jit,
    request: DeployRequest,
    by: &Actor,
    advertised: bool,
) -> std::result::Result<Reply, Reply> {
    let map = request.map.clone();
    let LoadedRequest {
        sources,
        databases,
        tracks,
    } = load_request(store, jit, request)?;
    let names: Vec<String> = tracks.iter().map(|t| t.ir.name.clone()).collect();
    if advertised {
        advert_room(&names).map_err(|e| failure(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    }
    let request = bundle::DeployRequest {
        sources: &sources,
        databases: &databases,
        map: &map,
        by,
        rollback_of: None,
    };
    let deployed = bundle::deploy(store, &tracks, &request).map_err(deploy_refused)?;
    let (status, mut body) = deployed_reply(&deployed);
    body["tracks"] = serde_json::json!(names);
    Ok((status, body))
}

/// Whether a group's advertisements can carry these tracks: each node
/// says in one UDP datagram which tracks it owns, with their runs and
/// costs, and a node that owns them all must still be heard.
fn advert_room(tracks: &[String]) -> std::result::Result<(), String> {
    use crate::group::wire::{advert_bytes_at_most, ADVERT_BYTES_MAX};
    let bytes = advert_bytes_at_most(tracks);
    if bytes <= ADVERT_BYTES_MAX {
        return Ok(());
    }
    let names: usize = tracks.iter().map(String::len).sum();
    Err(format!(
        "a group cannot run these {} tracks: the advertisement of a node that owned them all \
         could take {bytes} bytes, more than the {ADVERT_BYTES_MAX} one UDP datagram carries \
         (their names alone take {names} bytes, and each is in five lists); deploy fewer \
         tracks or shorter names (docs/group.md, Limits)",
        tracks.len()
    ))
}

/// The plan of deploying the bundle now (`trackc plan`); writes nothing.
fn plan(
    store: &mut dyn Store,
    jit: &Jit,
    databases: &Databases,
    request: DeployRequest,
) -> std::result::Result<Reply, Reply> {
    let tracks = load_request(store, jit, request)?.tracks;
    let mut sources = crate::db::source::open_for(&tracks, databases)
        .map_err(|e| failure(StatusCode::SERVICE_UNAVAILABLE, e))?;
    let plan = crate::plan::plan(store, &mut sources, &tracks, now_micros())
        .map_err(|e| failure(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok((
        StatusCode::OK,
        serde_json::to_value(&plan).expect("a plan encodes as JSON"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Fuzzing the API's JSON bodies on stable (issue 18): any bytes,
        /// and JSON of the right shape with wrong parts, are events or a
        /// refusal with a status and a message; nothing panics.
        #[test]
        fn any_body_is_events_or_a_refusal(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            names in proptest::collection::vec("[a-z ]{0,6}", 0..20),
            keys in proptest::collection::vec(proptest::option::of("[0-9a-z\"]{0,6}"), 0..20),
        ) {
            let _ = emit_events(&bytes);
            let _ = serde_json::from_slice::<DeployRequest>(&bytes);
            let many: Vec<serde_json::Value> = names
                .iter()
                .zip(keys.iter().cycle())
                .map(|(n, k)| serde_json::json!({"event": n, "key": k}))
                .collect();
            let body = serde_json::Value::from(many).to_string();
            match emit_events(body.as_bytes()) {
                Ok(events) => prop_assert!(events.iter().all(|e| !e.name.trim().is_empty())),
                Err(_) => prop_assert!(names.iter().any(|n| n.trim().is_empty())),
            }
        }
    }

    #[test]
    fn an_emit_over_the_limit_is_refused_saying_the_limit() {
        let many: Vec<serde_json::Value> = (0..=EMIT_BATCH_MAX)
            .map(|i| serde_json::json!({"event": "e", "key": i.to_string()}))
            .collect();
        let body = serde_json::Value::from(many).to_string();
        assert!(emit_events(body.as_bytes()).is_err());
    }
}
