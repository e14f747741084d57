//! Rendering a key template into a lock name ([`Key`]).

use std::fmt::{Display, Write as _};

/// Builds a lock name from a key template's pieces.
#[derive(Debug, Default)]
pub struct Key(String);

impl Key {
    /// An empty key.
    pub fn new() -> Self {
        Key(String::new())
    }

    /// Appends literal text.
    pub fn text(mut self, text: &str) -> Self {
        self.0.push_str(text);
        self
    }

    /// Appends a placeholder's value, rendered with `Display`.
    pub fn value<T: Display + ?Sized>(mut self, value: &T) -> Self {
        let _ = write!(self.0, "{value}");
        self
    }

    /// The lock name.
    pub fn finish(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_renders_text_and_values() {
        let key = Key::new()
            .text("order:")
            .value(&42)
            .text("/")
            .value("x")
            .finish();
        assert_eq!(key, "order:42/x");
    }
}
