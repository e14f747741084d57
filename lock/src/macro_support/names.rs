//! What a locked call names ([`Names`]): one rendered key, or the rendered
//! keys of a multi-lock.

use std::fmt;

/// The rendered key of a `#[distributed_lock(key = ..)]` call, or the keys
/// of a `keys = [..]` call: what the expansion passes to
/// [`locked`](super::locked()).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Names {
    /// One name: a lock, a semaphore, or a read-write lock.
    One(String),
    /// Every name of a multi-lock, as rendered (duplicates are taken once).
    All(Vec<String>),
}

impl From<String> for Names {
    fn from(name: String) -> Self {
        Names::One(name)
    }
}

impl<const N: usize> From<[String; N]> for Names {
    fn from(names: [String; N]) -> Self {
        Names::All(names.into())
    }
}

impl fmt::Display for Names {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Names::One(name) => f.write_str(name),
            Names::All(names) => f.write_str(&names.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_or_all() {
        assert_eq!(Names::from("a".to_owned()), Names::One("a".into()));
        let all = Names::from(["b".to_owned(), "a".to_owned()]);
        assert_eq!(all, Names::All(vec!["b".into(), "a".into()]));
        assert_eq!(all.to_string(), "b, a");
    }
}
