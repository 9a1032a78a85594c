//! `mtu_drift`: an interface's MTU differs from its declared value. Opens the moment the link
//! watcher reports it, before anything breaks (the incident's P1 action item, live instead of
//! in a cron script). A WAN drift is a warning; on any other role it is information, since a
//! camera VLAN with the wrong MTU costs efficiency, not uploads. An interface changed *to* its
//! declared value is not drift at all.

use super::{Context, change_clause, mtu_fix};
use crate::{Evidence, Finding, Kind, Role, Severity, Store};

/// One finding per inventory interface whose current MTU differs from its declared value.
/// Interfaces the inventory does not list are ignored (bridges, VPN devices).
pub fn evaluate(store: &Store, ctx: &Context<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for iface in ctx.inventory.interfaces() {
        let Some(link) = store.link(&iface.name) else {
            continue;
        };
        let Some(mtu) = link.mtu_bytes else {
            continue;
        };
        if mtu == iface.mtu_bytes {
            continue;
        }
        let change = link.last_mtu_change.as_ref().filter(|c| c.new_bytes == mtu);
        let (started_at_ms, head, line) = match change {
            Some(c) => (
                c.at_ms,
                change_clause(ctx, c),
                format!("{} MTU changed {} → {}", c.ifname, c.old_bytes, c.new_bytes),
            ),
            None => (
                link.mtu_at_ms,
                format!("{} MTU is {mtu}", iface.name),
                format!("{} reports MTU {mtu}", iface.name),
            ),
        };
        let severity = if iface.role == Role::Wan {
            Severity::Warning
        } else {
            Severity::Info
        };
        findings.push(Finding {
            kind: Kind::MtuDrift,
            subject: iface.name.clone(),
            severity,
            started_at_ms,
            root_cause: format!(
                "{head}; declared {} ({} interface)",
                iface.mtu_bytes,
                iface.role.as_str()
            ),
            evidence: vec![Evidence::new(started_at_ms, line)],
            fix: mtu_fix(iface),
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    #[test]
    fn wan_change_is_a_warning_at_once() {
        let mut tl = Timeline::new();
        tl.push("08:00:00", link_mtu("eno1", 1500));
        tl.push("08:15:03", mtu_changed("eno1", 1500, 9000));
        let f = run_rule(&tl.obs, "08:15:03", evaluate);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(
            f[0].root_cause,
            "eno1 MTU changed 1500 → 9000 at 08:15:03; declared 1500 (wan interface)"
        );
        assert_eq!(f[0].fix[0], "ip link set eno1 mtu 1500");
    }

    #[test]
    fn camera_change_to_its_declared_value_is_nothing() {
        let mut tl = Timeline::new();
        tl.push("08:00:00", link_mtu("eno2", 1500));
        tl.push("08:15:03", mtu_changed("eno2", 1500, 9000));
        assert!(run_rule(&tl.obs, "08:15:04", evaluate).is_empty());
    }

    #[test]
    fn camera_drift_is_only_info() {
        let mut tl = Timeline::new();
        tl.push("08:15:03", mtu_changed("eno2", 9000, 1500));
        let f = run_rule(&tl.obs, "08:15:04", evaluate);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Info);
    }

    #[test]
    fn drift_found_at_start_without_a_change_event() {
        let mut tl = Timeline::new();
        tl.push("08:00:00", link_mtu("eno1", 9000));
        tl.push("08:00:00", link_mtu("docker0", 1400));
        let f = run_rule(&tl.obs, "08:00:01", evaluate);
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].root_cause,
            "eno1 MTU is 9000; declared 1500 (wan interface)"
        );
    }
}
