//! The change declaration: which interfaces and keys a ticket means to change.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Location};

/// Key that stands for every key of an interface (`vlan20.*`).
pub const ANY_KEY: &str = "*";

/// One declared change: `interface.key` or `interface.key=value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntentItem {
    /// Interface name, definition id or `set-name` (`eno2`, `eno2.20`).
    pub interface: String,
    /// Netplan key as the diff names it (`mtu`, `addresses`, `definition`), or `*`.
    pub key: String,
    /// The value the ticket expects, if it gives one.
    pub value: Option<String>,
}

impl std::fmt::Display for IntentItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.interface, self.key)?;
        if let Some(v) = &self.value {
            write!(f, "={v}")?;
        }
        Ok(())
    }
}

/// What a change ticket declares it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Intent {
    /// Ticket id, for messages.
    pub ticket: Option<String>,
    /// The declared changes.
    pub items: Vec<IntentItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketFile {
    ticket: Option<String>,
    intent: Vec<String>,
}

impl Intent {
    /// Parses `"eno2.mtu=9000, eno2.20.mtu=9000"`. The key is after the last dot before `=`,
    /// so VLAN names with dots work.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut items = Vec::new();
        for raw in text.split(',') {
            let item = raw.trim();
            if item.is_empty() {
                continue;
            }
            let (target, value) = match item.split_once('=') {
                Some((t, v)) => (t.trim(), Some(v.trim().to_string())),
                None => (item, None),
            };
            let Some((interface, key)) = target.rsplit_once('.') else {
                return Err(Error::Intent {
                    item: item.to_string(),
                    message: "expected interface.key".into(),
                });
            };
            if interface.is_empty() || key.is_empty() {
                return Err(Error::Intent {
                    item: item.to_string(),
                    message: "interface and key must not be empty".into(),
                });
            }
            if value.as_deref() == Some("") {
                return Err(Error::Intent {
                    item: item.to_string(),
                    message: "empty value after `=`".into(),
                });
            }
            items.push(IntentItem {
                interface: interface.to_string(),
                key: key.to_string(),
                value,
            });
        }
        if items.is_empty() {
            return Err(Error::Intent {
                item: text.to_string(),
                message: "no interface.key given".into(),
            });
        }
        Ok(Self {
            ticket: None,
            items,
        })
    }

    /// Reads a ticket file, TOML (`.toml`) or YAML (anything else):
    /// `ticket = "NET-4521"`, `intent = ["eno2.mtu=9000"]`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            help: "pass the change ticket file with --ticket, or use --intent",
            source,
        })?;
        Self::from_ticket_text(path, &text)
    }

    /// Parses ticket text; `path` is for messages and picks the format by extension.
    pub fn from_ticket_text(path: &Path, text: &str) -> Result<Self, Error> {
        let help = "a ticket file holds `ticket = \"NET-1\"` and `intent = [\"eno2.mtu=9000\"]`";
        let raw: TicketFile = crate::inventory::from_file_text(path, text, help)?;
        let mut intent = Self::parse(&raw.intent.join(",")).map_err(|e| match e {
            Error::Intent { item, message } => Error::invalid(
                Location::new(path, 0, 0),
                format!("invalid intent `{item}`: {message}"),
                help,
            ),
            other => other,
        })?;
        intent.ticket = raw.ticket;
        Ok(intent)
    }

    /// The declared interfaces, deduplicated, in order.
    pub fn interfaces(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for i in &self.items {
            if !out.contains(&i.interface.as_str()) {
                out.push(&i.interface);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comma_list_and_vlan_names() {
        let i = Intent::parse("eno2.mtu=9000, eno2.20.mtu , vlan20.*").unwrap();
        assert_eq!(i.items.len(), 3);
        assert_eq!(i.items[0].interface, "eno2");
        assert_eq!(i.items[0].value.as_deref(), Some("9000"));
        assert_eq!(i.items[1].interface, "eno2.20");
        assert_eq!(i.items[1].key, "mtu");
        assert_eq!(i.items[1].value, None);
        assert_eq!(i.items[2].key, "*");
        assert_eq!(i.interfaces(), vec!["eno2", "eno2.20", "vlan20"]);
    }

    #[test]
    fn rejects_malformed_items() {
        for bad in ["eno2", "", " , ", ".mtu", "eno2.", "eno2.mtu="] {
            let err = Intent::parse(bad).unwrap_err();
            assert!(err.to_string().contains("help:"), "{bad}: {err}");
        }
    }

    #[test]
    fn reads_toml_and_yaml_tickets() {
        let t = Intent::from_ticket_text(
            Path::new("t.toml"),
            "ticket = \"NET-4521\"\nintent = [\"eno2.mtu=9000\"]\n",
        )
        .unwrap();
        assert_eq!(t.ticket.as_deref(), Some("NET-4521"));
        let y = Intent::from_ticket_text(
            Path::new("t.yaml"),
            "ticket: NET-4521\nintent: [\"eno2.mtu=9000\"]\n",
        )
        .unwrap();
        assert_eq!(t, y);
        let err = Intent::from_ticket_text(Path::new("t.toml"), "intent = []\nfoo = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.toml:2:1:"), "{err}");
    }
}
