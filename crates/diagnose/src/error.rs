/// Errors of the diagnosis crate. The engine itself cannot fail; only configuration can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A value in the site inventory is unusable. `key` is the path inside the inventory table
    /// (`interfaces[1].mtu_bytes`); the caller adds the file, line and column.
    #[error("inventory `{key}`: {reason}")]
    Inventory {
        /// Path of the offending key.
        key: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A diagnosis setting is unusable.
    #[error("diagnose setting `{key}`: {reason}")]
    Setting {
        /// The setting's key.
        key: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
}
