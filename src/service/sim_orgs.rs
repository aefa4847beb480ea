//! Simulated organisations made on request (`poolkeeper sim add-org`, `POST
//! /api/admin/sim/orgs`, the Mothers page's "New simulated organisation"): an organisation of the
//! simulated provider with one team of the given seats, its owner and the given members, reached
//! with a new random credential that is returned once. Only while `providers.sim.enabled` is on;
//! otherwise the request is refused as if the feature did not exist. This module never stores the
//! credential: the simulator keys its organisations by the credential's hash.

use serde::{Deserialize, Serialize};

use super::{Error, Result};
use crate::crypto::Credential;
use crate::domain::email;
use crate::domain::mothers as rules;
use crate::providers::MemberStatus;
use crate::providers::sim::{SimMember, SimOrg, SimProvider};

/// Seats a simulated organisation may have.
pub const MAX_SEATS: i64 = 1000;

/// `POST /api/admin/sim/orgs` body.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddOrgRequest {
    /// The organisation's name; a mother imported with its credential gets this name.
    pub name: String,
    /// Seats of its one team (1-1000), the owner's included.
    pub seats: i64,
    /// Addresses of members besides the owner (at most `seats - 1`).
    #[serde(default)]
    pub members: Option<Vec<String>>,
}

/// The new organisation's credential: shown once, stored nowhere by poolkeeper.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct AddOrgResponse {
    pub credential: String,
    pub name: String,
    pub owner_email: String,
}

/// By hand, so that a `{:?}` cannot print the credential.
impl std::fmt::Debug for AddOrgResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddOrgResponse")
            .field("credential", &"***")
            .field("name", &self.name)
            .field("owner_email", &self.owner_email)
            .finish()
    }
}

/// The refusal when the simulator is off: the same answer as a route that does not exist.
pub fn disabled() -> Error {
    Error::not_found("the simulated provider is disabled (providers.sim.enabled = false)")
}

/// The part of a name that can stand in an address: lowercase letters, digits and `-`.
fn address_part(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() {
        "org".to_string()
    } else {
        trimmed.chars().take(40).collect()
    }
}

/// Checks a request and builds the organisation it describes.
pub fn org_of(req: &AddOrgRequest) -> Result<SimOrg> {
    let name = rules::check_name("name", &req.name).map_err(super::mothers::field_error)?;
    if !(1..=MAX_SEATS).contains(&req.seats) {
        return Err(Error::invalid(
            "invalid_seats",
            format!("seats must be between 1 and {MAX_SEATS}"),
        ));
    }
    let owner = format!("owner@{}.sim.example.org", address_part(&name));
    let mut org = SimOrg::new(&name, &owner, req.seats);
    let members = req.members.clone().unwrap_or_default();
    if i64::try_from(members.len()).unwrap_or(i64::MAX) > req.seats - 1 {
        return Err(Error::invalid(
            "invalid_members",
            format!(
                "members: {} member(s) and the owner do not fit in {} seat(s)",
                members.len(),
                req.seats
            ),
        ));
    }
    for m in members {
        let address = m.trim().to_ascii_lowercase();
        if !email::is_valid_address(&address) {
            return Err(Error::invalid(
                "invalid_members",
                format!("members: `{m}` is not an email address"),
            ));
        }
        if org.teams[0].members.iter().any(|x| x.email == address) {
            return Err(Error::invalid(
                "invalid_members",
                format!("members: `{address}` appears more than once"),
            ));
        }
        let display = address.split('@').next().unwrap_or_default().to_string();
        org.teams[0].members.push(SimMember {
            email: address,
            name: display,
            status: MemberStatus::Active,
        });
    }
    Ok(org)
}

/// A new credential: `sim-` and 32 random hex digits.
fn new_credential() -> Result<Credential> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::internal(format!("no randomness: {e}")))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Credential::new(format!("sim-{hex}")))
}

/// Makes the organisation (when `enabled`) and returns its credential.
pub async fn add_org(
    sim: std::sync::Arc<SimProvider>,
    enabled: bool,
    req: AddOrgRequest,
) -> Result<AddOrgResponse> {
    if !enabled {
        return Err(disabled());
    }
    let org = org_of(&req)?;
    let credential = new_credential()?;
    let response = AddOrgResponse {
        credential: credential.expose().to_string(),
        name: org.name.clone(),
        owner_email: org.owner_email.clone(),
    };
    // The simulator waits for its writer thread: not on the async runtime's threads.
    tokio::task::spawn_blocking(move || sim.put_org(&credential, org))
        .await
        .map_err(Error::internal)?
        .map_err(|e| Error::unavailable(format!("the simulator could not save: {e}")))?;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, seats: i64, members: &[&str]) -> AddOrgRequest {
        AddOrgRequest {
            name: name.into(),
            seats,
            members: Some(members.iter().map(|m| m.to_string()).collect()),
        }
    }

    #[test]
    fn org_has_the_owner_and_the_members_in_one_team() {
        let org = org_of(&req("Big Co", 3, &["a@x.org", "B@y.org"])).unwrap();
        assert_eq!(org.name, "Big Co");
        assert_eq!(org.owner_email, "owner@big-co.sim.example.org");
        assert_eq!(org.teams.len(), 1);
        assert_eq!(org.teams[0].seats, 3);
        let emails: Vec<_> = org.teams[0].members.iter().map(|m| &m.email[..]).collect();
        assert_eq!(
            emails,
            ["owner@big-co.sim.example.org", "a@x.org", "b@y.org"]
        );
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (r, code) in [
            (req("", 3, &[]), "invalid_name"),
            (req("a", 0, &[]), "invalid_seats"),
            (req("a", 1001, &[]), "invalid_seats"),
            (req("a", 2, &["x@y.org", "z@y.org"]), "invalid_members"),
            (req("a", 5, &["not-an-address"]), "invalid_members"),
            (req("a", 5, &["x@y.org", "X@y.org"]), "invalid_members"),
        ] {
            let e = org_of(&r).unwrap_err();
            assert_eq!(e.code, code, "{r:?}: {}", e.message);
        }
    }

    #[test]
    fn response_debug_redacts_the_credential() {
        let r = AddOrgResponse {
            credential: "sim-0123456789abcdef".into(),
            name: "n".into(),
            owner_email: "o@x".into(),
        };
        assert!(!format!("{r:?}").contains("0123456789abcdef"));
    }
}
