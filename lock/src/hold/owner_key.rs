//! [`OwnerKey`]: where the manager's registry finds a hold for re-entry by
//! its owner, without a copy of the text per hold.

use std::sync::Arc;

use super::state::{prefix, Hold};

/// A hold's owner key (see [`Hold::owner_key`]): a prefix of its key,
/// shared with the hold rather than copied. Hashed and compared as that
/// prefix, so the map is looked up by `&str`.
pub(super) struct OwnerKey {
    key: Arc<str>,
    len: u32,
}

impl OwnerKey {
    pub(super) fn of(hold: &Hold) -> Self {
        OwnerKey {
            key: Arc::clone(hold.key()),
            len: hold.owner_len(),
        }
    }

    fn as_str(&self) -> &str {
        prefix(&self.key, self.len)
    }
}

impl std::borrow::Borrow<str> for OwnerKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for OwnerKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for OwnerKey {}

impl std::hash::Hash for OwnerKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

#[cfg(test)]
mod tests {
    use crate::hold::Hold;
    use crate::key::Keyspace;

    /// A hold keeps its queue and owner key as prefixes of its key: every
    /// kind of key must start with them.
    #[test]
    fn owner_keys_are_prefixes_of_every_kind_of_key() {
        let keys = Keyspace::new("/ns");
        let queue = keys.queue("a/b");
        assert!(Keyspace::contender(&queue, 0x1f).starts_with(&queue));
        let readers = Hold::readers_key(&queue);
        assert!(readers.starts_with(&queue));
        assert!(Keyspace::reader(&queue, 0x1f, 7).starts_with(&readers));
        let semaphore = keys.semaphore("a/b");
        assert!(Keyspace::permit(&semaphore, 0x1f, 7).starts_with(&semaphore));
    }
}
