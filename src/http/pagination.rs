//! `page` / `page_size` query parameters and the `{"items", "total", "page", "page_size"}` envelope.

use serde::Serialize;
use utoipa::ToSchema;

use crate::http::error::{ApiError, ApiResult};

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageParams {
    pub page: i64,
    pub page_size: i64,
}

impl PageParams {
    /// Checks the raw values: page >= 1, 1 <= page_size <= 500.
    pub fn new(page: Option<i64>, page_size: Option<i64>) -> ApiResult<Self> {
        let page = page.unwrap_or(1);
        let page_size = page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        if page < 1 || page > i64::from(i32::MAX) {
            return Err(ApiError::bad_request(
                "invalid_query",
                "page must be a whole number of at least 1",
            ));
        }
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("page_size must be between 1 and {MAX_PAGE_SIZE}"),
            ));
        }
        Ok(Self { page, page_size })
    }

    pub fn limit(self) -> i64 {
        self.page_size
    }

    pub fn offset(self) -> i64 {
        (self.page - 1) * self.page_size
    }

    pub fn wrap<T>(self, items: Vec<T>, total: i64) -> Page<T> {
        Page {
            items,
            total,
            page: self.page,
            page_size: self.page_size,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub page: i64,
    pub page_size: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(
            PageParams::new(None, None).unwrap(),
            PageParams {
                page: 1,
                page_size: 50
            }
        );
        assert_eq!(PageParams::new(Some(3), Some(20)).unwrap().offset(), 40);
        assert!(PageParams::new(Some(0), None).is_err());
        assert!(PageParams::new(None, Some(0)).is_err());
        assert!(PageParams::new(None, Some(501)).is_err());
        assert!(PageParams::new(None, Some(500)).is_ok());
    }
}
