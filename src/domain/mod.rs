//! Pure rules: no I/O, no clock reads (time comes in as an argument), unit-tested directly.

pub mod email;
pub mod job_retry;
pub mod login_throttle;
