//! Stateful filtering like nftables `ct state` rules in a forward chain:
//! rules in order, first match wins, then the default action. A rule may
//! also match the connection's mark (`ct mark and MASK == VALUE`) and set
//! it (`ct mark set`).

use crate::conn::{CtInfo, CtState};
use crate::helper::Helper;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Accept,
    Drop,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "accept" => Some(Action::Accept),
            "drop" => Some(Action::Drop),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Drop => "drop",
        }
    }
}

/// A set of ct states (bit n = `CtState as u8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateSet(pub u8);

impl StateSet {
    pub const ANY: StateSet = StateSet(0x1f);
    pub fn contains(self, s: CtState) -> bool {
        self.0 & (1 << s as u8) != 0
    }
    /// Parses `established,related` (nft spelling).
    pub fn parse(s: &str) -> Result<StateSet, String> {
        let mut set = 0u8;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let st = CtState::from_name(part).ok_or_else(|| {
                format!(
                    "unknown ct state {part:?} (use new, established, related, invalid, untracked)"
                )
            })?;
            set |= 1 << st as u8;
        }
        if set == 0 {
            return Err("empty ct state set".into());
        }
        Ok(StateSet(set))
    }
}

/// One rule: match on ports and ct state, then an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    /// Ingress port index; None = any.
    pub in_port: Option<u16>,
    /// Egress port index; None = any.
    pub out_port: Option<u16>,
    pub states: StateSet,
    /// Only packets whose destination ctgate translates in their original
    /// direction (nft `ct status dnat`): port forwards, load balancing and
    /// endpoint-independent filtering.
    pub dnat_only: bool,
    /// Only packets of this transport protocol (nft `meta l4proto`).
    pub proto: Option<u8>,
    /// Only packets to a destination port in this range (nft `th dport`;
    /// with `proto`, of TCP, UDP, UDP-Lite or SCTP).
    pub dports: Option<(u16, u16)>,
    /// Only connections whose mark, masked, equals the value: (value, mask)
    /// (nft `ct mark and MASK == VALUE`).
    pub mark: Option<(u32, u32)>,
    /// Sets the connection's mark when the rule matches (nft `ct mark set`).
    pub set_mark: Option<u32>,
    /// Assigns this conntrack helper to a new connection the rule accepts
    /// (nft `ct helper set`); `Helper::None` assigns none.
    pub helper: Helper,
    pub action: Action,
}

impl Rule {
    /// A rule on ports and states only (no mark, no DNAT condition).
    pub fn new(name: &str, states: StateSet, action: Action) -> Rule {
        Rule {
            name: name.into(),
            in_port: None,
            out_port: None,
            states,
            dnat_only: false,
            proto: None,
            dports: None,
            mark: None,
            set_mark: None,
            helper: Helper::None,
            action,
        }
    }
}

/// Parses a mark match, `VALUE` or `VALUE/MASK` (decimal or 0x hex), into
/// (value, mask).
pub fn parse_mark(s: &str) -> Result<(u32, u32), String> {
    let num = |t: &str| {
        let t = t.trim();
        match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(h) => u32::from_str_radix(h, 16),
            None => t.parse(),
        }
        .map_err(|_| format!("mark {s:?}: not a number (VALUE or VALUE/MASK, decimal or 0x hex)"))
    };
    let (v, m) = match s.split_once('/') {
        Some((v, m)) => (num(v)?, num(m)?),
        None => (num(s)?, u32::MAX),
    };
    if v & !m != 0 {
        return Err(format!("mark {s:?}: the value has bits outside the mask"));
    }
    Ok((v, m))
}

/// What [`Policy::evaluate`] matches a packet's `proto` and `dport` on:
/// its transport protocol and destination port (0 for protocols without
/// ports, and for fragments after the first).
pub fn packet_l4(p: &crate::wire::Parsed) -> (u8, u16) {
    use crate::wire::L4;
    let dport = match p.l4 {
        L4::Tcp(t) => t.dst_port,
        L4::Udp { dst_port, .. } | L4::Sctp { dst_port, .. } => dst_port,
        _ => 0,
    };
    (p.proto, dport)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub default_action: Action,
}

impl Default for Policy {
    /// Accept everything (no rules): what a bare forwarding router does.
    fn default() -> Self {
        Policy {
            rules: Vec::new(),
            default_action: Action::Accept,
        }
    }
}

impl Policy {
    /// The action for a packet, and which rule decided (`rules.len()` = the
    /// default). `dnat`: its destination is being translated (original
    /// direction); `mark`: its connection's mark; `(proto, dport)`: its
    /// transport protocol and destination port (0 without ports).
    pub fn evaluate(
        &self,
        in_port: u16,
        out_port: u16,
        ctinfo: CtInfo,
        dnat: bool,
        mark: u32,
        (proto, dport): (u8, u16),
    ) -> (Action, usize) {
        let st = ctinfo.state();
        for (i, r) in self.rules.iter().enumerate() {
            if r.in_port.is_none_or(|p| p == in_port)
                && r.out_port.is_none_or(|p| p == out_port)
                && r.states.contains(st)
                && (!r.dnat_only || dnat)
                && r.mark.is_none_or(|(v, m)| mark & m == v)
                && r.proto.is_none_or(|p| p == proto)
                && r.dports.is_none_or(|(lo, hi)| (lo..=hi).contains(&dport))
            {
                return (r.action, i);
            }
        }
        (self.default_action, self.rules.len())
    }

    /// The mark the deciding rule sets, if any (`rule` from [`Policy::evaluate`]).
    pub fn set_mark(&self, rule: usize) -> Option<u32> {
        self.rules.get(rule).and_then(|r| r.set_mark)
    }

    /// The helper the deciding rule assigns (`rule` from [`Policy::evaluate`]).
    pub fn helper(&self, rule: usize) -> Helper {
        self.rules.get(rule).map_or(Helper::None, |r| r.helper)
    }

    /// Whether any rule assigns a helper (the engine then keeps helper data).
    pub fn uses_helpers(&self) -> bool {
        self.rules.iter().any(|r| r.helper != Helper::None)
    }

    /// Counter labels: each rule's name, then "default".
    pub fn labels(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|r| r.name.clone())
            .chain(std::iter::once("default".to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_wins() {
        let p = Policy {
            rules: vec![
                Rule {
                    name: "est".into(),
                    in_port: None,
                    out_port: None,
                    states: StateSet::parse("established,related").unwrap(),
                    dnat_only: false,
                    proto: None,
                    dports: None,
                    mark: None,
                    set_mark: None,
                    helper: Helper::None,
                    action: Action::Accept,
                },
                Rule {
                    name: "inv".into(),
                    in_port: None,
                    out_port: None,
                    states: StateSet::parse("invalid").unwrap(),
                    dnat_only: false,
                    proto: None,
                    dports: None,
                    mark: None,
                    set_mark: None,
                    helper: Helper::None,
                    action: Action::Drop,
                },
                Rule {
                    name: "new-in".into(),
                    in_port: Some(0),
                    out_port: None,
                    states: StateSet::parse("new").unwrap(),
                    dnat_only: false,
                    proto: None,
                    dports: None,
                    mark: None,
                    set_mark: None,
                    helper: Helper::None,
                    action: Action::Accept,
                },
            ],
            default_action: Action::Drop,
        };
        assert_eq!(
            p.evaluate(1, 0, CtInfo::EstablishedReply, false, 0, (6, 80)),
            (Action::Accept, 0)
        );
        assert_eq!(
            p.evaluate(1, 0, CtInfo::RelatedReply, false, 0, (6, 80)),
            (Action::Accept, 0)
        );
        assert_eq!(
            p.evaluate(0, 1, CtInfo::Invalid, false, 0, (6, 80)),
            (Action::Drop, 1)
        );
        assert_eq!(
            p.evaluate(0, 1, CtInfo::New, false, 0, (6, 80)),
            (Action::Accept, 2)
        );
        assert_eq!(
            p.evaluate(1, 0, CtInfo::New, false, 0, (6, 80)),
            (Action::Drop, 3)
        );
        assert!(StateSet::parse("bogus").is_err());
    }

    #[test]
    fn protocol_and_port_matches_pick_the_rule_that_assigns_a_helper() {
        let new = StateSet::parse("new").unwrap();
        let p = Policy {
            rules: vec![Rule {
                proto: Some(6),
                dports: Some((21, 21)),
                helper: Helper::Ftp,
                ..Rule::new("ftp", new, Action::Accept)
            }],
            default_action: Action::Drop,
        };
        let (a, rule) = p.evaluate(0, 1, CtInfo::New, false, 0, (6, 21));
        assert_eq!((a, p.helper(rule)), (Action::Accept, Helper::Ftp));
        let (a, rule) = p.evaluate(0, 1, CtInfo::New, false, 0, (6, 22));
        assert_eq!((a, p.helper(rule)), (Action::Drop, Helper::None));
        assert_eq!(p.evaluate(0, 1, CtInfo::New, false, 0, (17, 21)).1, 1);
        assert!(p.uses_helpers());
    }

    #[test]
    fn marks_are_matched_under_their_mask_and_set() {
        let est = StateSet::parse("established").unwrap();
        let new = StateSet::parse("new").unwrap();
        let p = Policy {
            rules: vec![
                Rule {
                    mark: Some(parse_mark("0x10/0xf0").unwrap()),
                    ..Rule::new("marked", est, Action::Drop)
                },
                Rule {
                    set_mark: Some(0x17),
                    in_port: Some(0),
                    ..Rule::new("mark-new", new, Action::Accept)
                },
                Rule::new("est", est, Action::Accept),
            ],
            default_action: Action::Drop,
        };
        // 0x17 & 0xf0 == 0x10: the first rule.
        assert_eq!(
            p.evaluate(0, 1, CtInfo::Established, false, 0x17, (6, 80)),
            (Action::Drop, 0)
        );
        assert_eq!(
            p.evaluate(0, 1, CtInfo::Established, false, 0x27, (6, 80)),
            (Action::Accept, 2)
        );
        assert_eq!(
            p.evaluate(0, 1, CtInfo::Established, false, 0, (6, 80)),
            (Action::Accept, 2)
        );
        let (a, rule) = p.evaluate(0, 1, CtInfo::New, false, 0, (6, 80));
        assert_eq!((a, p.set_mark(rule)), (Action::Accept, Some(0x17)));
        assert_eq!(p.set_mark(2), None);
        assert_eq!(p.set_mark(3), None, "the default sets nothing");
        assert_eq!(parse_mark("7").unwrap(), (7, u32::MAX));
        assert_eq!(parse_mark("0x10/0xF0").unwrap(), (0x10, 0xf0));
        assert!(parse_mark("0x11/0xf0").is_err(), "bits outside the mask");
        assert!(parse_mark("seven").is_err());
    }
}
