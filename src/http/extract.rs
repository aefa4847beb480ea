//! Extractors whose rejections are [`ApiError`]s, so bad input always gets the JSON error envelope.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::request::Parts;

use crate::http::error::ApiError;

/// `axum::Json` with JSON errors: 400 for malformed or mistyped bodies, 413 past the body limit.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Query` with JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `axum::extract::Path` with JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// The peer address of the connection, or `unknown` when the server was not started with it.
pub struct ClientAddr(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ci| ci.0.ip().to_string());
        Ok(ClientAddr(addr.unwrap_or_else(|| "unknown".to_string())))
    }
}

/// Who is making a change, for the audit log: the caller's principal (set by the admin and session
/// middleware) and the peer address. A route without a principal records `anonymous`.
pub struct AuditActor(pub crate::service::audit::Actor);

impl<S: Send + Sync> FromRequestParts<S> for AuditActor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ClientAddr(addr) = ClientAddr::from_request_parts(parts, state).await?;
        let name = parts
            .extensions
            .get::<crate::auth::Principal>()
            .map(crate::auth::Principal::display_name)
            .unwrap_or_else(|| "anonymous".to_string());
        Ok(AuditActor(crate::service::audit::Actor::new(name, addr)))
    }
}
