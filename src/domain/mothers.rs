//! Rules for mother accounts: what a valid new mother looks like. Used alike by the API, the batch
//! endpoints and `poolkeeper import mothers`, so every path refuses the same input the same way.

use std::fmt;

use serde::Deserialize;

use super::seats::{DEFAULT_SEAT_LIMIT, MAX_SEAT_LIMIT};
use crate::crypto::Credential;

pub const MAX_NAME_LEN: usize = 100;
pub const MAX_CREDENTIAL_LEN: usize = 8192;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    Sim,
    Scim,
}

impl ProviderKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sim" => Some(Self::Sim),
            "scim" => Some(Self::Scim),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sim => "sim",
            Self::Scim => "scim",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MotherStatus {
    Active,
    Invalid,
    Disabled,
}

impl MotherStatus {
    pub const ALL: [MotherStatus; 3] = [Self::Active, Self::Invalid, Self::Disabled];
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Invalid => "invalid",
            Self::Disabled => "disabled",
        }
    }
}

/// One team of a new mother, as sent.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
pub struct TeamInput {
    pub name: String,
    pub provider_team_id: Option<String>,
    /// Default true.
    pub is_enabled: Option<bool>,
    /// The first team is the default when none is marked.
    pub is_default: Option<bool>,
}

/// A new mother as sent (API body, batch row, import line).
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MotherInput {
    pub name: String,
    /// `sim` or `scim`.
    pub provider: String,
    /// Sealed before it is stored; never returned.
    #[schema(value_type = String)]
    pub credential: Credential,
    /// Provider settings (JSON object).
    #[schema(value_type = Option<Object>)]
    pub provider_config: Option<serde_json::Value>,
    /// Default 7.
    pub seat_limit: Option<i64>,
    pub pool_group_id: Option<i64>,
    pub notes: Option<String>,
    pub teams: Option<Vec<TeamInput>>,
}

/// A team ready to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTeam {
    pub name: String,
    pub provider_team_id: Option<String>,
    pub is_enabled: bool,
    pub is_default: bool,
}

/// A checked new mother (credential still in the clear; the caller seals it).
#[derive(Clone, Debug)]
pub struct NewMother {
    pub name: String,
    pub provider: ProviderKind,
    pub credential: Credential,
    pub provider_config: String,
    pub seat_limit: i64,
    pub pool_group_id: Option<i64>,
    pub notes: String,
    /// Empty: the service names one default team.
    pub teams: Vec<NewTeam>,
}

/// A refused field: an error code, the field and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub code: &'static str,
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn err(code: &'static str, field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        code,
        field,
        message: message.into(),
    }
}

/// A mother or team name: trimmed, 1-100 characters, no control characters.
pub fn check_name(field: &'static str, name: &str) -> Result<String, FieldError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
        return Err(err(
            "invalid_name",
            field,
            format!("{field} must be 1-{MAX_NAME_LEN} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(err(
            "invalid_name",
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(name.to_string())
}

pub fn check_seat_limit(limit: i64) -> Result<i64, FieldError> {
    if !(0..=MAX_SEAT_LIMIT).contains(&limit) {
        return Err(err(
            "invalid_seat_limit",
            "seat_limit",
            format!("seat_limit must be between 0 and {MAX_SEAT_LIMIT}, got {limit}"),
        ));
    }
    Ok(limit)
}

pub fn check_provider(provider: &str) -> Result<ProviderKind, FieldError> {
    ProviderKind::parse(provider).ok_or_else(|| {
        err(
            "invalid_provider",
            "provider",
            format!("provider must be `sim` or `scim`, got {provider:?}"),
        )
    })
}

pub fn check_status(status: &str) -> Result<MotherStatus, FieldError> {
    MotherStatus::parse(status).ok_or_else(|| {
        err(
            "invalid_status",
            "status",
            format!("status must be `active`, `invalid` or `disabled`, got {status:?}"),
        )
    })
}

pub fn check_credential(credential: &Credential) -> Result<(), FieldError> {
    let len = credential.expose().len();
    if credential.expose().trim().is_empty() || len > MAX_CREDENTIAL_LEN {
        return Err(err(
            "invalid_credential",
            "credential",
            format!("credential must be 1-{MAX_CREDENTIAL_LEN} bytes and not blank"),
        ));
    }
    Ok(())
}

impl MotherInput {
    /// Checks every field; the first problem is returned. The provider's own configuration rules
    /// are the provider's (`providers::check_config`), checked by the caller.
    pub fn check(self) -> Result<NewMother, FieldError> {
        let name = check_name("name", &self.name)?;
        let provider = check_provider(&self.provider)?;
        check_credential(&self.credential)?;
        let provider_config = match self.provider_config {
            None | Some(serde_json::Value::Null) => "{}".to_string(),
            Some(v @ serde_json::Value::Object(_)) => v.to_string(),
            Some(_) => {
                return Err(err(
                    "invalid_provider_config",
                    "provider_config",
                    "provider_config must be a JSON object",
                ));
            }
        };
        let seat_limit = check_seat_limit(self.seat_limit.unwrap_or(DEFAULT_SEAT_LIMIT))?;
        let notes = self.notes.unwrap_or_default();
        if notes.len() > 4000 {
            return Err(err(
                "invalid_notes",
                "notes",
                "notes must be at most 4000 bytes",
            ));
        }
        let mut teams = Vec::new();
        for t in self.teams.unwrap_or_default() {
            let name = check_name("teams.name", &t.name)?;
            if teams.iter().any(|x: &NewTeam| x.name == name) {
                return Err(err(
                    "invalid_teams",
                    "teams",
                    format!("team name {name:?} appears twice"),
                ));
            }
            teams.push(NewTeam {
                name,
                provider_team_id: t.provider_team_id.filter(|s| !s.trim().is_empty()),
                is_enabled: t.is_enabled.unwrap_or(true),
                is_default: t.is_default.unwrap_or(false),
            });
        }
        match teams.iter().filter(|t| t.is_default).count() {
            0 => {
                if let Some(first) = teams.first_mut() {
                    first.is_default = true;
                }
            }
            1 => {}
            _ => {
                return Err(err(
                    "invalid_teams",
                    "teams",
                    "at most one team may be the default",
                ));
            }
        }
        Ok(NewMother {
            name,
            provider,
            credential: self.credential,
            provider_config,
            seat_limit,
            pool_group_id: self.pool_group_id,
            notes,
            teams,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: serde_json::Value) -> Result<NewMother, FieldError> {
        serde_json::from_value::<MotherInput>(json).unwrap().check()
    }

    #[test]
    fn defaults() {
        let m = input(serde_json::json!({"name": " m1 ", "provider": "sim", "credential": "c"}))
            .unwrap();
        assert_eq!(m.name, "m1");
        assert_eq!(m.seat_limit, 7);
        assert_eq!(m.provider_config, "{}");
        assert!(m.teams.is_empty());
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (
                serde_json::json!({"name": "", "provider": "sim", "credential": "c"}),
                "name",
            ),
            (
                serde_json::json!({"name": "m", "provider": "ldap", "credential": "c"}),
                "provider",
            ),
            (
                serde_json::json!({"name": "m", "provider": "sim", "credential": " "}),
                "credential",
            ),
            (
                serde_json::json!({"name": "m", "provider": "sim", "credential": "c", "seat_limit": -1}),
                "seat_limit",
            ),
            (
                serde_json::json!({"name": "m", "provider": "sim", "credential": "c", "provider_config": [1]}),
                "provider_config",
            ),
            (
                serde_json::json!({"name": "m", "provider": "sim", "credential": "c",
                    "teams": [{"name": "a"}, {"name": "a"}]}),
                "teams",
            ),
            (
                serde_json::json!({"name": "m", "provider": "sim", "credential": "c",
                    "teams": [{"name": "a", "is_default": true}, {"name": "b", "is_default": true}]}),
                "teams",
            ),
        ];
        for (json, field) in cases {
            let e = input(json.clone()).unwrap_err();
            assert_eq!(e.field, field, "{json}");
            assert!(e.to_string().starts_with(field), "{e}");
        }
    }

    #[test]
    fn first_team_becomes_default() {
        let m = input(
            serde_json::json!({"name": "m", "provider": "sim", "credential": "c",
            "teams": [{"name": "a"}, {"name": "b"}]}),
        )
        .unwrap();
        assert!(m.teams[0].is_default && !m.teams[1].is_default);
    }
}
