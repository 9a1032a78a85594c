//! The verdict: is the change what the ticket declared, and does the result keep the site's
//! rules? Pure: resolved configs, intent and inventory in, findings out.

use serde::Serialize;

use crate::diff::{Change, DEFINITION_KEY, role_of};
use crate::intent::{ANY_KEY, Intent, IntentItem};
use crate::inventory::{Role, SiteInventory, describe_role};
use crate::resolve::{Resolved, SystemInterfaces};

/// MTU Linux gives an Ethernet link nobody configured.
pub const DEFAULT_MTU_BYTES: u32 = 1500;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look; exit 1.
    Warning,
    /// Must not be applied; exit 2.
    Block,
}

/// Which rule produced a finding (stable names for `--json` consumers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// The change touches an interface or key the intent does not name.
    OutsideIntent,
    /// The change sets a key the intent names, to another value.
    IntentValue,
    /// A declared change is not in the config.
    IntentNotCarriedOut,
    /// No intent was given.
    NoIntent,
    /// The WAN MTU differs from the upstream path MTU.
    WanMtu,
    /// A VLAN's MTU exceeds its parent's.
    VlanMtu,
    /// An address or route is removed from the WAN link, or the WAN link's definition.
    WanRemoval,
    /// The new MTU differs from the inventory's declared MTU.
    DeclaredMtu,
    /// Removing `mtu:` does not reset the link.
    MtuUnset,
    /// A `match:` selects no interface on this host.
    NoMatch,
    /// `netplan generate` rejects the proposed config.
    Netplan,
}

/// One reason for the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Block or warning.
    pub severity: Severity,
    /// The rule.
    pub rule: Rule,
    /// The interface concerned, if one.
    pub interface: Option<String>,
    /// One line for a human.
    pub message: String,
}

impl Finding {
    fn new(severity: Severity, rule: Rule, interface: Option<&str>, message: String) -> Self {
        Self {
            severity,
            rule,
            interface: interface.map(str::to_string),
            message,
        }
    }
}

fn is_link(role: Option<Role>) -> String {
    role.map(|r| describe_role(r).to_string())
        .unwrap_or_default()
}

/// Maps an intent's interface name (kernel name, id or `set-name`) to a kernel name.
fn intent_target(item: &IntentItem, current: &Resolved, proposed: &Resolved) -> String {
    proposed
        .find(&item.interface)
        .or_else(|| current.find(&item.interface))
        .map_or_else(|| item.interface.clone(), |i| i.name.clone())
}

fn covers(item: &IntentItem, target: &str, change: &Change) -> bool {
    target == change.interface && (item.key == ANY_KEY || item.key == change.key)
}

/// Everything the inputs say about the change.
pub fn evaluate(
    current: &Resolved,
    proposed: &Resolved,
    changes: &[Change],
    intent: Option<&Intent>,
    inventory: &SiteInventory,
    system: &SystemInterfaces,
) -> Vec<Finding> {
    let mut out = Vec::new();
    intent_findings(current, proposed, changes, intent, &mut out);
    policy_findings(
        current,
        proposed,
        changes,
        inventory,
        system,
        intent.is_none(),
        &mut out,
    );
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

fn intent_findings(
    current: &Resolved,
    proposed: &Resolved,
    changes: &[Change],
    intent: Option<&Intent>,
    out: &mut Vec<Finding>,
) {
    let Some(intent) = intent else {
        if !changes.is_empty() {
            out.push(Finding::new(
                Severity::Warning,
                Rule::NoIntent,
                None,
                "no intent declared; the change was checked against policy only (pass --intent or --ticket)".into(),
            ));
        }
        return;
    };
    let targets: Vec<(&IntentItem, String)> = intent
        .items
        .iter()
        .map(|i| (i, intent_target(i, current, proposed)))
        .collect();
    let named = intent.interfaces().join(", ");
    let mut outside = false;
    for c in changes {
        let Some((item, _)) = targets.iter().find(|(i, t)| covers(i, t, c)) else {
            outside = true;
            let link = is_link(c.role);
            let what = if c.key == DEFINITION_KEY {
                match (&c.before, &c.after) {
                    (None, Some(a)) => format!("adds {} ({a})", c.interface),
                    _ => format!("removes {}", c.interface),
                }
            } else {
                format!("sets {}.{} {}", c.interface, c.key, c.transition())
            };
            let tail = if link.is_empty() {
                String::new()
            } else {
                format!("; {} is {link}", c.interface)
            };
            out.push(Finding::new(
                Severity::Block,
                Rule::OutsideIntent,
                Some(&c.interface),
                format!("intent names {named}, but this change {what}{tail}"),
            ));
            continue;
        };
        if let Some(want) = &item.value
            && c.after.as_deref() != Some(want.as_str())
            && item.key != ANY_KEY
        {
            out.push(Finding::new(
                Severity::Block,
                Rule::IntentValue,
                Some(&c.interface),
                format!(
                    "intent says {item}, but this change sets {}.{} {}",
                    c.interface,
                    c.key,
                    c.transition()
                ),
            ));
        }
    }
    // When the change already touches something else, that line says it all; listing the
    // untouched intent as well would bury it (the 2025-11-12 review needed two lines).
    if outside {
        return;
    }
    for (item, target) in &targets {
        if !changes.iter().any(|c| covers(item, target, c)) {
            let now = proposed
                .interfaces
                .get(target)
                .and_then(|i| i.settings().get(item.key.as_str()).cloned())
                .unwrap_or_else(|| "unset".into());
            out.push(Finding::new(
                Severity::Warning,
                Rule::IntentNotCarriedOut,
                Some(target),
                format!(
                    "intent {item} is not in this change ({target}.{} stays {now})",
                    item.key
                ),
            ));
        }
    }
}

fn policy_findings(
    current: &Resolved,
    proposed: &Resolved,
    changes: &[Change],
    inventory: &SiteInventory,
    system: &SystemInterfaces,
    no_intent: bool,
    out: &mut Vec<Finding>,
) {
    let effective_mtu = |name: &str| -> u32 {
        proposed
            .interfaces
            .get(name)
            .and_then(|i| i.mtu_bytes)
            .or_else(|| system.by_name(name).and_then(|s| s.mtu_bytes))
            .unwrap_or(DEFAULT_MTU_BYTES)
    };
    for iface in proposed.interfaces.values() {
        let role = role_of(inventory, iface);
        let name = iface.name.as_str();
        if role == Some(Role::Wan)
            && let Some(path_mtu) = inventory.upstream_path_mtu_bytes
        {
            let mtu = effective_mtu(name);
            if mtu != path_mtu {
                out.push(Finding::new(
                    Severity::Block,
                    Rule::WanMtu,
                    Some(name),
                    format!(
                        "{name} is the WAN link: mtu {mtu} must equal the upstream path MTU {path_mtu}, or large packets are dropped upstream"
                    ),
                ));
            }
        }
        if let (Some(parent), Some(mtu)) = (&iface.parent, iface.mtu_bytes) {
            let parent_mtu = effective_mtu(parent);
            if mtu > parent_mtu {
                out.push(Finding::new(
                    Severity::Block,
                    Rule::VlanMtu,
                    Some(name),
                    format!(
                        "vlan {name}: mtu {mtu} exceeds the mtu {parent_mtu} of its parent {parent}"
                    ),
                ));
            }
        }
        if !iface.present {
            out.push(Finding::new(
                Severity::Warning,
                Rule::NoMatch,
                Some(name),
                format!(
                    "`{}` (at {}) matches no interface on this host; it changes nothing until one appears",
                    iface.definition, iface.at
                ),
            ));
        }
        // Without an intent the inventory is the only declaration to hold a new MTU against;
        // with one, the ticket is the authority and the inventory follows it.
        let mtu_changed = changes
            .iter()
            .any(|c| c.interface == name && c.key == "mtu");
        let blocked_here = out
            .iter()
            .any(|f| f.severity == Severity::Block && f.interface.as_deref() == Some(name));
        if let (Some(declared), Some(mtu)) = (
            role.and_then(|_| {
                let mut names = vec![name, iface.definition.as_str()];
                if let Some(s) = &iface.set_name {
                    names.push(s);
                }
                inventory.entry(&names).and_then(|e| e.mtu_bytes)
            }),
            iface.mtu_bytes,
        ) && declared != mtu
            && no_intent
            && mtu_changed
            && !blocked_here
        {
            out.push(Finding::new(
                Severity::Warning,
                Rule::DeclaredMtu,
                Some(name),
                format!(
                    "the inventory declares {name} mtu {declared}, the config sets {mtu}; update the inventory with the change"
                ),
            ));
        }
    }
    for before in current.interfaces.values() {
        if role_of(inventory, before) != Some(Role::Wan) {
            continue;
        }
        let name = before.name.as_str();
        let Some(after) = proposed.interfaces.get(name) else {
            out.push(Finding::new(
                Severity::Block,
                Rule::WanRemoval,
                Some(name),
                format!("this change removes the definition of {name}, the WAN link"),
            ));
            continue;
        };
        for a in before
            .addresses
            .iter()
            .filter(|a| !after.addresses.contains(a))
        {
            out.push(Finding::new(
                Severity::Block,
                Rule::WanRemoval,
                Some(name),
                format!("this change removes address {a} from {name}, the WAN link"),
            ));
        }
        for r in before.routes.iter().filter(|r| !after.routes.contains(r)) {
            out.push(Finding::new(
                Severity::Block,
                Rule::WanRemoval,
                Some(name),
                format!("this change removes route {r} from {name}, the WAN link"),
            ));
        }
    }
    for c in changes {
        if c.key == "mtu"
            && c.after.is_none()
            && let Some(before) = &c.before
        {
            out.push(Finding::new(
                Severity::Warning,
                Rule::MtuUnset,
                Some(&c.interface),
                format!(
                    "removing mtu does not reset {}: networkd leaves the link at {before}; set the value wanted explicitly",
                    c.interface
                ),
            ));
        }
    }
}
