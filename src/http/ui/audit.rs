//! The Audit page: the audit log, newest first, with filters (actor, action, target, time range)
//! and the shared pager. Read-only: nothing on it changes a row.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;

use super::Layout;
use super::list_filters::{ListFilters, Select, page_number, within_pages};
use super::times::Moment;
use crate::app::AppState;
use crate::auth::Principal;
use crate::http::pagination::PageParams;
use crate::service::audit::{self as service, ACTIONS, AuditQuery};
use crate::store::audit::AuditEntry;

pub fn routes() -> Router<AppState> {
    Router::new().route("/audit", get(list))
}

#[derive(Deserialize)]
struct ListQuery {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// Read as text: a page that is no number is explained on the page.
    page: Option<String>,
}

struct Row {
    entry: AuditEntry,
    at: Moment,
}

#[derive(Template, WebTemplate)]
#[template(path = "audit.html")]
struct ListPage {
    layout: Layout,
    rows: Vec<Row>,
    filters: ListFilters,
    total: i64,
    error: Option<String>,
}

const PAGE_SIZE: i64 = 50;

fn filters(q: &ListQuery) -> ListFilters {
    let actions = ACTIONS.iter().map(|a| a.to_string()).collect();
    ListFilters::new(
        "/audit",
        vec![Select::new(
            "Action",
            "action",
            actions,
            q.action.as_deref(),
        )],
    )
    .with_search("Actor", "actor", q.actor.as_deref())
    .with_text("Target", "target", q.target.as_deref())
    .with_text("From", "from", q.from.as_deref())
    .with_text("To", "to", q.to.as_deref())
}

async fn list(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Response {
    let mut page = ListPage {
        layout: Layout::new(&principal, "/audit"),
        rows: Vec::new(),
        filters: filters(&q),
        total: 0,
        error: None,
    };
    let number = page_number(q.page.as_deref());
    let query = AuditQuery {
        actor: q.actor,
        action: q.action,
        target: q.target,
        from: q.from,
        to: q.to,
    }
    .check()
    .map_err(|e| e.message);
    let params = PageParams::new(number.clone().ok(), Some(PAGE_SIZE)).map_err(|e| e.message);
    let (query, mut params) = match (query, params) {
        (Ok(f), Ok(p)) => (f, p),
        (Err(e), _) | (_, Err(e)) => {
            page.error = Some(e);
            return page.into_response();
        }
    };
    page.error = number.err();
    let mut listed = service::list_page(&app.users, &query, params.limit(), params.offset()).await;
    if let Ok((_, total)) = &listed {
        let last = within_pages(params.page, *total, PAGE_SIZE);
        if last < params.page {
            params.page = last;
            listed = service::list_page(&app.users, &query, params.limit(), params.offset()).await;
        }
    }
    match listed {
        Ok((items, total)) => {
            page.total = total;
            page.filters.at_page(params.page, total, PAGE_SIZE);
            let now = app.clock.now_ms();
            page.rows = items
                .into_iter()
                .map(|entry| Row {
                    at: Moment::new(entry.at, now),
                    entry,
                })
                .collect();
        }
        Err(e) => page.error = Some(e.message),
    }
    page.into_response()
}
