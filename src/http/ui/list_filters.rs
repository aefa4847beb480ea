//! The filters and pager of a list page (Jobs, Sync sessions, Accounts; Codes next): which
//! select boxes (and search box) the filter form shows, which page is shown, and the links to the pages beside it.
//! `templates/partials/list_filters.html` draws them; this module only builds values and links.

/// A list page's filter form and pager.
pub struct ListFilters {
    /// The page's path, where the filter form sends its query.
    pub action: &'static str,
    pub selects: Vec<Select>,
    /// A free-text search box after the selects, when the list has one.
    pub search: Option<Search>,
    /// More text boxes after it (the Audit page's actor, target and times).
    pub texts: Vec<Search>,
    pub page: i64,
    pub pages: i64,
}

/// One select box of the filter form: `any` (the empty value) and then `options`.
pub struct Select {
    pub label: &'static str,
    /// The query parameter it sets.
    pub name: &'static str,
    pub options: Vec<String>,
    /// The value in the current query, or empty.
    pub chosen: String,
}

/// The search box of a filter form.
pub struct Search {
    pub label: &'static str,
    /// The query parameter it sets.
    pub name: &'static str,
    /// The text in the current query, or empty.
    pub value: String,
}

impl Search {
    /// The element id tests and scripts find it by: `filter-` and the name, dashed.
    pub fn element_id(&self) -> String {
        format!("filter-{}", self.name.replace('_', "-"))
    }
}

impl Select {
    pub fn new(
        label: &'static str,
        name: &'static str,
        options: Vec<String>,
        chosen: Option<&str>,
    ) -> Self {
        Self {
            label,
            name,
            options,
            chosen: chosen.unwrap_or_default().to_string(),
        }
    }

    /// The element id tests and scripts find it by: `filter-` and the name, dashed.
    pub fn element_id(&self) -> String {
        format!("filter-{}", self.name.replace('_', "-"))
    }
}

impl ListFilters {
    pub fn new(action: &'static str, selects: Vec<Select>) -> Self {
        Self {
            action,
            selects,
            search: None,
            texts: Vec::new(),
            page: 1,
            pages: 1,
        }
    }

    /// Adds a search box.
    pub fn with_search(
        mut self,
        label: &'static str,
        name: &'static str,
        value: Option<&str>,
    ) -> Self {
        self.search = Some(Search {
            label,
            name,
            value: value.unwrap_or_default().to_string(),
        });
        self
    }

    /// Adds a text box after the search box.
    pub fn with_text(
        mut self,
        label: &'static str,
        name: &'static str,
        value: Option<&str>,
    ) -> Self {
        self.texts.push(Search {
            label,
            name,
            value: value.unwrap_or_default().to_string(),
        });
        self
    }

    /// Shows page `page` of a list of `total` items, `page_size` a page.
    pub fn at_page(&mut self, page: i64, total: i64, page_size: i64) {
        self.page = page;
        self.pages = page_count(total, page_size);
    }

    /// The query string of another page with the same filters.
    pub fn link(&self, page: i64) -> String {
        let filters = (self.selects.iter().map(|s| (s.name, s.chosen.as_str())))
            .chain(self.search.iter().map(|s| (s.name, s.value.as_str())))
            .chain(self.texts.iter().map(|s| (s.name, s.value.as_str())));
        page_query(page, filters)
    }
}

/// The `page` of a list page's address: empty means the first; anything but a whole number of at
/// least 1 is refused with a message the page shows (above its first page).
pub fn page_number(raw: Option<&str>) -> Result<i64, String> {
    match raw.map(str::trim).filter(|r| !r.is_empty()) {
        None => Ok(1),
        Some(r) => r
            .parse::<i64>()
            .ok()
            .filter(|p| (1..=i64::from(i32::MAX)).contains(p))
            .ok_or_else(|| "page must be a whole number of at least 1".to_string()),
    }
}

/// The page to show when `page` was asked for: a page past the end shows the last one.
pub fn within_pages(page: i64, total: i64, page_size: i64) -> i64 {
    page.min(page_count(total, page_size))
}

/// How many pages `total` items fill, at least one.
pub fn page_count(total: i64, page_size: i64) -> i64 {
    ((total + page_size - 1) / page_size).max(1)
}

/// `?page=N` and the filters that have a value, URL-encoded.
pub fn page_query<'a>(page: i64, filters: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let pairs: Vec<(&str, String)> = std::iter::once(("page", page.to_string()))
        .chain(
            (filters.into_iter())
                .filter(|(_, value)| !value.is_empty())
                .map(|(name, value)| (name, value.to_string())),
        )
        .collect();
    // Serialising string pairs cannot fail; an empty query would still name the first page.
    format!(
        "?{}",
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_query_encodes_values_and_leaves_out_empty_filters() {
        // (page, filters, the query string)
        type Case = (i64, &'static [(&'static str, &'static str)], &'static str);
        let cases: &[Case] = &[
            (1, &[], "?page=1"),
            (
                2,
                &[("status", ""), ("type", "pool.sync")],
                "?page=2&type=pool.sync",
            ),
            (
                3,
                &[("search", "a b&c=d%")],
                "?page=3&search=a+b%26c%3Dd%25",
            ),
            (4, &[("search", "ü/?#")], "?page=4&search=%C3%BC%2F%3F%23"),
        ];
        for (page, filters, want) in cases {
            assert_eq!(page_query(*page, filters.iter().copied()), *want);
        }
    }

    #[test]
    fn page_numbers_are_whole_numbers_from_one_and_past_the_end_is_the_last() {
        for (raw, want) in [
            (None, Ok(1)),
            (Some(""), Ok(1)),
            (Some("3"), Ok(3)),
            (Some("abc"), Err(())),
            (Some("0"), Err(())),
            (Some("-2"), Err(())),
            (Some("1.5"), Err(())),
            (Some("99999999999999999999"), Err(())),
        ] {
            assert_eq!(page_number(raw).map_err(drop), want, "{raw:?}");
        }
        assert_eq!(within_pages(9999, 120, 50), 3);
        assert_eq!(within_pages(2, 120, 50), 2);
        assert_eq!(within_pages(5, 0, 50), 1);
    }

    #[test]
    fn page_count_is_at_least_one() {
        for (total, size, want) in [(0, 50, 1), (1, 50, 1), (50, 50, 1), (51, 50, 2)] {
            assert_eq!(page_count(total, size), want);
        }
    }

    #[test]
    fn links_keep_the_search_text() {
        let filters = ListFilters::new(
            "/accounts",
            vec![Select::new(
                "Status",
                "status",
                Vec::new(),
                Some("cooldown"),
            )],
        )
        .with_search("Search", "search", Some("a@b c"));
        assert_eq!(filters.link(2), "?page=2&status=cooldown&search=a%40b+c");
    }

    #[test]
    fn select_ids_are_dashed_names() {
        let select = Select::new("Type", "sync_type", Vec::new(), None);
        assert_eq!(select.element_id(), "filter-sync-type");
    }
}
