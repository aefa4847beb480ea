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

/// `bytes` as lowercase hex, two digits a byte (digests, random tokens, signatures).
pub fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn lower_hex_writes_two_digits_a_byte() {
        assert_eq!(super::lower_hex(&[]), "");
        assert_eq!(super::lower_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}
