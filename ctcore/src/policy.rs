//! Stateful filtering like nftables `ct state` rules in a forward chain:
//! rules in order, first match wins, then the default action.

use crate::conn::{CtInfo, CtState};

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
    pub action: Action,
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
    /// default). `dnat`: its destination is being translated (original direction).
    pub fn evaluate(
        &self,
        in_port: u16,
        out_port: u16,
        ctinfo: CtInfo,
        dnat: bool,
    ) -> (Action, usize) {
        let st = ctinfo.state();
        for (i, r) in self.rules.iter().enumerate() {
            if r.in_port.is_none_or(|p| p == in_port)
                && r.out_port.is_none_or(|p| p == out_port)
                && r.states.contains(st)
                && (!r.dnat_only || dnat)
            {
                return (r.action, i);
            }
        }
        (self.default_action, self.rules.len())
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
                    action: Action::Accept,
                },
                Rule {
                    name: "inv".into(),
                    in_port: None,
                    out_port: None,
                    states: StateSet::parse("invalid").unwrap(),
                    dnat_only: false,
                    action: Action::Drop,
                },
                Rule {
                    name: "new-in".into(),
                    in_port: Some(0),
                    out_port: None,
                    states: StateSet::parse("new").unwrap(),
                    dnat_only: false,
                    action: Action::Accept,
                },
            ],
            default_action: Action::Drop,
        };
        assert_eq!(
            p.evaluate(1, 0, CtInfo::EstablishedReply, false),
            (Action::Accept, 0)
        );
        assert_eq!(
            p.evaluate(1, 0, CtInfo::RelatedReply, false),
            (Action::Accept, 0)
        );
        assert_eq!(p.evaluate(0, 1, CtInfo::Invalid, false), (Action::Drop, 1));
        assert_eq!(p.evaluate(0, 1, CtInfo::New, false), (Action::Accept, 2));
        assert_eq!(p.evaluate(1, 0, CtInfo::New, false), (Action::Drop, 3));
        assert!(StateSet::parse("bogus").is_err());
    }
}
