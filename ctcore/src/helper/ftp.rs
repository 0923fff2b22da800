//! The FTP control connection's commands and replies that announce a data
//! connection, parsed as nf_conntrack_ftp does (`find_pattern` with its
//! `try_rfc959`, `try_rfc1123`, `try_eprt`, `try_epsv_response`), and the
//! text nf_nat_ftp writes in their place.
//!
//! Only a segment that starts right after a line end of its direction is
//! looked at (the kernel's `seq_aft_nl`), so a command split over segments
//! or text in the middle of a line never counts. A command that matches up
//! to where the segment ends, without its terminator, is a partial match:
//! the kernel drops the segment ("partial matching"), and so does ctgate.

use std::io::Write;

use crate::tuple::{Addr, Dir, Family};

use super::seqadj::after;

/// The kernel's NUM_SEQ_TO_REMEMBER.
const NUM_SEQ_TO_REMEMBER: usize = 2;

/// Where line starts are, per direction (`struct nf_ct_ftp_master`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FtpMaster {
    /// Sequence numbers just after a `\n`, per `Dir::index()`.
    pub seq_aft_nl: [[u32; NUM_SEQ_TO_REMEMBER]; 2],
    /// How many of them are set.
    pub seq_aft_nl_num: [u8; 2],
}

impl FtpMaster {
    /// find_nl_seq: whether a segment starting at `seq` starts a line.
    pub fn at_line_start(&self, dir: Dir, seq: u32) -> bool {
        let d = dir.index();
        self.seq_aft_nl[d][..self.seq_aft_nl_num[d] as usize].contains(&seq)
    }

    /// update_nl_seq: a segment of `dir` ending in `\n` ends at `nl_seq`.
    /// The older of the two remembered is replaced, never by an older one.
    pub fn note_line_end(&mut self, dir: Dir, nl_seq: u32) {
        let d = dir.index();
        let n = self.seq_aft_nl_num[d] as usize;
        if self.seq_aft_nl[d][..n].contains(&nl_seq) {
            return;
        }
        if n < NUM_SEQ_TO_REMEMBER {
            self.seq_aft_nl[d][n] = nl_seq;
            self.seq_aft_nl_num[d] += 1;
            return;
        }
        let oldest = if after(self.seq_aft_nl[d][1], self.seq_aft_nl[d][0]) {
            0
        } else {
            1
        };
        if after(nl_seq, self.seq_aft_nl[d][oldest]) {
            self.seq_aft_nl[d][oldest] = nl_seq;
        }
    }
}

/// What kind of announcement (`enum nf_ct_ftp_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FtpType {
    /// `PORT h1,h2,h3,h4,p1,p2` from the client.
    Port,
    /// `227 ... h1,h2,h3,h4,p1,p2` from the server.
    Pasv,
    /// `EPRT |1|addr|port|` from the client.
    Eprt,
    /// `229 ... (|||port|)` from the server.
    Epsv,
}

/// A matched announcement: where its numbers are in the payload, and what
/// they say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub ftp_type: FtpType,
    /// Offset of the numbers in the TCP payload.
    pub off: usize,
    /// Their length.
    pub len: usize,
    /// The address announced (for EPSV: the one given as the default).
    pub addr: Addr,
    pub port: u16,
}

/// The outcome of looking at a segment that starts a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Not a command or reply the helper follows.
    None,
    /// The start of one, but not all of it (or malformed numbers): dropped.
    Partial(&'static str),
    Match(Match),
}

struct Search {
    pattern: &'static [u8],
    skip: u8,
    term: u8,
    ftp_type: FtpType,
}

/// The kernel's `search[dir]` table.
const SEARCH: [[Search; 2]; 2] = [
    [
        Search {
            pattern: b"PORT",
            skip: b' ',
            term: b'\r',
            ftp_type: FtpType::Port,
        },
        Search {
            pattern: b"EPRT",
            skip: b' ',
            term: b'\r',
            ftp_type: FtpType::Eprt,
        },
    ],
    [
        Search {
            pattern: b"227 ",
            skip: 0,
            term: 0,
            ftp_type: FtpType::Pasv,
        },
        Search {
            pattern: b"229 ",
            skip: b'(',
            term: b')',
            ftp_type: FtpType::Epsv,
        },
    ],
];

/// Looks for the announcements of direction `dir` at the start of `data` (a
/// segment that starts a line). `family` is the connection's;
/// `default_addr` the sender's address (what an EPSV reply stands for).
pub fn find(dir: Dir, family: Family, data: &[u8], default_addr: Addr) -> Found {
    for s in &SEARCH[dir.index()] {
        match find_pattern(data, s, family, default_addr) {
            Found::None => continue,
            other => return other,
        }
    }
    Found::None
}

/// find_pattern: 1 (a match), 0 (none) or -1 (partial) as the kernel's.
fn find_pattern(data: &[u8], s: &Search, family: Family, default_addr: Addr) -> Found {
    let plen = s.pattern.len();
    let dlen = data.len();
    if dlen <= plen {
        // A short segment: the start of the pattern is a partial match.
        return if data.eq_ignore_ascii_case(&s.pattern[..dlen]) {
            Found::Partial("ftp: partial command")
        } else {
            Found::None
        };
    }
    if !data[..plen].eq_ignore_ascii_case(s.pattern) {
        return Found::None;
    }
    let mut i = plen;
    if s.skip != 0 {
        while data[i] != s.skip {
            if i == dlen - 1 {
                return Found::Partial("ftp: partial command");
            }
            i += 1;
        }
        i += 1;
    }
    let mut off = i;
    let mut addr = default_addr;
    let mut port = 0u16;
    let rest = &data[i..];
    let len = match s.ftp_type {
        FtpType::Port => try_rfc959(rest, s.term, family, &mut addr, &mut port),
        FtpType::Pasv => try_rfc1123(rest, family, &mut addr, &mut port, &mut off),
        FtpType::Eprt => try_eprt(rest, family, &mut addr, &mut port),
        FtpType::Epsv => try_epsv_response(rest, &mut port),
    };
    if len == 0 {
        return Found::Partial("ftp: malformed or partial command");
    }
    Found::Match(Match {
        ftp_type: s.ftp_type,
        off,
        len,
        addr,
        port,
    })
}

/// try_number: `N` numbers separated by `sep`, ended by `term` (any
/// character when 0); returns how many bytes they took, 0 if they are not
/// all there (an unterminated line is not a match). Overflow wraps as the
/// kernel's u32 arithmetic does.
fn try_number<const N: usize>(data: &[u8], sep: u8, term: u8) -> (usize, [u32; N]) {
    let mut a = [0u32; N];
    let mut i = 0;
    for (len, &c) in data.iter().enumerate() {
        if i >= N {
            break;
        }
        if c.is_ascii_digit() {
            a[i] = a[i].wrapping_mul(10).wrapping_add(u32::from(c - b'0'));
        } else if c == sep {
            i += 1;
        } else {
            if (c == term || term == 0) && i == N - 1 {
                return (len, a);
            }
            return (0, a);
        }
    }
    (0, a)
}

/// `192,168,1,1,5,6`. For an IPv6 connection the kernel writes the four
/// bytes into the front of the address (which then is not the sender's, so
/// nothing is expected); so does this.
fn try_rfc959(data: &[u8], term: u8, family: Family, addr: &mut Addr, port: &mut u16) -> usize {
    let (len, a) = try_number::<6>(data, b',', term);
    if len == 0 {
        return 0;
    }
    let ip = (a[0] << 24) | (a[1].wrapping_shl(16)) | (a[2].wrapping_shl(8)) | a[3];
    match family {
        Family::V4 => *addr = Addr::from_v4(ip.to_be_bytes()),
        Family::V6 => addr.0[..4].copy_from_slice(&ip.to_be_bytes()),
    }
    *port = ((a[4] << 8) | a[5]) as u16;
    len
}

/// RFC 1123: the 227 reply's numbers start at its first digit, with or
/// without parentheses.
fn try_rfc1123(
    data: &[u8],
    family: Family,
    addr: &mut Addr,
    port: &mut u16,
    off: &mut usize,
) -> usize {
    let Some(i) = data.iter().position(u8::is_ascii_digit) else {
        return 0;
    };
    *off += i;
    try_rfc959(&data[i..], 0, family, addr, port)
}

/// get_port: digits up to `delim` from `start`; the index after the
/// delimiter, 0 when there is none or the port is 0.
fn get_port(data: &[u8], start: usize, delim: u8, port: &mut u16) -> usize {
    let mut p: u16 = 0;
    for (i, &c) in data.iter().enumerate().skip(start) {
        if c == delim {
            if p == 0 {
                break;
            }
            *port = p;
            return i + 1;
        } else if c.is_ascii_digit() {
            p = p.wrapping_mul(10).wrapping_add(u16::from(c - b'0'));
        } else {
            break;
        }
    }
    0
}

/// A delimiter RFC 2428 allows (printable, not a digit).
fn delim_ok(d: u8) -> bool {
    !d.is_ascii_digit() && (33..=126).contains(&d)
}

/// `|1|132.235.1.2|6275|` or `|2|3ffe::1|6275|`: the whole, delimiters
/// included.
fn try_eprt(data: &[u8], family: Family, addr: &mut Addr, port: &mut u16) -> usize {
    if data.len() <= 3 {
        return 0;
    }
    let delim = data[0];
    if !delim_ok(delim) || data[2] != delim {
        return 0;
    }
    let length = match (family, data[1]) {
        (Family::V4, b'1') => {
            let (len, a) = try_number::<4>(&data[3..], b'.', delim);
            if len != 0 {
                let ip = (a[0] << 24) | (a[1].wrapping_shl(16)) | (a[2].wrapping_shl(8)) | a[3];
                *addr = Addr::from_v4(ip.to_be_bytes());
            }
            len
        }
        (Family::V6, b'2') => {
            // in6_pton up to the delimiter.
            let rest = &data[3..];
            let Some(end) = rest.iter().position(|&c| c == delim) else {
                return 0;
            };
            match std::str::from_utf8(&rest[..end])
                .ok()
                .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
            {
                Some(a) => {
                    *addr = Addr(a.octets());
                    end
                }
                None => 0,
            }
        }
        _ => 0,
    };
    if length == 0 {
        return 0;
    }
    get_port(data, 3 + length + 1, delim, port)
}

/// `|||6446|`.
fn try_epsv_response(data: &[u8], port: &mut u16) -> usize {
    if data.len() <= 3 {
        return 0;
    }
    let delim = data[0];
    if !delim_ok(delim) || data[1] != delim || data[2] != delim {
        return 0;
    }
    get_port(data, 3, delim, port)
}

/// The longest text nf_nat_ftp writes: `|2|` an IPv6 address `|65535|`.
pub const MAX_TEXT: usize = 56;

/// nf_nat_ftp_fmt_cmd: the numbers of an announcement of `ftp_type` for
/// `addr`:`port`, into `out`; returns the length.
pub fn format(
    ftp_type: FtpType,
    family: Family,
    addr: &Addr,
    port: u16,
    out: &mut [u8; MAX_TEXT],
) -> usize {
    let mut w = &mut out[..];
    let cap = w.len();
    let r = match ftp_type {
        FtpType::Port | FtpType::Pasv => {
            let a = addr.v4_octets();
            write!(
                w,
                "{},{},{},{},{},{}",
                a[0],
                a[1],
                a[2],
                a[3],
                port >> 8,
                port & 0xff
            )
        }
        FtpType::Eprt => match family {
            Family::V4 => write!(w, "|1|{}|{}|", addr.to_ip(family), port),
            Family::V6 => write!(w, "|2|{}|{}|", addr.to_ip(family), port),
        },
        FtpType::Epsv => write!(w, "|||{port}|"),
    };
    match r {
        Ok(()) => cap - w.len(),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Addr = Addr([192, 0, 2, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

    fn v4(a: [u8; 4]) -> Addr {
        Addr::from_v4(a)
    }

    fn found(dir: Dir, data: &[u8]) -> Found {
        find(dir, Family::V4, data, v4([9, 9, 9, 9]))
    }

    #[test]
    fn port_and_eprt_from_the_client() {
        let Found::Match(m) = found(Dir::Orig, b"PORT 192,0,2,10,19,137\r\n") else {
            panic!()
        };
        assert_eq!((m.ftp_type, m.off, m.len), (FtpType::Port, 5, 17));
        assert_eq!((m.addr, m.port), (v4([192, 0, 2, 10]), 19 * 256 + 137));
        // Case-insensitive, as strncasecmp.
        assert!(matches!(
            found(Dir::Orig, b"port 192,0,2,10,0,21\r\n"),
            Found::Match(_)
        ));
        let Found::Match(m) = found(Dir::Orig, b"EPRT |1|192.0.2.10|5001|\r\n") else {
            panic!()
        };
        assert_eq!((m.ftp_type, m.off, m.len), (FtpType::Eprt, 5, 19));
        assert_eq!((m.addr, m.port), (v4([192, 0, 2, 10]), 5001));
        let Found::Match(m) = find(
            Dir::Orig,
            Family::V6,
            b"EPRT |2|2001:db8::1|6275|\r\n",
            Addr::default(),
        ) else {
            panic!()
        };
        assert_eq!(m.addr.0[..4], [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!((m.port, m.len), (6275, 20));
        let _ = C;
    }

    #[test]
    fn pasv_and_epsv_replies_from_the_server() {
        let Found::Match(m) = found(
            Dir::Reply,
            b"227 Entering Passive Mode (198,51,100,20,195,80).\r\n",
        ) else {
            panic!()
        };
        assert_eq!((m.ftp_type, m.off, m.len), (FtpType::Pasv, 27, 20));
        assert_eq!((m.addr, m.port), (v4([198, 51, 100, 20]), 195 * 256 + 80));
        // Without parentheses (RFC 1123).
        assert!(matches!(
            found(Dir::Reply, b"227 =198,51,100,20,4,1\r\n"),
            Found::Match(Match { port: 1025, .. })
        ));
        let Found::Match(m) = found(
            Dir::Reply,
            b"229 Entering Extended Passive Mode (|||6446|)\r\n",
        ) else {
            panic!()
        };
        assert_eq!(
            (m.ftp_type, m.off, m.len, m.port),
            (FtpType::Epsv, 36, 8, 6446)
        );
        assert_eq!(m.addr, v4([9, 9, 9, 9]), "EPSV names no address");
        // Commands count only in their direction.
        assert_eq!(found(Dir::Reply, b"PORT 1,2,3,4,5,6\r\n"), Found::None);
        assert_eq!(found(Dir::Orig, b"227 (1,2,3,4,5,6)\r\n"), Found::None);
    }

    #[test]
    fn incomplete_or_malformed_lines_are_partial_never_a_panic() {
        for bad in [
            &b"PORT 192,0,2,10,19"[..],
            b"PORT 192,0,2,10,19,137",
            b"PORT",
            b"POR",
            b"P",
            b"PORT 1,2,3,4,5,6,7\r\n",
            b"PORT x\r\n",
            b"EPRT |2|::1|80|\r\n",
            b"EPRT |1|1.2.3|80|\r\n",
            b"EPRT 1|1|1.2.3.4|80|\r\n",
            b"EPRT |1|1.2.3.4|0|\r\n",
            b"EPRT ||",
        ] {
            assert!(
                matches!(found(Dir::Orig, bad), Found::Partial(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for bad in [
            &b"229 (|||"[..],
            b"229 no paren\r\n",
            b"227 none\r\n",
            b"22",
        ] {
            assert!(matches!(found(Dir::Reply, bad), Found::Partial(_)));
        }
        assert_eq!(found(Dir::Orig, b"USER anonymous\r\n"), Found::None);
        assert_eq!(
            found(Dir::Orig, b""),
            Found::Partial("ftp: partial command")
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x = 0x1234_5678u32;
        for n in 0..20_000usize {
            let mut buf = [0u8; 40];
            let len = n % 40;
            for b in buf.iter_mut().take(len) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = b"PORTEPRT2279 |(),.:0123456789\r\n"[(x % 31) as usize];
            }
            for dir in [Dir::Orig, Dir::Reply] {
                for fam in [Family::V4, Family::V6] {
                    let _ = find(dir, fam, &buf[..len], Addr::default());
                }
            }
        }
    }

    #[test]
    fn line_starts_are_remembered_two_per_direction() {
        let mut m = FtpMaster::default();
        assert!(!m.at_line_start(Dir::Orig, 100));
        m.note_line_end(Dir::Orig, 100);
        m.note_line_end(Dir::Orig, 200);
        assert!(m.at_line_start(Dir::Orig, 100) && m.at_line_start(Dir::Orig, 200));
        m.note_line_end(Dir::Orig, 300);
        assert!(!m.at_line_start(Dir::Orig, 100), "the oldest goes");
        assert!(m.at_line_start(Dir::Orig, 300));
        m.note_line_end(Dir::Orig, 150);
        assert!(!m.at_line_start(Dir::Orig, 150), "never an older one");
        assert!(!m.at_line_start(Dir::Reply, 300));
    }

    #[test]
    fn formats_as_nf_nat_ftp() {
        let mut b = [0u8; MAX_TEXT];
        let a = v4([203, 0, 113, 1]);
        let n = format(FtpType::Port, Family::V4, &a, 5001, &mut b);
        assert_eq!(&b[..n], b"203,0,113,1,19,137");
        let n = format(FtpType::Eprt, Family::V4, &a, 5001, &mut b);
        assert_eq!(&b[..n], b"|1|203.0.113.1|5001|");
        let n = format(FtpType::Epsv, Family::V4, &a, 65535, &mut b);
        assert_eq!(&b[..n], b"|||65535|");
        let long: Addr = Addr([0xff; 16]);
        let n = format(FtpType::Eprt, Family::V6, &long, 65535, &mut b);
        assert_eq!(
            &b[..n],
            b"|2|ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff|65535|".as_slice()
        );
    }
}
