//! The public redeem page: a form for a code and an address, and the answer, with nothing of the
//! admin pages reachable from it. It works without JavaScript and calls the same service as
//! `POST /api/redeem`, under the same per-address limit.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;

use crate::app::AppState;
use crate::http::extract::ClientAddr;
use crate::http::middleware::ExpectedOrigin;
use crate::service::ErrorKind;
use crate::service::redeem::{self as service, RedeemRequest};

pub fn routes() -> Router<AppState> {
    Router::new().route("/redeem", get(form).post(submit))
}

#[derive(Template, WebTemplate)]
#[template(path = "redeem.html")]
struct RedeemPage {
    code: String,
    email: String,
    error: Option<String>,
    /// The team of a redeem that went through.
    invited: Option<String>,
}

async fn form() -> RedeemPage {
    RedeemPage {
        code: String::new(),
        email: String::new(),
        error: None,
        invited: None,
    }
}

#[derive(Deserialize)]
struct RedeemForm {
    code: String,
    email: String,
}

async fn submit(
    State(app): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    expected: Option<Extension<ExpectedOrigin>>,
    Form(form): Form<RedeemForm>,
) -> Response {
    let code = form.code.trim().to_string();
    let email = form.email.trim().to_string();
    let page = |status: StatusCode, error: &str, code: String| {
        (
            status,
            RedeemPage {
                code,
                email: email.clone(),
                error: Some(error.to_string()),
                invited: None,
            },
        )
            .into_response()
    };
    if !super::origin_is_absent_or_same(&headers, expected.as_ref().map(|e| &e.0)) {
        return page(
            StatusCode::FORBIDDEN,
            "This form was submitted from another site.",
            String::new(),
        );
    }
    let req = RedeemRequest {
        code: code.clone(),
        email: email.clone(),
    };
    match service::redeem(&app, &addr, req).await {
        Ok(done) => RedeemPage {
            code: String::new(),
            email: email.clone(),
            error: None,
            invited: Some(done.team),
        }
        .into_response(),
        Err(e) => {
            let (status, message, keep_code) = match (e.kind, e.code.as_ref()) {
                (ErrorKind::Invalid, "invalid_email") => (
                    StatusCode::BAD_REQUEST,
                    "That email address does not look right.",
                    true,
                ),
                (ErrorKind::Invalid, _) => (
                    StatusCode::BAD_REQUEST,
                    "This code cannot be redeemed. Check that you typed it as given.",
                    false,
                ),
                (ErrorKind::RateLimited, _) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many tries from your network. Please try again in an hour.",
                    true,
                ),
                (ErrorKind::Unavailable, _) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "No seat is free right now. Your code was not used; please try again later.",
                    true,
                ),
                _ => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on our side. Your code was not used; please try again later.",
                    true,
                ),
            };
            page(
                status,
                message,
                if keep_code { code } else { String::new() },
            )
        }
    }
}
