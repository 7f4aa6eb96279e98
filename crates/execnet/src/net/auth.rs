//! The access-token handshake, `EXECNET-AUTH1`, and the refusal line.
//!
//! A server configured with a token does not read the bootstrap line until the client
//! has proved that it knows the token, without the token ever crossing the wire:
//!
//! ```text
//! server -> client   EXECNET-AUTH1 <nonce: 64 lowercase hex digits>\n
//! client -> server   <HMAC-SHA256(key = token, message = the 32 nonce bytes): 64 hex digits>\n
//! ```
//!
//! The nonce is 32 bytes from the operating system's random source, fresh for every
//! connection, so an answer seen on the wire cannot be replayed. The server checks the
//! answer in constant time. A right answer is acknowledged with the line
//!
//! ```text
//! server -> client   EXECNET-AUTH1 OK\n
//! ```
//!
//! and the usual line protocol follows (PROTOCOL.md section 5): the client sends the
//! bootstrap line, the worker answers with the ready byte `1`. A wrong one gets the
//! refusal line below. The token is the content of the token file with surrounding
//! whitespace removed.
//!
//! The handshake authenticates the client only: it does not encrypt the connection or
//! protect it from someone who can alter traffic in flight. Reach a server across an
//! untrusted network through an encrypting tunnel (ssh -L, for example).
//!
//! Whenever the server turns a connection down (wrong answer, bad line, too many
//! connections, time limit) it writes one line before closing, so clients can say why:
//!
//! ```text
//! EXECNET-REFUSED <reason>\n
//! ```

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// First word of the server's challenge line.
pub const GREETING: &str = "EXECNET-AUTH1";

/// The server's acknowledgement of a right answer.
pub const ACCEPTED: &str = "EXECNET-AUTH1 OK\n";

/// First word of the line a server writes when it turns a connection down.
pub const REFUSED: &str = "EXECNET-REFUSED";

/// Bytes of randomness in a challenge.
pub const NONCE_LEN: usize = 32;

/// The longest challenge or answer line either side accepts (with its newline).
pub const MAX_HANDSHAKE_LINE: usize = 256;

type HmacSha256 = Hmac<Sha256>;

/// A fresh random nonce.
pub fn new_nonce() -> io::Result<[u8; NONCE_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce)
        .map_err(|e| io::Error::other(format!("no random numbers from the operating system: {e}")))?;
    Ok(nonce)
}

/// The line the server sends: `EXECNET-AUTH1 <hex nonce>\n`.
pub fn challenge_line(nonce: &[u8]) -> String {
    format!("{GREETING} {}\n", hex(nonce))
}

/// The nonce of a challenge line (without or with its newline); None if it is not one.
pub fn parse_challenge(line: &str) -> Option<Vec<u8>> {
    let rest = line.trim_end().strip_prefix(GREETING)?.strip_prefix(' ')?;
    let nonce = unhex(rest)?;
    (nonce.len() == NONCE_LEN).then_some(nonce)
}

/// The client's answer line for `nonce`: hex HMAC-SHA256 keyed with the token, plus `\n`.
pub fn answer_line(token: &[u8], nonce: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(token).expect("HMAC takes keys of any length");
    mac.update(nonce);
    let mut line = hex(&mac.finalize().into_bytes());
    line.push('\n');
    line
}

/// True when `answer` (one line, trailing whitespace ignored) is the right answer for
/// `nonce`. The comparison takes the same time wherever the answer differs.
pub fn check_answer(token: &[u8], nonce: &[u8], answer: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(answer) else { return false };
    let Some(tag) = unhex(text.trim_end()) else { return false };
    let mut mac = HmacSha256::new_from_slice(token).expect("HMAC takes keys of any length");
    mac.update(nonce);
    mac.verify_slice(&tag).is_ok()
}

/// The refusal line for `reason` (one line: newlines in the reason become spaces).
pub fn refusal_line(reason: &str) -> String {
    format!("{REFUSED} {}\n", reason.replace(['\r', '\n'], " "))
}

/// Reads a token file: its content without surrounding whitespace, which must not be
/// empty.
pub fn read_token_file(path: &Path) -> io::Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot read the token file {}: {e}", path.display()))
    })?;
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    let token = bytes[start..end.max(start)].to_vec();
    if token.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the token file {} is empty", path.display()),
        ));
    }
    Ok(token)
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() & 1 == 1 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_round_trip() {
        let nonce = new_nonce().unwrap();
        let line = challenge_line(&nonce);
        assert!(line.starts_with("EXECNET-AUTH1 ") && line.ends_with('\n'));
        assert_eq!(line.len(), GREETING.len() + 1 + 2 * NONCE_LEN + 1);
        assert_eq!(parse_challenge(&line).unwrap(), nonce);
        assert!(parse_challenge("EXECNET-AUTH1 abc\n").is_none());
        assert!(parse_challenge("1").is_none());
        assert_ne!(new_nonce().unwrap(), nonce);
    }

    #[test]
    fn answers_check_only_with_the_same_token_and_nonce() {
        let nonce = [7u8; NONCE_LEN];
        let answer = answer_line(b"secret token", &nonce);
        assert_eq!(answer.len(), 65);
        assert!(check_answer(b"secret token", &nonce, answer.as_bytes()));
        assert!(check_answer(b"secret token", &nonce, answer.to_uppercase().as_bytes()));
        assert!(!check_answer(b"secret tokem", &nonce, answer.as_bytes()));
        assert!(!check_answer(b"secret token", &[8u8; NONCE_LEN], answer.as_bytes()));
        assert!(!check_answer(b"secret token", &nonce, b"'print(1)'\n"));
        assert!(!check_answer(b"secret token", &nonce, &answer.as_bytes()[..40]));
        assert!(!check_answer(b"secret token", &nonce, b"\xff\xfe"));
    }

    #[test]
    fn known_hmac_value() {
        // RFC 4231, test case 2.
        let line = answer_line(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(line.trim_end(), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn refusal_lines_are_one_line() {
        assert_eq!(refusal_line("a\nb"), "EXECNET-REFUSED a b\n");
    }
}
