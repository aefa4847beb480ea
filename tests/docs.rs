//! The documentation keeps up with the code (no database needed):
//!
//! - every configuration key the binary reads has a row in docs/configuration.md, with its
//!   `POOLKEEPER_*` environment name; the keys come from `Config`'s own `Deserialize`, walked by
//!   a deserializer that records the fields each struct asks for, so a new key is found without
//!   anyone listing it here;
//! - every command and subcommand of `cli::Cli` (walked through `clap::CommandFactory`) is in
//!   docs/cli.md, and every long flag on a line that names its command;
//! - every link from the README or a page of docs/ to a local file (and heading) resolves;
//! - the screenshots under docs/images stay small.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use clap::CommandFactory;
use serde::de::value::{Error as DeError, MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---- configuration keys ------------------------------------------------------------------------

/// A deserializer that answers every request with a harmless value and records the dotted path
/// of each leaf a struct asks for. Structs (also behind `Option` or a newtype) are walked field
/// by field; everything else is a key.
#[derive(Clone)]
struct KeyWalker {
    path: String,
    keys: Rc<RefCell<Vec<String>>>,
}

impl KeyWalker {
    fn leaf(&self) {
        self.keys.borrow_mut().push(self.path.clone());
    }
    fn child(&self, field: &str) -> KeyWalker {
        let path = if self.path.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.path)
        };
        KeyWalker {
            path,
            keys: Rc::clone(&self.keys),
        }
    }
}

/// A text that also parses as a socket address, a path, a URL-ish string or a secret.
const ANY_TEXT: &str = "127.0.0.1:8080";

impl<'de> de::Deserializer<'de> for KeyWalker {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.leaf();
        visitor.visit_str(ANY_TEXT)
    }
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.leaf();
        visitor.visit_bool(false)
    }
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.leaf();
        visitor.visit_u64(1)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.leaf();
        visitor.visit_f64(1.0)
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.leaf();
        visitor.visit_seq(SeqDeserializer::<_, DeError>::new(std::iter::empty::<u8>()))
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.leaf();
        visitor.visit_map(MapDeserializer::<_, DeError>::new(std::iter::empty::<(
            u8,
            u8,
        )>()))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_map(Fields {
            walker: self,
            fields,
            next: 0,
        })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.leaf();
        let first = variants.first().copied().unwrap_or_default();
        visitor.visit_enum(first.into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        char bytes byte_buf unit unit_struct tuple tuple_struct identifier ignored_any
    }
}

/// A struct's fields, each name followed by a walker one level down.
struct Fields {
    walker: KeyWalker,
    fields: &'static [&'static str],
    next: usize,
}

impl<'de> MapAccess<'de> for Fields {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.fields.get(self.next) {
            Some(field) => seed
                .deserialize(IntoDeserializer::<DeError>::into_deserializer(*field))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let field = self.fields[self.next];
        self.next += 1;
        seed.deserialize(self.walker.child(field))
    }
}

/// Every configuration key `Config` deserializes, dotted (`jobs.max_attempts`).
fn config_keys() -> Vec<String> {
    let keys = Rc::new(RefCell::new(Vec::new()));
    let walker = KeyWalker {
        path: String::new(),
        keys: Rc::clone(&keys),
    };
    <poolkeeper::config::Config as serde::Deserialize>::deserialize(walker)
        .unwrap_or_else(|e| panic!("walking Config's keys: {e} (teach KeyWalker the new type)"));
    keys.take()
}

/// `haystack` holds `needle` with no identifier character (or `-`) right after it.
fn contains_word(haystack: &str, needle: &str) -> bool {
    haystack.match_indices(needle).any(|(at, _)| {
        let before = haystack[..at].chars().next_back();
        let after = haystack[at + needle.len()..].chars().next();
        let joins =
            |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-');
        !joins(after) && (!joins(before) || needle.starts_with("--") || needle.starts_with('`'))
    })
}

fn env_name(key: &str) -> String {
    format!("POOLKEEPER_{}", key.replace('.', "__").to_uppercase())
}

#[test]
fn the_key_walker_finds_nested_and_optional_keys() {
    let keys = config_keys();
    for expected in [
        "listen",
        "secret_key",
        "jobs.max_attempts",
        "providers.scim.allow_hosts",
        "providers.sim.enabled",
        "backup.dir",
    ] {
        assert!(
            keys.iter().any(|k| k == expected),
            "{expected} not among {keys:?}"
        );
    }
    assert!(
        !keys.iter().any(|k| k == "jobs"),
        "tables are not keys: {keys:?}"
    );
    assert_eq!(
        env_name("jobs.max_attempts"),
        "POOLKEEPER_JOBS__MAX_ATTEMPTS"
    );
}

#[test]
fn every_config_key_has_a_row_in_docs_configuration() {
    let page = read("docs/configuration.md");
    let mut missing = Vec::new();
    for key in config_keys() {
        let env = env_name(&key);
        let documented = page
            .lines()
            .any(|line| line.starts_with(&format!("| `{key}` |")) && contains_word(line, &env));
        if !documented {
            missing.push(format!("`{key}` (env {env})"));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md needs a table row `| `KEY` | default | `ENV` | meaning |` for: {}",
        missing.join(", ")
    );
}

// ---- command line --------------------------------------------------------------------------------

/// (command path, long flags of that command) for the root and every visible subcommand.
fn commands(cmd: &clap::Command, path: &str, out: &mut Vec<(String, Vec<String>)>) {
    let flags = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .filter(|l| l != "--help" && l != "--version")
        .collect();
    out.push((path.to_string(), flags));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub_path = if path.is_empty() {
            sub.get_name().to_string()
        } else {
            format!("{path} {}", sub.get_name())
        };
        commands(sub, &sub_path, out);
    }
}

#[test]
fn every_command_and_long_flag_is_in_docs_cli() {
    let page = read("docs/cli.md");
    let mut all = Vec::new();
    commands(&poolkeeper::cli::Cli::command(), "", &mut all);
    assert!(
        all.iter()
            .any(|(p, f)| p == "token create" && f.contains(&"--scope".to_string())),
        "the walk found the commands: {all:?}"
    );
    let mut missing = Vec::new();
    for (path, flags) in &all {
        if path.is_empty() {
            // Global flags: anywhere on the page.
            for flag in flags {
                if !contains_word(&page, flag) {
                    missing.push(format!("global flag {flag}"));
                }
            }
            continue;
        }
        let name = format!("poolkeeper {path}");
        let lines: Vec<&str> = page.lines().filter(|l| contains_word(l, &name)).collect();
        if lines.is_empty() {
            missing.push(format!("command `{name}`"));
            continue;
        }
        for flag in flags {
            if !lines.iter().any(|l| contains_word(l, flag)) {
                missing.push(format!("{flag} of `{name}` (on a line naming the command)"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/cli.md does not document: {}",
        missing.join("; ")
    );
}

// ---- links ---------------------------------------------------------------------------------------

/// The markdown files whose links are checked: the README and every page under docs/.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    files
}

/// The text without fenced code blocks and inline code, where brackets are no links.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
            } else if !in_code {
                out.push(c);
            }
        }
        out.push('\n');
    }
    out
}

/// GitHub's anchors of a page's headings (lower case, punctuation dropped, spaces to `-`,
/// repeats numbered).
fn anchors(text: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let repeats = seen.iter().filter(|s| **s == slug).count();
        out.push(if repeats == 0 {
            slug.clone()
        } else {
            format!("{slug}-{repeats}")
        });
        seen.push(slug);
    }
    out
}

#[test]
fn every_local_link_in_readme_and_docs_resolves() {
    // Markdown links and images, and the `src`/`href` of the few HTML tags (screenshots side by side).
    let link = regex::Regex::new(r#"\]\(([^)\s]+)\)|(?:src|href)="([^"]+)""#).unwrap();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let shown = file.strip_prefix(repo()).unwrap().display().to_string();
        for cap in link.captures_iter(&prose(&text)) {
            let target = cap.get(1).or_else(|| cap.get(2)).map_or("", |m| m.as_str());
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target, None),
            };
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap_or(Path::new(".")).join(path)
            };
            if !resolved.exists() {
                broken.push(format!("{shown}: {target} (no such file)"));
                continue;
            }
            if let Some(anchor) = anchor {
                let page = std::fs::read_to_string(&resolved).unwrap_or_default();
                if !anchors(&page).iter().any(|a| a == anchor) {
                    broken.push(format!("{shown}: {target} (no such heading)"));
                }
            }
        }
    }
    assert!(
        checked > 10,
        "the README and docs link to each other ({checked} links)"
    );
    assert!(broken.is_empty(), "broken links: {}", broken.join("; "));
}

#[test]
fn readme_screenshots_are_small_pngs() {
    let images = repo().join("docs/images");
    let mut seen = 0;
    for entry in std::fs::read_dir(&images).expect("docs/images exists") {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            path.display()
        );
        assert!(
            bytes.len() < 150 * 1024,
            "{} is {} bytes; keep screenshots under 150 KB",
            path.display(),
            bytes.len()
        );
        seen += 1;
    }
    assert!(seen >= 1, "docs/images holds the README's screenshots");
}
