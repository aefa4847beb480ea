//! Flash messages: every page form post answers with a redirect (post/redirect/get), and what it
//! did travels to the next page in a short-lived cookie that the shared layout shows once. A
//! reload of that page repeats only the GET: nothing is queued, imported or saved twice.
//!
//! The cookie (`poolkeeper_flash`: HttpOnly, SameSite=Strict, Path=/, one minute) holds a
//! [`Flash`] as base64url JSON. It is only ever shown through the templates, which escape it, so
//! a forged cookie can at most put text on its own sender's page. [`carry`] reads it for the
//! request and clears it on the response of the page that showed it.

use std::cell::RefCell;

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::app::App;

pub const FLASH_COOKIE: &str = "poolkeeper_flash";

/// Texts longer than this are cut: a cookie holds about 4 KiB.
const MAX_TEXT: usize = 300;
/// Refused rows of a batch import shown in its flash, and the length of each reason.
const MAX_ROWS: usize = 8;
const MAX_ROW_TEXT: usize = 150;

/// What a form post did, as the next page shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Flash {
    /// It was done.
    Done { message: String },
    /// It was not done, and why.
    NotDone { message: String },
    /// "Sync all" queued `count` jobs in a session.
    SyncQueued { count: usize, session_id: String },
    /// A mother was imported from a credential; in pool mode, her sync job and session.
    Imported {
        mother_id: i64,
        mother_name: String,
        updated: bool,
        job_id: Option<String>,
        session_id: Option<String>,
    },
    /// A bulk action queued one job over `count` items.
    JobQueued {
        job_id: String,
        job_type: String,
        count: usize,
    },
    /// A batch import: its counts and the first refused rows.
    Batch {
        total: usize,
        valid: usize,
        invalid: usize,
        imported: usize,
        /// (row number, why it was refused)
        refused: Vec<(usize, String)>,
    },
}

fn cut(text: String) -> String {
    cut_to(text, MAX_TEXT)
}

fn cut_to(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

impl Flash {
    pub fn done(message: impl Into<String>) -> Self {
        Flash::Done {
            message: cut(message.into()),
        }
    }

    pub fn not_done(message: impl Into<String>) -> Self {
        Flash::NotDone {
            message: cut(message.into()),
        }
    }

    /// Keeps the cookie small: long texts are cut, only the first refused rows kept.
    fn trimmed(self) -> Self {
        match self {
            Flash::Imported {
                mother_id,
                mother_name,
                updated,
                job_id,
                session_id,
            } => Flash::Imported {
                mother_id,
                mother_name: cut(mother_name),
                updated,
                job_id,
                session_id,
            },
            Flash::Batch {
                total,
                valid,
                invalid,
                imported,
                refused,
            } => Flash::Batch {
                total,
                valid,
                invalid,
                imported,
                refused: refused
                    .into_iter()
                    .take(MAX_ROWS)
                    .map(|(row, why)| (row, cut_to(why, MAX_ROW_TEXT)))
                    .collect(),
            },
            other => other,
        }
    }

    fn encode(&self) -> String {
        // A derived `Serialize` of plain fields cannot fail.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(value: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Whether the layout shows it as a refusal.
    pub fn is_error(&self) -> bool {
        matches!(self, Flash::NotDone { .. })
    }
}

/// A 303 redirect to `to` that carries `flash` to the page there.
pub fn redirect(app: &App, to: &str, flash: Flash) -> Response {
    let cookie = Cookie::build((FLASH_COOKIE, flash.trimmed().encode()))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(app.config.cookie_secure())
        .path("/")
        .max_age(time::Duration::minutes(1))
        .build();
    let mut response = Redirect::to(to).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// The flash of this request and whether a page took it.
struct Slot {
    flash: Option<Flash>,
    shown: bool,
}

tokio::task_local! {
    static SLOT: RefCell<Slot>;
}

/// The flash the request brought, for the page being rendered: taken once, and then cleared in the
/// browser by [`carry`]. `None` outside a page request.
pub fn take() -> Option<Flash> {
    SLOT.try_with(|slot| {
        let mut slot = slot.borrow_mut();
        let flash = slot.flash.take();
        slot.shown |= flash.is_some();
        flash
    })
    .ok()
    .flatten()
}

/// Middleware of the pages: makes the request's flash available to [`take`], and clears the cookie
/// once a page showed it (or when it cannot be read). A response that sets a new flash (a redirect
/// after a post) keeps it.
pub async fn carry(jar: CookieJar, req: Request, next: Next) -> Response {
    let Some(cookie) = jar.get(FLASH_COOKIE) else {
        return next.run(req).await;
    };
    let flash = Flash::decode(cookie.value());
    let unreadable = flash.is_none();
    let slot = RefCell::new(Slot {
        flash,
        shown: false,
    });
    let (mut response, shown) = SLOT
        .scope(slot, async move {
            let response = next.run(req).await;
            let shown = SLOT.with(|slot| slot.borrow().shown);
            (response, shown)
        })
        .await;
    let sets_new = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| v.as_bytes().starts_with(FLASH_COOKIE.as_bytes()));
    if (shown || unreadable) && !sets_new {
        let removal = Cookie::build((FLASH_COOKIE, ""))
            .http_only(true)
            .same_site(SameSite::Strict)
            .path("/")
            .max_age(time::Duration::ZERO)
            .build();
        if let Ok(value) = HeaderValue::from_str(&removal.to_string()) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flashes_survive_the_cookie_and_stay_small() {
        let long = "x".repeat(5_000);
        let cases = [
            Flash::done("Saved."),
            Flash::not_done("job is already succeeded"),
            Flash::SyncQueued {
                count: 2,
                session_id: "0192".into(),
            },
            Flash::Batch {
                total: 50,
                valid: 0,
                invalid: 50,
                imported: 0,
                refused: (1..=50).map(|r| (r, long.clone())).collect(),
            },
        ];
        for flash in cases {
            let value = flash.clone().trimmed().encode();
            assert!(value.len() < 3_500, "{} bytes", value.len());
            assert!(
                value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(Flash::decode(&value), Some(flash.trimmed()));
        }
        assert_eq!(Flash::decode("not base64 json!"), None);
        assert_eq!(
            Flash::decode(&URL_SAFE_NO_PAD.encode(b"{\"kind\":\"nope\"}")),
            None
        );
        match Flash::done(long) {
            Flash::Done { message } => assert!(message.len() <= MAX_TEXT + 3),
            other => panic!("{other:?}"),
        }
    }
}
