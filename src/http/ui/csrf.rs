//! `CsrfForm<T>`: the one place a page form is parsed and its CSRF token checked. Every
//! state-changing page handler takes it instead of `Form`, so no handler can forget the check.
//! It never decides anything else about the form: `T` is the handler's business.

use axum::body::Body;
use axum::extract::{Extension, Form, FromRequest, FromRequestParts, RawForm, Request};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::auth::Principal;
use crate::http::middleware::check_csrf;

/// A form body parsed into `T`, after its `csrf` field passed the check of a session's forms: the
/// session's token, sent from this origin (`check_csrf`). A token principal needs no CSRF.
///
/// Rejections are the ones a handler gave before this extractor: `Form`'s own for a body that is
/// no form or does not parse, then 403 `csrf_failed` in the API error envelope.
pub struct CsrfForm<T>(pub T);

/// The form of a button that only needs the CSRF token (logout, retry, cancel).
#[derive(Deserialize)]
pub struct NoFields {}

/// The token field every page form carries.
#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

impl<T, S> FromRequest<S> for CsrfForm<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let Extension(principal) = Extension::<Principal>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        // Read the body once (content type first, then the bytes, as `Form` does), then parse it
        // twice: into `T`, which need not know the token, and into the token field.
        let RawForm(bytes) = RawForm::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let again = || Request::from_parts(parts.clone(), Body::from(bytes.clone()));
        let Form(fields) = Form::<T>::from_request(again(), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Form(CsrfField { csrf }) = Form::<CsrfField>::from_request(again(), state)
            .await
            .map_err(IntoResponse::into_response)?;
        if let Principal::Session { csrf_token, .. } = &principal {
            check_csrf(&parts.headers, &parts.extensions, &csrf, csrf_token)
                .map_err(IntoResponse::into_response)?;
        }
        Ok(CsrfForm(fields))
    }
}
