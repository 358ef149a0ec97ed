//! Console sessions: signing in with a user's token makes a session whose
//! random id goes in a cookie (HttpOnly, SameSite=Strict, Secure over
//! TLS); the token itself is never stored or sent again. Each session has
//! its own CSRF token, which every state-changing form carries.

use crate::node::config::UserRole;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A session ends this long after it began (a working day and more).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; signing in past this drops the oldest first.
pub const SESSIONS_MAX: usize = 10_000;
/// The cookie's name.
pub const COOKIE: &str = "trackc_session";

#[derive(Clone, Debug)]
pub struct Session {
    pub user: String,
    pub role: UserRole,
    pub csrf: String,
    began: Instant,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

/// Random hex from the operating system (32 bytes).
fn random() -> String {
    crate::node::config::new_token()
        .map(|t| t.trim_start_matches("trackc_").to_string())
        .unwrap_or_else(|_| crate::db::unique_id("session", crate::clock::now_micros()))
}

impl Sessions {
    /// A new session of `user`: its id (for the cookie).
    pub fn begin(&self, user: &str, role: UserRole) -> String {
        let id = random();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.began.elapsed() < SESSION_TTL);
        if map.len() >= SESSIONS_MAX {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.began)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Session {
                user: user.to_string(),
                role,
                csrf: random(),
                began: Instant::now(),
            },
        );
        id
    }

    /// The live session of a request's `Cookie` header, if any.
    pub fn of(&self, cookie_header: Option<&str>) -> Option<Session> {
        let id = session_id(cookie_header?)?;
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id)
            .filter(|s| s.began.elapsed() < SESSION_TTL)
            .cloned()
    }

    pub fn end(&self, cookie_header: Option<&str>) {
        if let Some(id) = cookie_header.and_then(session_id) {
            self.map
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
        }
    }
}

/// The session id in a `Cookie` header.
fn session_id(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|part| part.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value that carries session `id` (`None`: clears it).
pub fn set_cookie(id: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match id {
        Some(id) => format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            SESSION_TTL.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// Whether a form's CSRF token is the session's (in constant time).
pub fn csrf_matches(session: &Session, given: Option<&str>) -> bool {
    let Some(given) = given else { return false };
    let (a, b) = (session.csrf.as_bytes(), given.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends() {
        let sessions = Sessions::default();
        let id = sessions.begin("ada", UserRole::Viewer);
        let header = format!("other=1; {COOKIE}={id}; x=y");
        let s = sessions.of(Some(&header)).expect("the session");
        assert_eq!(s.user, "ada");
        assert!(csrf_matches(&s, Some(&s.csrf.clone())));
        assert!(!csrf_matches(&s, Some("forged")));
        assert!(!csrf_matches(&s, None));
        assert!(sessions.of(Some("trackc_session=guess")).is_none());
        sessions.end(Some(&header));
        assert!(sessions.of(Some(&header)).is_none());
        let cookie = set_cookie(Some(&id), true);
        assert!(cookie.contains("HttpOnly; SameSite=Strict"), "{cookie}");
        assert!(cookie.ends_with("; Secure"), "{cookie}");
    }
}
