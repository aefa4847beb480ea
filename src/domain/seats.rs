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
