//! Seat math: usage from a mother's counters, and what a change of `seat_limit` does to her seats.

use serde::Serialize;

/// Largest `seat_limit` a mother may have.
pub const MAX_SEAT_LIMIT: i64 = 1000;
pub const DEFAULT_SEAT_LIMIT: i64 = 7;

/// How a mother's seats are used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub seats_total: i64,
    pub seats_used: i64,
    pub seats_held: i64,
    pub seats_free: i64,
    pub teams: i64,
}

impl Usage {
    pub fn new(seat_limit: i64, used: i64, held: i64, teams: i64) -> Self {
        Self {
            seats_total: seat_limit,
            seats_used: used,
            seats_held: held,
            seats_free: (seat_limit - used - held).max(0),
            teams,
        }
    }

    /// Seats that cannot be removed: used or held.
    pub fn in_use(&self) -> i64 {
        self.seats_used + self.seats_held
    }
}

/// Seats to add or remove when `seat_limit` changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    Add(i64),
    Remove(i64),
    Keep,
}

/// Refused: the new limit is below the seats in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BelowInUse {
    pub in_use: i64,
}

/// What changing from `current` seats to `new_limit` takes, given `in_use` seats that must stay.
pub fn plan_resize(current: i64, in_use: i64, new_limit: i64) -> Result<Resize, BelowInUse> {
    if new_limit < in_use {
        return Err(BelowInUse { in_use });
    }
    Ok(match new_limit.cmp(&current) {
        std::cmp::Ordering::Greater => Resize::Add(new_limit - current),
        std::cmp::Ordering::Less => Resize::Remove(current - new_limit),
        std::cmp::Ordering::Equal => Resize::Keep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_cases() {
        let cases = [
            ((7, 0, 10), Ok(Resize::Add(3))),
            ((7, 3, 3), Ok(Resize::Remove(4))),
            ((7, 3, 7), Ok(Resize::Keep)),
            ((7, 4, 3), Err(BelowInUse { in_use: 4 })),
            ((0, 0, 0), Ok(Resize::Keep)),
        ];
        for ((current, in_use, new), want) in cases {
            assert_eq!(
                plan_resize(current, in_use, new),
                want,
                "{current} {in_use} {new}"
            );
        }
    }

    #[test]
    fn usage_free_never_negative() {
        assert_eq!(Usage::new(7, 2, 1, 1).seats_free, 4);
        assert_eq!(Usage::new(2, 2, 1, 1).seats_free, 0);
        assert_eq!(Usage::new(7, 2, 1, 1).in_use(), 3);
    }
}

/// What sync wants of a seat: `used` by a member, `held` for a pending invitee.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeatWant {
    Used,
    Held,
}

impl SeatWant {
    pub fn as_str(self) -> &'static str {
        match self {
            SeatWant::Used => "used",
            SeatWant::Held => "held",
        }
    }
}

/// A seat as sync sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeatView {
    pub id: i64,
    pub seat_no: i64,
    /// `free`, `held` or `used`.
    pub status: String,
    pub holder_email: Option<String>,
}

/// One change to a seat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeatChange {
    /// Give the seat to `email` in state `want`.
    Assign {
        seat_id: i64,
        email: String,
        want: SeatWant,
    },
    /// Free a seat whose member left.
    Release { seat_id: i64 },
}

/// The plan that makes seats follow the provider's members.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeatPlan {
    pub changes: Vec<SeatChange>,
    /// Members for whom no free seat was left.
    pub overflow: Vec<String>,
}

/// Seats follow members: each wanted address keeps its seat (changing `held` to `used` when the
/// invitee joined), a new one takes the lowest free seat, and a `used` seat whose holder is no
/// longer a member is freed. A `held` seat of someone who is not (yet) a member is left alone: it
/// may be a pending invite or redemption, and it expires at its `held_until`. Addresses compare
/// case-insensitively; `wanted` must not repeat an address.
pub fn plan_seats(seats: &[SeatView], wanted: &[(String, SeatWant)]) -> SeatPlan {
    let key = |e: &str| e.to_ascii_lowercase();
    let mut plan = SeatPlan::default();
    let wanted_keys: std::collections::HashMap<String, SeatWant> =
        wanted.iter().map(|(e, w)| (key(e), *w)).collect();
    let mut holders: std::collections::HashMap<String, &SeatView> =
        std::collections::HashMap::new();
    for seat in seats {
        if let Some(email) = &seat.holder_email
            && seat.status != "free"
        {
            holders.entry(key(email)).or_insert(seat);
        }
    }
    for seat in seats {
        if seat.status == "used"
            && let Some(email) = &seat.holder_email
            && !wanted_keys.contains_key(&key(email))
        {
            plan.changes.push(SeatChange::Release { seat_id: seat.id });
        }
    }
    let mut free: Vec<&SeatView> = seats.iter().filter(|s| s.status == "free").collect();
    free.sort_by_key(|s| s.seat_no);
    let mut free = free.into_iter();
    for (email, want) in wanted {
        match holders.get(&key(email)) {
            Some(seat) if seat.status == want.as_str() => {}
            // An invitee who joined: held -> used. A member never goes back from used to held.
            Some(seat) => {
                if *want == SeatWant::Used {
                    plan.changes.push(SeatChange::Assign {
                        seat_id: seat.id,
                        email: email.clone(),
                        want: *want,
                    });
                }
            }
            None => match free.next() {
                Some(seat) => plan.changes.push(SeatChange::Assign {
                    seat_id: seat.id,
                    email: email.clone(),
                    want: *want,
                }),
                None => plan.overflow.push(email.clone()),
            },
        }
    }
    plan
}

#[cfg(test)]
mod plan_tests {
    use super::*;

    fn seat(id: i64, status: &str, holder: Option<&str>) -> SeatView {
        SeatView {
            id,
            seat_no: id,
            status: status.into(),
            holder_email: holder.map(str::to_string),
        }
    }

    #[test]
    fn seats_follow_members() {
        let seats = vec![
            seat(1, "used", Some("a@x")),
            seat(2, "used", Some("gone@x")),
            seat(3, "held", Some("inv@x")),
            seat(4, "free", None),
            seat(5, "held", Some("code@x")),
        ];
        let wanted = vec![
            ("A@x".to_string(), SeatWant::Used),
            ("inv@x".to_string(), SeatWant::Used),
            ("new@x".to_string(), SeatWant::Used),
            ("late@x".to_string(), SeatWant::Held),
        ];
        let plan = plan_seats(&seats, &wanted);
        assert_eq!(
            plan.changes,
            vec![
                SeatChange::Release { seat_id: 2 },
                SeatChange::Assign {
                    seat_id: 3,
                    email: "inv@x".into(),
                    want: SeatWant::Used
                },
                SeatChange::Assign {
                    seat_id: 4,
                    email: "new@x".into(),
                    want: SeatWant::Used
                },
            ]
        );
        assert_eq!(plan.overflow, vec!["late@x".to_string()]);
    }

    #[test]
    fn a_plan_applied_twice_changes_nothing() {
        let seats = vec![seat(1, "used", Some("a@x")), seat(2, "held", Some("b@x"))];
        let wanted = vec![
            ("a@x".to_string(), SeatWant::Used),
            ("b@x".to_string(), SeatWant::Held),
        ];
        assert_eq!(plan_seats(&seats, &wanted), SeatPlan::default());
    }
}
