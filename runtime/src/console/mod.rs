//! The web console, served by every node at `/` on its HTTP address (and
//! by `trackc serve` for one database): server-rendered pages, a little
//! script, all embedded in the binary; nothing loaded from outside.
//!
//! Signing in takes a user's token once and keeps a session cookie
//! (`session`); every route checks its role on the server, every form
//! that changes something carries the session's CSRF token, and every
//! action goes through the same work, roles and audit log as the API.
//!
//! | page | role |
//! |---|---|
//! | `GET /` group, `GET /tracks/NAME`, `GET /record?track&key`, `GET /outbox`, `GET /plan` | viewer |
//! | `POST /console/plan` (a plan) | author |
//! | `POST /console/retry`, `/console/drain`, `/console/emit` | operator |
//! | `POST /console/deploy`, `/console/rollback` | author |

pub mod pages;
pub mod session;

use crate::db::{Actor, NewEvent};
use crate::node::api::{ApiContext, ApiJob, DeployRequest, Reply, SourceFile, Work};
use crate::node::config::UserRole;
use crate::node::Input;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use pages::{Page, Viewer};
use session::Session;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc::TrySendError;
use std::time::Instant;

/// The largest form (a pasted track file for a plan or deploy).
const FORM_BYTES_MAX: usize = 2 << 20;
/// How long a page waits for the API thread (a plan of a big track).
const PAGE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

const ASSETS: [(&str, &str, &str); 2] = [
    (
        "/assets/console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
    (
        "/assets/console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
];

/// Whether a request is the console's (the rest is the JSON API).
pub fn handles(method: &Method, path: &str) -> bool {
    match *method {
        Method::GET => {
            matches!(
                path,
                "/" | "/signin" | "/outbox" | "/plan" | "/record" | "/console/status"
            ) || path.starts_with("/tracks/")
                || path.starts_with("/assets/")
        }
        Method::POST => path.starts_with("/console/"),
        _ => false,
    }
}

fn html(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        "content-type",
        "text/html; charset=utf-8".parse().expect("a header"),
    );
    h.insert(
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; \
         form-action 'self'; base-uri 'none'"
            .parse()
            .expect("a header"),
    );
    h.insert(
        "x-content-type-options",
        "nosniff".parse().expect("a header"),
    );
    h.insert("cache-control", "no-store".parse().expect("a header"));
    r
}

fn redirect(to: &str, cookie: Option<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut().insert(
        "location",
        to.parse()
            .unwrap_or_else(|_| "/".parse().expect("a header")),
    );
    if let Some(c) = cookie {
        if let Ok(v) = c.parse() {
            r.headers_mut().insert("set-cookie", v);
        }
    }
    r
}

/// The pairs of a query string or form body, percent-decoded.
fn pairs(text: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(text).into_owned().collect()
}

/// Serves one console request.
pub async fn respond(
    req: Request<Incoming>,
    ip: IpAddr,
    context: &ApiContext,
) -> Response<Full<Bytes>> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    if method == Method::GET {
        if let Some((_, kind, text)) = ASSETS.iter().find(|(p, _, _)| *p == path) {
            let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
            r.headers_mut()
                .insert("content-type", kind.parse().expect("a header"));
            r.headers_mut()
                .insert("cache-control", "max-age=300".parse().expect("a header"));
            return r;
        }
        if path.starts_with("/assets/") {
            return html(
                StatusCode::NOT_FOUND,
                pages::message(None, "Not found", "no such file", false, "/"),
            );
        }
        if path == "/signin" {
            return html(StatusCode::OK, pages::signin(None));
        }
    }
    let query = pairs(req.uri().query().unwrap_or("").as_bytes());
    let cookie = req
        .headers()
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let form = if method == Method::POST {
        let body = Limited::new(req.into_body(), FORM_BYTES_MAX).collect();
        match tokio::time::timeout(std::time::Duration::from_secs(30), body).await {
            Ok(Ok(b)) => pairs(&b.to_bytes()),
            _ => {
                return html(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    pages::message(
                        None,
                        "Refused",
                        "the form is too large or too slow",
                        false,
                        "/",
                    ),
                )
            }
        }
    } else {
        HashMap::new()
    };
    if path == "/console/signin" {
        return sign_in(form.get("token").map(String::as_str), ip, context);
    }
    let Some(session) = context.sessions.of(cookie.as_deref()) else {
        if method == Method::GET && path != "/console/status" {
            return redirect("/signin", None);
        }
        return html(
            StatusCode::UNAUTHORIZED,
            pages::message(
                None,
                "Signed out",
                "sign in again: the session has ended",
                false,
                "/signin",
            ),
        );
    };
    let viewer = Viewer {
        user: session.user.clone(),
        role: session.role,
        csrf: session.csrf.clone(),
        cycle_ms: context.config.cycle.as_millis() as u64,
    };
    if method == Method::POST {
        if !session::csrf_matches(&session, form.get("csrf").map(String::as_str)) {
            return html(
                StatusCode::FORBIDDEN,
                pages::message(
                    Some(&viewer),
                    "Refused",
                    "this form is not from this session (reload the page and try again)",
                    false,
                    "/",
                ),
            );
        }
        return act(
            &path,
            &form,
            &session,
            &viewer,
            ip,
            context,
            cookie.as_deref(),
        )
        .await;
    }
    let status = || context.shared.status.lock().expect("status").clone();
    let page = match path.as_str() {
        "/console/status" => {
            let mut r = Response::new(Full::new(Bytes::from(status().to_string())));
            r.headers_mut().insert(
                "content-type",
                "application/json".parse().expect("a header"),
            );
            r.headers_mut()
                .insert("cache-control", "no-store".parse().expect("a header"));
            return r;
        }
        "/" => Page::Group {
            status: status(),
            standalone: context.standalone,
        },
        "/outbox" => Page::Outbox {
            state: query.get("state").cloned(),
        },
        "/plan" => Page::Plan {
            text: None,
            name: String::new(),
        },
        "/record" => match (query.get("track"), query.get("key")) {
            (Some(track), Some(key)) => Page::Record {
                track: track.clone(),
                key: key.clone(),
            },
            _ => {
                return html(
                    StatusCode::BAD_REQUEST,
                    pages::message(
                        Some(&viewer),
                        "Which record?",
                        "give a track and a key",
                        false,
                        "/",
                    ),
                )
            }
        },
        p => {
            let name = p.trim_start_matches("/tracks/");
            let name = url::form_urlencoded::parse(format!("n={name}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let diff = query.get("diff").and_then(|d| {
                let (a, b) = d.split_once(',')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            });
            Page::Track { name, diff }
        }
    };
    render(page, &viewer, &session, ip, context).await
}

/// Renders a page on the API thread.
async fn render(
    page: Page,
    viewer: &Viewer,
    session: &Session,
    ip: IpAddr,
    context: &ApiContext,
) -> Response<Full<Bytes>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job = ApiJob {
        work: Work::Console(page, viewer.clone(), tx),
        by: actor(session),
        address: ip,
        reply: None,
    };
    if let Err(e) = context.jobs.try_send(job) {
        let why = match e {
            TrySendError::Full(_) => "the node is busy; try again shortly",
            TrySendError::Disconnected(_) => "the node is stopping",
        };
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::message(Some(viewer), "Busy", why, false, "/"),
        );
    }
    match tokio::time::timeout(PAGE_WAIT, rx).await {
        Ok(Ok((status, body))) => html(status, body),
        _ => html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::message(
                Some(viewer),
                "Busy",
                "the page took too long to gather",
                false,
                "/",
            ),
        ),
    }
}

fn actor(session: &Session) -> Actor {
    Actor {
        name: session.user.clone(),
        role: session.role.name().into(),
    }
}

fn sign_in(token: Option<&str>, ip: IpAddr, context: &ApiContext) -> Response<Full<Bytes>> {
    if context.auth.retry_after(ip, Instant::now()).is_some() {
        return html(
            StatusCode::TOO_MANY_REQUESTS,
            pages::signin(Some(
                "too many failed sign-ins from this address: wait a minute",
            )),
        );
    }
    let Some(user) = token.and_then(|t| context.config.user(t.trim())) else {
        context.auth.failed(ip, Instant::now());
        let nobody = Actor {
            name: "unknown".into(),
            role: "none".into(),
        };
        context.refused(
            nobody,
            ip,
            "POST /console/signin",
            StatusCode::UNAUTHORIZED,
            "a token no user has",
        );
        return html(
            StatusCode::UNAUTHORIZED,
            pages::signin(Some("no user has this token")),
        );
    };
    let id = context.sessions.begin(&user.name, user.role);
    redirect(
        "/",
        Some(session::set_cookie(Some(&id), context.config.tls.is_some())),
    )
}

/// What each action needs.
fn needs(path: &str) -> Option<UserRole> {
    Some(match path {
        "/console/signout" => UserRole::Viewer,
        "/console/plan" | "/console/deploy" | "/console/rollback" => UserRole::Author,
        "/console/retry" | "/console/drain" | "/console/emit" => UserRole::Operator,
        _ => return None,
    })
}

/// Does a form's action.
#[allow(clippy::too_many_arguments)]
async fn act(
    path: &str,
    form: &HashMap<String, String>,
    session: &Session,
    viewer: &Viewer,
    ip: IpAddr,
    context: &ApiContext,
    cookie: Option<&str>,
) -> Response<Full<Bytes>> {
    let Some(needed) = needs(path) else {
        return html(
            StatusCode::NOT_FOUND,
            pages::message(Some(viewer), "Not found", "no such action", false, "/"),
        );
    };
    if !session.role.allows(needed) {
        let why = format!("needs the {} role", needed.name());
        context.refused(
            actor(session),
            ip,
            &format!("POST {path}"),
            StatusCode::FORBIDDEN,
            &why,
        );
        return html(
            StatusCode::FORBIDDEN,
            pages::message(
                Some(viewer),
                "Refused",
                &format!(
                    "user `{}` ({}) may not do this: it {why}",
                    session.user,
                    session.role.name()
                ),
                false,
                "/",
            ),
        );
    }
    let text = |name: &str| form.get(name).cloned().unwrap_or_default();
    let file = || {
        let name = text("name");
        if name.trim().is_empty() {
            "pasted.dt".to_string()
        } else {
            name
        }
    };
    let work = match path {
        "/console/signout" => {
            context.sessions.end(cookie);
            return redirect(
                "/signin",
                Some(session::set_cookie(None, context.config.tls.is_some())),
            );
        }
        "/console/plan" => {
            let page = Page::Plan {
                text: Some(text("text")),
                name: file(),
            };
            return render(page, viewer, session, ip, context).await;
        }
        "/console/drain" => {
            let Ok(id) = text("node").parse::<u64>() else {
                return html(
                    StatusCode::BAD_REQUEST,
                    pages::message(Some(viewer), "Refused", "which node?", false, "/"),
                );
            };
            let _ = context
                .inputs
                .lock()
                .expect("inputs")
                .send(Input::Drain(id));
            context.audit_only(Work::Drained(id), actor(session), ip);
            return html(
                StatusCode::ACCEPTED,
                pages::message(
                    Some(viewer),
                    "Draining",
                    &format!("node {id} hands its tracks over and leaves"),
                    true,
                    "/",
                ),
            );
        }
        "/console/retry" => Work::RetryParked(
            form.get("id")
                .cloned()
                .filter(|_| !form.contains_key("all")),
        ),
        "/console/emit" => Work::Emit(vec![NewEvent {
            name: text("event"),
            key: Some(text("key")),
        }]),
        "/console/deploy" => Work::Deploy(DeployRequest {
            files: vec![SourceFile {
                name: file(),
                text: text("text"),
            }],
            schema: None,
            map: Vec::new(),
            databases: Vec::new(),
        }),
        "/console/rollback" => match text("number").parse() {
            Ok(number) => Work::Rollback {
                number,
                map: Vec::new(),
            },
            Err(_) => {
                return html(
                    StatusCode::BAD_REQUEST,
                    pages::message(Some(viewer), "Refused", "which deploy?", false, "/"),
                )
            }
        },
        _ => {
            return html(
                StatusCode::NOT_FOUND,
                pages::message(Some(viewer), "Not found", "no such action", false, "/"),
            )
        }
    };
    if path == "/console/emit" && text("event").trim().is_empty() {
        return html(
            StatusCode::BAD_REQUEST,
            pages::message(
                Some(viewer),
                "Refused",
                "the event needs a name",
                false,
                "/",
            ),
        );
    }
    let back = if path == "/console/retry" {
        "/outbox"
    } else {
        "/"
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job = ApiJob {
        work,
        by: actor(session),
        address: ip,
        reply: Some(tx),
    };
    if context.jobs.try_send(job).is_err() {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::message(Some(viewer), "Busy", "try again shortly", false, back),
        );
    }
    let (status, body): Reply = match tokio::time::timeout(PAGE_WAIT, rx).await {
        Ok(Ok(reply)) => reply,
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": "no answer"}),
        ),
    };
    if status.is_success() && path == "/console/retry" {
        return redirect("/outbox", None);
    }
    let text = body["error"]
        .as_str()
        .or(body["summary"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    let heading = if status.is_success() {
        "Done"
    } else {
        "Refused"
    };
    html(
        status,
        pages::message(Some(viewer), heading, &text, status.is_success(), back),
    )
}
