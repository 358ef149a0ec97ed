//! The node's HTTP API (hyper, HTTP/1.1): bearer tokens checked against
//! the users of `node.toml` (their SHA-256), roles enforced before any
//! work, JSON in and out.
//!
//! | route | role | does |
//! |---|---|---|
//! | `GET /status` | viewer | the group as this node sees it |
//! | `GET /metrics` | viewer | the same counters for Prometheus |
//! | `POST /deploy` | author | check, store and load a bundle |
//! | `POST /drain/ID` | operator | node ID hands over and leaves |
//! | `POST /emit` | operator | raise an event for a key |
//!
//! A missing or unknown token is 401, a role that may not is 403; either
//! changes nothing. Database work goes to the API thread (`serve_jobs`).

use super::auth_limit::{AuthLimiter, Failure, AUTH_FAILURES_MAX, AUTH_FAILURE_WINDOW};
use super::config::{NodeConfig, UserRole};
use super::tls::ServerTls;
use super::{Input, Shared};
use crate::bundle;
use crate::clock::now_micros;
use crate::db::{NewEvent, Store, EMIT_BATCH_MAX};
use crate::error::Error;
use crate::group::protocol::Command;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, Sender};
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

/// Database work for the API thread, with where to answer.
pub enum ApiJob {
    Deploy(DeployRequest, tokio::sync::oneshot::Sender<Reply>),
    Emit(Vec<NewEvent>, tokio::sync::oneshot::Sender<Reply>),
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
    pub jobs: Mutex<Sender<ApiJob>>,
    pub inputs: Mutex<Sender<Input>>,
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
    Deploy,
    Emit,
    Drain(String),
}

impl Route {
    fn of(method: &Method, path: &str) -> Option<Route> {
        Some(match (method, path) {
            (&Method::GET, "/status") => Route::Status,
            (&Method::GET, "/metrics") => Route::Metrics,
            (&Method::POST, "/deploy") => Route::Deploy,
            (&Method::POST, "/emit") => Route::Emit,
            (&Method::POST, p) => Route::Drain(p.strip_prefix("/drain/")?.to_string()),
            _ => return None,
        })
    }

    fn needs(&self) -> UserRole {
        match self {
            Route::Status | Route::Metrics => UserRole::Viewer,
            Route::Deploy => UserRole::Author,
            Route::Emit | Route::Drain(_) => UserRole::Operator,
        }
    }
}

async fn respond(
    req: Request<Incoming>,
    ip: IpAddr,
    context: &ApiContext,
) -> Response<Full<Bytes>> {
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
        return error(StatusCode::UNAUTHORIZED, "a valid bearer token is needed");
    };
    let needed = route.needs();
    if !user.role.allows(needed) {
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "user `{}` ({:?}) may not do this: it needs {needed:?}",
                user.name, user.role
            ),
        );
    }
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
        Route::Status => json(StatusCode::OK, status()),
        Route::Metrics => {
            let mut r = Response::new(Full::new(Bytes::from(prometheus(&status()))));
            r.headers_mut().insert(
                "content-type",
                "text/plain; version=0.0.4".parse().expect("a header"),
            );
            r
        }
        Route::Deploy => match serde_json::from_slice(&body) {
            Ok(request) => ask(context, |tx| ApiJob::Deploy(request, tx)).await,
            Err(e) => error(StatusCode::BAD_REQUEST, format!("the deploy request: {e}")),
        },
        Route::Emit => match emit_events(&body) {
            Ok(events) => ask(context, |tx| ApiJob::Emit(events, tx)).await,
            Err((status, body)) => json(status, body),
        },
        Route::Drain(id) => {
            let Ok(id) = id.parse::<u64>() else {
                return error(StatusCode::BAD_REQUEST, format!("`{id}` is not a node id"));
            };
            let _ = context
                .inputs
                .lock()
                .expect("inputs")
                .send(Input::Drain(id));
            json(StatusCode::ACCEPTED, serde_json::json!({ "draining": id }))
        }
    }
}

async fn ask(
    context: &ApiContext,
    job: impl FnOnce(tokio::sync::oneshot::Sender<Reply>) -> ApiJob,
) -> Response<Full<Bytes>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if context.jobs.lock().expect("jobs").send(job(tx)).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping");
    }
    match rx.await {
        Ok((status, body)) => json(status, body),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping"),
    }
}

fn prometheus(status: &serde_json::Value) -> String {
    let mut out = String::new();
    let metrics = &status["metrics"];
    out += &format!(
        "trackc_frames_accepted_total {}\n",
        metrics["frames_accepted"].as_u64().unwrap_or(0)
    );
    if let Some(rejected) = metrics["frames_rejected"].as_object() {
        for (why, n) in rejected {
            out += &format!("trackc_frames_rejected_total{{reason=\"{why}\"}} {n}\n");
        }
    }
    if let Some(executed) = metrics["blocks_executed"].as_object() {
        for (outcome, n) in executed {
            out += &format!("trackc_blocks_executed_total{{outcome=\"{outcome}\"}} {n}\n");
        }
    }
    out += &format!(
        "trackc_blocks_refused_total {}\n",
        metrics["blocks_refused"].as_u64().unwrap_or(0)
    );
    out += &format!(
        "trackc_blocks_outstanding {}\n",
        metrics["blocks_outstanding"].as_u64().unwrap_or(0)
    );
    let database = &status["database"];
    out += &format!(
        "trackc_database_reachable {}\n",
        u8::from(database["reachable"] == true)
    );
    out += &format!(
        "trackc_database_retries_total {}\n",
        database["retries"].as_u64().unwrap_or(0)
    );
    out
}

/// The API thread: deploys and events, one at a time, on its own
/// connection.
pub fn serve_jobs(mut store: Box<dyn Store>, jobs: Receiver<ApiJob>, owner: Sender<Command>) {
    let jit = Jit::new().ok();
    while let Ok(job) = jobs.recv() {
        match job {
            ApiJob::Deploy(request, reply) => {
                let answer = match &jit {
                    Some(jit) => deploy(store.as_mut(), jit, request),
                    None => failure(StatusCode::INTERNAL_SERVER_ERROR, "the JIT could not start"),
                };
                if answer.0 == StatusCode::OK {
                    let _ = owner.send(Command::CheckBundle);
                }
                let _ = reply.send(answer);
            }
            ApiJob::Emit(events, reply) => {
                let answer = match store.insert_events(&events, now_micros()) {
                    Ok(()) => (
                        StatusCode::OK,
                        serde_json::json!({ "emitted": events.len() }),
                    ),
                    Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, e),
                };
                let _ = reply.send(answer);
            }
        }
    }
}

/// Compiles the bundle against its schema, refuses it with the
/// diagnostics if it has errors, else deploys it (refusing a deploy that
/// would strand records, as `trackc run` does).
fn deploy(store: &mut dyn Store, jit: &Jit, request: DeployRequest) -> Reply {
    deploy_checked(store, jit, request).unwrap_or_else(|refusal| refusal)
}

fn deploy_checked(
    store: &mut dyn Store,
    jit: &Jit,
    request: DeployRequest,
) -> std::result::Result<Reply, Reply> {
    let internal = |e: Error| failure(StatusCode::INTERNAL_SERVER_ERROR, e);
    let files: Vec<(String, String)> = request
        .files
        .into_iter()
        .map(|f| (f.name, f.text))
        .collect();
    let schema = match request.schema {
        Some(s) => Some((s.name, s.text)),
        None => store.schema().map_err(internal)?,
    };
    let tracks = bundle::load(jit, &files, schema.clone(), store.dialect())
        .map_err(|e| failure(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let changed =
        bundle::deploy(store, &tracks, &request.map, schema.as_ref()).map_err(|e| match e {
            Error::Deploy(_) | Error::Config(_) => failure(StatusCode::CONFLICT, e),
            e => internal(e),
        })?;
    let names: Vec<String> = tracks.iter().map(|t| t.ir.name.clone()).collect();
    Ok((
        StatusCode::OK,
        serde_json::json!({ "tracks": names, "changed": changed }),
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
