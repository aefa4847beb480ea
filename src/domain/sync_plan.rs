//! The pure rules of a pool sync: given what the provider reports and what is stored, which local
//! team each provider team is, what each team should be called, what seat each member wants, and
//! which names auto-invite sends. No I/O: the `pool_sync_mother` job feeds these and writes what
//! they decide.

use std::collections::BTreeMap;

use super::naming::{NameValues, Naming, Template};
use super::seats::SeatWant;

/// A stored team as linking sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalTeam {
    pub id: i64,
    pub provider_team_id: Option<String>,
    pub is_default: bool,
}

/// What a provider team is locally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TeamLink {
    /// The local team `local_id`; `newly_linked` when it had no provider id until now.
    Local { local_id: i64, newly_linked: bool },
    /// No local team is left for it: a new one is added.
    New,
}

/// Links each provider team (by id, in the provider's order) to a local team: the one already
/// linked to it, else the first unlinked local team (the default one first, then by id), else a
/// new local team. Each local team is used at most once.
pub fn link_teams(provider_team_ids: &[&str], local: &[LocalTeam]) -> Vec<TeamLink> {
    let mut unused: Vec<&LocalTeam> = local.iter().collect();
    unused.sort_by_key(|t| (!t.is_default, t.id));
    provider_team_ids
        .iter()
        .map(|pid| {
            let found = unused
                .iter()
                .position(|t| t.provider_team_id.as_deref() == Some(*pid))
                .or_else(|| unused.iter().position(|t| t.provider_team_id.is_none()));
            match found {
                Some(i) => {
                    let team = unused.remove(i);
                    TeamLink::Local {
                        local_id: team.id,
                        newly_linked: team.provider_team_id.is_none(),
                    }
                }
                None => TeamLink::New,
            }
        })
        .collect()
}

/// Which name a linked team keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TeamName {
    /// The provider's name already follows the group's template.
    Provider,
    /// The local name does (the group named the team when the mother was created).
    Local,
    /// Neither: a new name is rendered with the group's next team number.
    Render,
}

/// A name this group gave, on the provider or locally, is kept and uses no number.
pub fn team_name(
    template: &Template,
    group: &str,
    domain: Option<&str>,
    provider_name: &str,
    local_name: &str,
) -> TeamName {
    if template.matches(provider_name, group, domain) {
        TeamName::Provider
    } else if template.matches(local_name, group, domain) {
        TeamName::Local
    } else {
        TeamName::Render
    }
}

/// A member's address as stored: trimmed and lower case.
pub fn normal_email(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

/// The seat each member wants across a mother's teams: `used` when active in any team, else
/// `held` for a pending invitee. Sorted by address, one entry per address.
pub fn seat_wants<'a>(
    members: impl IntoIterator<Item = (&'a str, bool)>,
) -> Vec<(String, SeatWant)> {
    let mut wanted: BTreeMap<String, SeatWant> = BTreeMap::new();
    for (email, is_active) in members {
        let want = if is_active {
            SeatWant::Used
        } else {
            SeatWant::Held
        };
        let slot = wanted.entry(email.to_string()).or_insert(want);
        if want == SeatWant::Used {
            *slot = SeatWant::Used;
        }
    }
    wanted.into_iter().collect()
}

/// An invitation auto-invite sends: a generated address and display name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteName {
    pub email: String,
    pub name: String,
}

/// The child templates render nothing without a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeedsDomain;

/// The addresses and names auto-invite sends for the child numbers `seqs`.
pub fn invite_names(
    naming: &Naming,
    group: &str,
    day: &str,
    seqs: impl IntoIterator<Item = i64>,
) -> Result<Vec<InviteName>, NeedsDomain> {
    seqs.into_iter()
        .map(|seq| {
            let values = NameValues {
                group,
                date: day,
                seq,
                domain: naming.domain.as_deref(),
            };
            match (
                naming.child_email.render(&values),
                naming.child_name.render(&values),
            ) {
                (Some(email), Some(name)) => Ok(InviteName {
                    email: email.to_ascii_lowercase(),
                    name,
                }),
                _ => Err(NeedsDomain),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::naming::NamingSettings;

    fn local(id: i64, provider_team_id: Option<&str>, is_default: bool) -> LocalTeam {
        LocalTeam {
            id,
            provider_team_id: provider_team_id.map(str::to_string),
            is_default,
        }
    }

    #[test]
    fn link_teams_prefers_the_linked_team_then_the_default_then_a_new_one() {
        let linked = local(1, Some("p-a"), false);
        let default_unlinked = local(3, None, true);
        let unlinked = local(2, None, false);
        type Case<'a> = (&'a str, Vec<&'a str>, Vec<LocalTeam>, Vec<TeamLink>);
        let cases: Vec<Case> = vec![
            ("nothing on either side", vec![], vec![], vec![]),
            (
                "no local team: each provider team is new",
                vec!["p-a", "p-b"],
                vec![],
                vec![TeamLink::New, TeamLink::New],
            ),
            (
                "linked by id wherever it stands",
                vec!["p-b", "p-a"],
                vec![unlinked.clone(), linked.clone()],
                vec![
                    TeamLink::Local {
                        local_id: 2,
                        newly_linked: true,
                    },
                    TeamLink::Local {
                        local_id: 1,
                        newly_linked: false,
                    },
                ],
            ),
            (
                "the default unlinked team is taken before a lower id",
                vec!["p-x", "p-y", "p-z"],
                vec![unlinked.clone(), default_unlinked.clone()],
                vec![
                    TeamLink::Local {
                        local_id: 3,
                        newly_linked: true,
                    },
                    TeamLink::Local {
                        local_id: 2,
                        newly_linked: true,
                    },
                    TeamLink::New,
                ],
            ),
            (
                "a team linked to another provider team is not taken",
                vec!["p-z"],
                vec![linked.clone()],
                vec![TeamLink::New],
            ),
        ];
        for (what, provider, local, want) in cases {
            assert_eq!(link_teams(&provider, &local), want, "{what}");
        }
    }

    #[test]
    fn team_name_keeps_a_name_the_group_gave() {
        let template = Template::parse("{group}-{date}-{seq3}").unwrap();
        let cases = [
            ("pool-20261129-001", "default", TeamName::Provider),
            ("Acme team", "pool-20261129-004", TeamName::Local),
            ("pool-20261129-002", "pool-20261129-003", TeamName::Provider),
            ("Acme team", "default", TeamName::Render),
            ("other-20261129-001", "default", TeamName::Render),
        ];
        for (provider, local, want) in cases {
            assert_eq!(
                team_name(&template, "pool", None, provider, local),
                want,
                "{provider} / {local}"
            );
        }
    }

    #[test]
    fn seat_wants_are_used_when_active_anywhere() {
        type Case<'a> = (Vec<(&'a str, bool)>, Vec<(&'a str, SeatWant)>);
        let cases: Vec<Case> = vec![
            (vec![], vec![]),
            (vec![("b@x", false)], vec![("b@x", SeatWant::Held)]),
            (
                vec![("b@x", false), ("a@x", true)],
                vec![("a@x", SeatWant::Used), ("b@x", SeatWant::Held)],
            ),
            (
                vec![("a@x", false), ("a@x", true), ("a@x", false)],
                vec![("a@x", SeatWant::Used)],
            ),
        ];
        for (members, want) in cases {
            let want: Vec<(String, SeatWant)> =
                want.into_iter().map(|(e, w)| (e.to_string(), w)).collect();
            assert_eq!(seat_wants(members.clone()), want, "{members:?}");
        }
    }

    #[test]
    fn normal_email_trims_and_lowers() {
        assert_eq!(normal_email("  Ann@Example.ORG "), "ann@example.org");
    }

    fn naming(domain: Option<&str>) -> Naming {
        let settings = NamingSettings {
            team_template: "{group}-{date}-{seq3}".into(),
            child_name_template: "{group}-{seq3}".into(),
            child_email_template: "{group}-{date}-{seq3}@{domain}".into(),
            email_domain: domain.map(str::to_string),
        };
        Naming::check("Pool", &settings, None, "20261129").unwrap()
    }

    #[test]
    fn invite_names_render_each_number_and_need_a_domain() {
        let got = invite_names(&naming(Some("example.org")), "Pool", "20261129", [7, 8]).unwrap();
        assert_eq!(
            got,
            vec![
                InviteName {
                    email: "pool-20261129-007@example.org".into(),
                    name: "Pool-007".into(),
                },
                InviteName {
                    email: "pool-20261129-008@example.org".into(),
                    name: "Pool-008".into(),
                },
            ]
        );
        assert_eq!(
            invite_names(&naming(Some("example.org")), "Pool", "20261129", []),
            Ok(vec![])
        );
        let without = Naming {
            domain: None,
            ..naming(Some("example.org"))
        };
        assert_eq!(
            invite_names(&without, "Pool", "20261129", [1]),
            Err(NeedsDomain)
        );
    }
}
