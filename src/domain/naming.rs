//! Naming templates for teams and children: parsing, validation and rendering.
//!
//! A template is literal text with the placeholders `{group}`, `{date}` (YYYYMMDD, UTC), `{seq3}`
//! (the day's sequence number, zero-padded to three digits) and `{domain}`. Nothing else in braces
//! is allowed, so a typo is refused when the template is saved instead of producing odd names later.
//! `{date}` and `{seq3}` may each appear once: with them repeated, a name could be read several
//! ways, and telling whether a provider's name is one the template renders would get costly.

use std::fmt;

use super::email;

pub const DEFAULT_TEAM_TEMPLATE: &str = "{group}-{date}-{seq3}";
pub const DEFAULT_CHILD_NAME_TEMPLATE: &str = "{group}-{date}-{seq3}";
pub const DEFAULT_CHILD_EMAIL_TEMPLATE: &str = "{group}-{date}-{seq3}@{domain}";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Group,
    Date,
    Seq3,
    Domain,
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Why a template was refused; the text names the offending part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateError {
    Empty,
    UnknownPlaceholder(String),
    Unclosed { at: usize, rest: String },
    StrayClose { at: usize },
    Repeated(&'static str),
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::Empty => f.write_str("template is empty"),
            TemplateError::UnknownPlaceholder(p) => write!(
                f,
                "unknown placeholder {{{p}}}; allowed are {{group}}, {{date}}, {{seq3}} and {{domain}}"
            ),
            TemplateError::Unclosed { at, rest } => {
                write!(f, "unclosed brace at position {at}: `{rest}` has no `}}`")
            }
            TemplateError::StrayClose { at } => {
                write!(f, "unmatched `}}` at position {at}")
            }
            TemplateError::Repeated(p) => {
                write!(f, "{{{p}}} may appear at most once in a template")
            }
        }
    }
}

/// The values a template is rendered with.
#[derive(Clone, Copy, Debug)]
pub struct NameValues<'a> {
    pub group: &'a str,
    /// YYYYMMDD.
    pub date: &'a str,
    pub seq: i64,
    pub domain: Option<&'a str>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        if text.trim().is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, c) in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        if c == '{' {
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(TemplateError::Unclosed {
                            at,
                            rest: text[at..].to_string(),
                        });
                    }
                    let part = match name.as_str() {
                        "group" => Part::Group,
                        "date" => Part::Date,
                        "seq3" => Part::Seq3,
                        "domain" => Part::Domain,
                        _ => return Err(TemplateError::UnknownPlaceholder(name)),
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(part);
                }
                '}' => return Err(TemplateError::StrayClose { at }),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        for (part, name) in [(Part::Date, "date"), (Part::Seq3, "seq3")] {
            if parts.iter().filter(|p| **p == part).count() > 1 {
                return Err(TemplateError::Repeated(name));
            }
        }
        Ok(Self { parts })
    }

    pub fn uses_domain(&self) -> bool {
        self.parts.contains(&Part::Domain)
    }

    pub fn uses_seq(&self) -> bool {
        self.parts.contains(&Part::Seq3)
    }

    /// The rendered text; `None` when the template needs `{domain}` and there is none.
    pub fn render(&self, v: &NameValues<'_>) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Group => out.push_str(v.group),
                Part::Date => out.push_str(v.date),
                Part::Seq3 => out.push_str(&format!("{:03}", v.seq)),
                Part::Domain => out.push_str(v.domain?),
            }
        }
        Some(out)
    }
}

impl Template {
    /// Whether `name` is something this template renders for `group` (any day, any sequence
    /// number). Sync uses it to leave alone a team this group already named, so a rerun uses no
    /// new number. `{domain}` must equal `domain` when one is given.
    ///
    /// The template becomes an anchored regular expression, matched in time linear in the name;
    /// names longer than [`MAX_MATCHED_NAME_LEN`] are never ones the group gave and are not read.
    pub fn matches(&self, name: &str, group: &str, domain: Option<&str>) -> bool {
        if name.len() > MAX_MATCHED_NAME_LEN {
            return false;
        }
        let mut pattern = String::from(r"\A(?s:");
        for part in &self.parts {
            match part {
                Part::Literal(s) => pattern.push_str(&regex::escape(s)),
                Part::Group => pattern.push_str(&regex::escape(group)),
                Part::Domain => match domain {
                    Some(d) => pattern.push_str(&regex::escape(d)),
                    // Unknown domain: any non-empty run.
                    None => pattern.push_str(".+"),
                },
                Part::Date => pattern.push_str("[0-9]{8}"),
                // `{seq3}` renders at least three digits.
                Part::Seq3 => pattern.push_str("[0-9]{3,}"),
            }
        }
        pattern.push_str(r")\z");
        // Only a group or domain far past every length limit could make the pattern too big.
        regex::Regex::new(&pattern).is_ok_and(|re| re.is_match(name))
    }
}

/// The longest provider name [`Template::matches`] reads (rendered names are at most 100
/// characters, addresses at most 254).
pub const MAX_MATCHED_NAME_LEN: usize = 256;

/// The UTC day of a millisecond timestamp as YYYYMMDD.
pub fn utc_day(now_ms: i64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(now_ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .date();
    format!(
        "{:04}{:02}{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// A group's naming settings as text, before they are accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamingSettings {
    pub team_template: String,
    pub child_name_template: String,
    pub child_email_template: String,
    pub email_domain: Option<String>,
}

/// A refused setting: the field and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingError {
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The templates of a group, parsed and checked together.
#[derive(Clone, Debug)]
pub struct Naming {
    pub team: Template,
    pub child_name: Template,
    pub child_email: Template,
    /// The group's `email_domain`, else the instance-wide `child_email_domain`.
    pub domain: Option<String>,
}

const MAX_NAME_LEN: usize = 100;

impl Naming {
    /// Checks every field; the first problem is returned. `fallback_domain` is the instance-wide
    /// `child_email_domain`; `sample_date` only serves to render a sample address.
    pub fn check(
        group: &str,
        settings: &NamingSettings,
        fallback_domain: Option<&str>,
        sample_date: &str,
    ) -> Result<Self, SettingError> {
        let parse = |field: &'static str, text: &str| {
            Template::parse(text).map_err(|e| SettingError {
                field,
                message: e.to_string(),
            })
        };
        let team = parse("team_template", &settings.team_template)?;
        let child_name = parse("child_name_template", &settings.child_name_template)?;
        let child_email = parse("child_email_template", &settings.child_email_template)?;
        if let Some(d) = &settings.email_domain
            && !email::is_valid_domain(d)
        {
            return Err(SettingError {
                field: "email_domain",
                message: format!("{d:?} is not a valid domain name"),
            });
        }
        let domain = settings
            .email_domain
            .clone()
            .or_else(|| fallback_domain.map(str::to_string));
        let naming = Self {
            team,
            child_name,
            child_email,
            domain,
        };
        for (field, template) in [
            ("team_template", &naming.team),
            ("child_name_template", &naming.child_name),
            ("child_email_template", &naming.child_email),
        ] {
            if template.uses_domain() && naming.domain.is_none() {
                return Err(SettingError {
                    field,
                    message: "uses {domain}, but the group has no email_domain and \
                              child_email_domain (CHILD_EMAIL_DOMAIN) is not configured"
                        .to_string(),
                });
            }
        }
        // Render the largest sequence of a day's first thousand so length limits hold too.
        let values = NameValues {
            group,
            date: sample_date,
            seq: 999,
            domain: naming.domain.as_deref(),
        };
        for (field, template) in [
            ("team_template", &naming.team),
            ("child_name_template", &naming.child_name),
        ] {
            let name = template.render(&values).unwrap_or_default();
            if name.trim().is_empty() || name.chars().count() > MAX_NAME_LEN {
                return Err(SettingError {
                    field,
                    message: format!(
                        "renders to {name:?}, which is not a name of 1-{MAX_NAME_LEN} characters"
                    ),
                });
            }
        }
        let address = naming.child_email.render(&values).unwrap_or_default();
        if !email::is_valid_address(&address) {
            return Err(SettingError {
                field: "child_email_template",
                message: format!("renders to {address:?}, which is not a valid email address"),
            });
        }
        Ok(naming)
    }

    /// Names for sequence numbers `first..first + count`.
    pub fn names(
        &self,
        group: &str,
        date: &str,
        template: &Template,
        first: i64,
        count: i64,
    ) -> Vec<String> {
        (first..first + count)
            .filter_map(|seq| {
                template.render(&NameValues {
                    group,
                    date,
                    seq,
                    domain: self.domain.as_deref(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_recognises_names_the_group_gave() {
        let t = Template::parse("{group}-{date}-{seq3}").unwrap();
        for (name, group, expected) in [
            ("pool-20261123-001", "pool", true),
            ("pool-20261123-1234", "pool", true),
            ("pool-20261123-01", "pool", false),
            ("other-20261123-001", "pool", false),
            ("pool-2026112-001", "pool", false),
            ("pool-20261123-001x", "pool", false),
            ("acme team", "pool", false),
        ] {
            assert_eq!(t.matches(name, group, None), expected, "{name}");
        }
        let e = Template::parse("{seq3}.{group}@{domain}").unwrap();
        assert!(e.matches("007.g@x.test", "g", Some("x.test")));
        assert!(!e.matches("007.g@y.test", "g", Some("x.test")));
        assert!(e.matches("007.g@y.test", "g", None));
    }

    /// A name that almost matches a template of several variable-length parts used to take
    /// exponential time (48 s for 7 placeholders on 100 characters); now it is linear.
    #[test]
    fn matching_a_long_near_miss_is_fast() {
        let t = Template::parse("{domain}{domain}{domain}{domain}{domain}{seq3}{date}").unwrap();
        let name = format!("{}x", "1".repeat(99));
        let started = std::time::Instant::now();
        assert!(!t.matches(&name, "g", None));
        assert!(t.matches("abcde000120260101", "g", None));
        assert!(!t.matches(&"1".repeat(MAX_MATCHED_NAME_LEN + 1), "g", None));
        let took = started.elapsed();
        // Generous for a debug build on a busy machine, and still far below the old seconds.
        assert!(took < std::time::Duration::from_millis(10), "{took:?}");
    }

    fn values(seq: i64, domain: Option<&str>) -> NameValues<'_> {
        NameValues {
            group: "pool",
            date: "20261123",
            seq,
            domain,
        }
    }

    #[test]
    fn renders_every_placeholder() {
        let cases = [
            ("{group}-{date}-{seq3}", 1, "pool-20261123-001"),
            ("{group}-{date}-{seq3}", 42, "pool-20261123-042"),
            ("{group}-{seq3}", 1234, "pool-1234"),
            ("x{seq3}@{domain}", 7, "x007@kids.example.org"),
            ("plain", 1, "plain"),
        ];
        for (text, seq, want) in cases {
            let t = Template::parse(text).unwrap();
            assert_eq!(
                t.render(&values(seq, Some("kids.example.org"))).as_deref(),
                Some(want),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_bad_templates_naming_the_part() {
        let cases = [
            ("", "empty"),
            ("   ", "empty"),
            ("{group}-{seq}", "{seq}"),
            ("{Group}", "{Group}"),
            ("{group", "{group"),
            ("a-{date", "{date"),
            ("a}b", "`}`"),
            ("{{group}}", "unclosed"),
            ("{seq3}-{seq3}", "{seq3} may appear at most once"),
            ("{date}{group}{date}", "{date} may appear at most once"),
        ];
        for (text, needle) in cases {
            let err = Template::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn domain_is_needed_only_when_used() {
        let t = Template::parse("{group}@{domain}").unwrap();
        assert!(t.uses_domain());
        assert_eq!(t.render(&values(1, None)), None);
        assert!(!Template::parse("{group}").unwrap().uses_domain());
    }

    #[test]
    fn utc_days() {
        let cases = [
            (0, "19700101"),
            (1_795_000_000_000, "20261118"),
            (86_400_000 - 1, "19700101"),
            (86_400_000, "19700102"),
        ];
        for (ms, want) in cases {
            assert_eq!(utc_day(ms), want, "{ms}");
        }
    }

    fn settings(email: &str, domain: Option<&str>) -> NamingSettings {
        NamingSettings {
            team_template: DEFAULT_TEAM_TEMPLATE.into(),
            child_name_template: DEFAULT_CHILD_NAME_TEMPLATE.into(),
            child_email_template: email.into(),
            email_domain: domain.map(str::to_string),
        }
    }

    #[test]
    fn settings_checks() {
        let ok = [
            (
                settings(DEFAULT_CHILD_EMAIL_TEMPLATE, Some("a.example")),
                None,
            ),
            (
                settings(DEFAULT_CHILD_EMAIL_TEMPLATE, None),
                Some("fallback.example"),
            ),
            (settings("{group}{seq3}@fixed.example", None), None),
        ];
        for (s, fallback) in ok {
            assert!(
                Naming::check("pool", &s, fallback, "20261123").is_ok(),
                "{s:?}"
            );
        }
        let bad = [
            (
                settings(DEFAULT_CHILD_EMAIL_TEMPLATE, None),
                None,
                "child_email_template",
                "{domain}",
            ),
            (
                settings("{group} {seq3}@{domain}", Some("a.example")),
                None,
                "child_email_template",
                "not a valid email address",
            ),
            (
                settings("{group}", Some("a.example")),
                None,
                "child_email_template",
                "not a valid email address",
            ),
            (
                settings(DEFAULT_CHILD_EMAIL_TEMPLATE, Some("not a domain")),
                None,
                "email_domain",
                "not a valid domain",
            ),
        ];
        for (s, fallback, field, needle) in bad {
            let err = Naming::check("pool", &s, fallback, "20261123").unwrap_err();
            assert_eq!(err.field, field, "{s:?}");
            assert!(err.message.contains(needle), "{s:?}: {err}");
        }
    }

    #[test]
    fn names_run_from_the_first_number() {
        let s = settings(DEFAULT_CHILD_EMAIL_TEMPLATE, Some("k.example"));
        let n = Naming::check("g", &s, None, "20260101").unwrap();
        assert_eq!(
            n.names("g", "20260101", &n.child_email, 3, 2),
            ["g-20260101-003@k.example", "g-20260101-004@k.example"]
        );
    }
}
