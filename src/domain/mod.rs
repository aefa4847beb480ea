//! Pure rules: no I/O, no clock reads (time comes in as an argument), unit-tested directly.

pub mod audit;
pub mod codes;
pub mod egress;
pub mod email;
pub mod job_retry;
pub mod leases;
pub mod login_throttle;
pub mod missions;
pub mod mothers;
pub mod naming;
pub mod origin;
pub mod roles;
pub mod seats;
pub mod sync_plan;
pub mod sync_sessions;
pub mod webhooks;
