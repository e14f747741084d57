//! What a call locks: `key = ".."` — the key's lock, or with `permits = n`
//! a permit of its semaphore, with `read` or `write` a side of its
//! read-write lock — or `keys = [..]`, a multi-lock of every name; and the
//! contradictions between these arguments, each an error at the argument
//! that contradicts another.

use std::collections::HashMap;

use proc_macro2::Span;
use syn::{Expr, ExprLit, ExprUnary, Lit, UnOp};

use crate::diagnostics::Errors;
use crate::template::Template;
use crate::values::{boolean, string};

/// `distlock::MAX_PERMITS`. A literal over it is an error here; the
/// expansion's `const` check (`Spec::checked`) applies the core's own value.
pub(crate) const MAX_PERMITS: u32 = 1024;

/// `distlock::MAX_NAMES`: the most names a multi-lock takes.
pub(crate) const MAX_NAMES: usize = 64;

/// What a call locks.
pub(crate) enum Target {
    /// `key = ".."`, taken as `take` says.
    One { key: Template, take: Take },
    /// `keys = [..]`: every name's lock, all at once.
    All(Vec<Template>),
}

/// What a call takes of its one key.
pub(crate) enum Take {
    Lock,
    /// `permits = n`: a permit of the key's semaphore.
    Permits(Permits),
    /// `read`: the read side of the key's read-write lock.
    Read,
    /// `write`: its write side.
    Write,
}

/// The number of permits: a literal (checked here), or an expression
/// evaluated at each call (checked then).
pub(crate) enum Permits {
    Literal(u32),
    Expr(Expr),
}

/// The arguments as given, by name: where each name is, and its value.
pub(crate) type Values = HashMap<String, (Span, Expr)>;

impl Target {
    /// The key templates: one, or each of `keys`.
    pub(crate) fn templates(&self) -> &[Template] {
        match self {
            Target::One { key, .. } => std::slice::from_ref(key),
            Target::All(keys) => keys,
        }
    }

    /// Takes `key`, `keys`, `permits`, `read` and `write` out of `values`
    /// and checks them against each other and the function's argument
    /// bindings, `names`. Every problem goes to `errors`; `None` if any.
    pub(crate) fn check(
        values: &mut Values,
        names: &[String],
        errors: &mut Errors,
    ) -> Option<Target> {
        let mut errors = Checked {
            errors,
            failed: false,
        };
        let key = values.remove("key");
        let keys = values.remove("keys");
        let permits = values.remove("permits");
        let read = errors.flag(values.remove("read"), "read");
        let write = errors.flag(values.remove("write"), "write");

        if let (Some(_), Some((at, _))) = (&key, &keys) {
            errors.at(
                *at,
                "`key` and `keys` both say what to lock: `key = \"..\"` one name, `keys = [..]` \
                 several at once (a multi-lock); remove one of them",
            );
        }
        if key.is_none() && keys.is_none() {
            errors.at(
                Span::call_site(),
                "missing `key = \"...\"`: the lock's name, a template over the function's \
                 arguments such as `key = \"order:{order_id}\"` (or `keys = [\"acct:{from}\", \
                 \"acct:{to}\"]` to lock several names at once)",
            );
        }
        if let (Some(_), Some(at)) = (read, write) {
            errors.at(
                at,
                "`read` and `write` are the two sides of one read-write lock, and a call takes \
                 one of them: `read` shares the key with other readers, `write` excludes \
                 everyone; remove one of them",
            );
        }
        if permits.is_some() {
            for (side, at) in [("read", read), ("write", write)] {
                if let Some(at) = at {
                    errors.at(
                        at,
                        format!(
                            "`{side}` takes a side of a read-write lock and `permits` a permit of \
                             a semaphore: a call takes one kind of lock; remove one of them"
                        ),
                    );
                }
            }
        }
        if keys.is_some() {
            let permits = permits.as_ref().map(|(at, _)| *at);
            for (arg, at) in [("permits", permits), ("read", read), ("write", write)] {
                if let Some(at) = at {
                    errors.at(
                        at,
                        format!(
                            "`{arg}` applies to one `key`: `keys = [..]` takes every name's lock, \
                             all at once (a multi-lock); for one name write `key = \"..\", {arg}{}`",
                            if arg == "permits" { " = n" } else { "" }
                        ),
                    );
                }
            }
        }

        let key = key.map(|(_, value)| one_template(&value, names, errors.errors));
        let key = errors.keep(key);
        let keys = keys.map(|(_, value)| templates(&value, names, errors.errors));
        let keys = errors.keep(keys);
        let permits = permits.map(|(_, value)| permit_count(value, errors.errors));
        let permits = errors.keep(permits);
        if errors.failed {
            return None;
        }
        match (key, keys) {
            (Some(key), None) => {
                let take = match (permits, read, write) {
                    (Some(permits), _, _) => Take::Permits(permits),
                    (None, Some(_), _) => Take::Read,
                    (None, None, Some(_)) => Take::Write,
                    (None, None, None) => Take::Lock,
                };
                Some(Target::One { key, take })
            }
            (None, Some(keys)) => Some(Target::All(keys)),
            _ => None,
        }
    }
}

/// [`Errors`] that also remember whether this check failed.
struct Checked<'a> {
    errors: &'a mut Errors,
    failed: bool,
}

impl Checked<'_> {
    fn at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.failed = true;
        self.errors.at(span, message);
    }

    /// A checked argument given as `arg`: `Some(None)`, the argument
    /// given but refused (its error reported), is a failure.
    fn keep<T>(&mut self, arg: Option<Option<T>>) -> Option<T> {
        self.failed |= matches!(arg, Some(None));
        arg.flatten()
    }

    /// A flag (`read`, or `read = true`): where it is, if set.
    fn flag(&mut self, arg: Option<(Span, Expr)>, name: &str) -> Option<Span> {
        let (at, value) = arg?;
        let set = boolean(&value, name, self.errors);
        self.failed |= set.is_none();
        set?.then_some(at)
    }
}

/// `key = ".."`: one template.
fn one_template(value: &Expr, names: &[String], errors: &mut Errors) -> Option<Template> {
    if let Expr::Array(_) = value {
        errors.spanned(
            value,
            "`key` takes one template; to lock several names at once, write `keys = [..]`",
        );
        return None;
    }
    let lit = string(value, "key", "a template like \"order:{order_id}\"", errors)?;
    Template::parse(&lit, names)
        .map_err(|e| errors.push(e))
        .ok()
}

/// `keys = [..]`: one or more templates, each once.
fn templates(value: &Expr, names: &[String], errors: &mut Errors) -> Option<Vec<Template>> {
    let example = "`keys = [\"acct:{from}\", \"acct:{to}\"]`";
    let Expr::Array(list) = value else {
        let hint = match value {
            Expr::Lit(ExprLit {
                lit: Lit::Str(_), ..
            }) => "; for one name write `key = \"..\"`",
            _ => "",
        };
        errors.spanned(
            value,
            format!("`keys` takes a list of key templates, as in {example}{hint}"),
        );
        return None;
    };
    if list.elems.is_empty() {
        errors.spanned(
            value,
            format!(
                "`keys = []` names nothing to lock: list at least one key template, as in \
                 {example}"
            ),
        );
        return None;
    }
    if list.elems.len() > MAX_NAMES {
        errors.spanned(
            value,
            format!(
                "`keys` lists {} names; a multi-lock takes at most {MAX_NAMES} \
                 (`distlock::MAX_NAMES`)",
                list.elems.len()
            ),
        );
        return None;
    }
    let mut templates: Vec<Template> = Vec::new();
    let mut failed = false;
    for elem in &list.elems {
        let Some(lit) = string(
            elem,
            "keys",
            "each name a template like \"acct:{from}\"",
            errors,
        ) else {
            failed = true;
            continue;
        };
        if templates.iter().any(|t| t.lit.value() == lit.value()) {
            errors.at(
                lit.span(),
                format!(
                    "{:?} is listed twice in `keys`; each name is locked once: remove one",
                    lit.value()
                ),
            );
            failed = true;
            continue;
        }
        match Template::parse(&lit, names) {
            Ok(template) => templates.push(template),
            Err(e) => {
                errors.push(e);
                failed = true;
            }
        }
    }
    (!failed).then_some(templates)
}

/// `permits = n`: a whole number from 1 to [`MAX_PERMITS`], or an
/// expression of type `u32`.
fn permit_count(value: Expr, errors: &mut Errors) -> Option<Permits> {
    let range = format!("a whole number from 1 to {MAX_PERMITS} (`distlock::MAX_PERMITS`)");
    match &value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => match int.base10_parse::<u32>() {
            Ok(0) => errors.at(
                int.span(),
                "`permits = 0` would admit nobody: a semaphore has at least 1 permit",
            ),
            Ok(n) if n > MAX_PERMITS => errors.at(
                int.span(),
                format!("`permits = {n}` is too many: `permits` takes {range}"),
            ),
            Ok(n) => return Some(Permits::Literal(n)),
            Err(e) => errors.at(int.span(), format!("`permits` takes {range}: {e}")),
        },
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_), ..
        })
        | Expr::Lit(_) => errors.spanned(
            &value,
            format!(
                "`permits` takes {range}, or an expression of type `u32` evaluated at each call \
                 (`permits = self.crawlers`)"
            ),
        ),
        _ => return Some(Permits::Expr(value)),
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[(&str, Expr)]) -> Result<Target, String> {
        let mut values: Values = args
            .iter()
            .map(|(name, value)| (name.to_string(), (Span::call_site(), value.clone())))
            .collect();
        let mut errors = Errors::default();
        let names = ["from".to_owned(), "to".to_owned()];
        let target = Target::check(&mut values, &names, &mut errors);
        match errors.finish() {
            Ok(()) => Ok(target.expect("no errors, so a target")),
            Err(e) => {
                assert!(target.is_none());
                Err(e
                    .into_iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
        }
    }

    fn t() -> Expr {
        syn::parse_quote!(true)
    }

    #[test]
    fn kinds() {
        let key: Expr = syn::parse_quote!("acct:{from}");
        let take = |extra: &[(&str, Expr)]| {
            let mut args = vec![("key", key.clone())];
            args.extend_from_slice(extra);
            match check(&args).unwrap() {
                Target::One { take, .. } => take,
                Target::All(_) => panic!("one key"),
            }
        };
        assert!(matches!(take(&[]), Take::Lock));
        assert!(matches!(take(&[("read", t())]), Take::Read));
        assert!(matches!(take(&[("write", t())]), Take::Write));
        assert!(matches!(
            take(&[("read", syn::parse_quote!(false))]),
            Take::Lock
        ));
        assert!(matches!(
            take(&[("permits", syn::parse_quote!(3))]),
            Take::Permits(Permits::Literal(3))
        ));
        assert!(matches!(
            take(&[("permits", syn::parse_quote!(self.limit))]),
            Take::Permits(Permits::Expr(_))
        ));
        assert!(matches!(
            take(&[("permits", syn::parse_quote!(1024))]),
            Take::Permits(Permits::Literal(1024))
        ));
        let all = check(&[("keys", syn::parse_quote!(["acct:{from}", "acct:{to}"]))]).unwrap();
        assert_eq!(all.templates().len(), 2);
    }

    #[test]
    fn contradictions() {
        let key: Expr = syn::parse_quote!("k");
        let keys: Expr = syn::parse_quote!(["a", "b"]);
        for (args, needle) in [
            (
                vec![("key", key.clone()), ("keys", keys.clone())],
                "`key` and `keys` both",
            ),
            (vec![], "missing `key"),
            (
                vec![("key", key.clone()), ("read", t()), ("write", t())],
                "`read` and `write` are the two sides",
            ),
            (
                vec![
                    ("key", key.clone()),
                    ("permits", syn::parse_quote!(2)),
                    ("read", t()),
                ],
                "`read` takes a side of a read-write lock and `permits`",
            ),
            (
                vec![
                    ("key", key.clone()),
                    ("permits", syn::parse_quote!(2)),
                    ("write", t()),
                ],
                "`write` takes a side",
            ),
            (
                vec![("keys", keys.clone()), ("permits", syn::parse_quote!(2))],
                "`permits` applies to one `key`",
            ),
            (
                vec![("keys", keys.clone()), ("read", t())],
                "`read` applies to one `key`",
            ),
            (
                vec![("keys", keys.clone()), ("write", t())],
                "`write` applies to one `key`",
            ),
            (
                vec![("key", key.clone()), ("permits", syn::parse_quote!(0))],
                "`permits = 0` would admit nobody",
            ),
            (
                vec![("key", key.clone()), ("permits", syn::parse_quote!(1025))],
                "`permits = 1025` is too many",
            ),
            (
                vec![("key", key.clone()), ("permits", syn::parse_quote!(-1))],
                "`permits` takes a whole number",
            ),
            (
                vec![("key", key.clone()), ("permits", syn::parse_quote!("3"))],
                "`permits` takes a whole number",
            ),
            (
                vec![("keys", syn::parse_quote!([]))],
                "`keys = []` names nothing",
            ),
            (
                vec![("keys", syn::parse_quote!("a"))],
                "for one name write `key",
            ),
            (
                vec![("keys", syn::parse_quote!(["a", "a"]))],
                "listed twice",
            ),
            (
                vec![("keys", syn::parse_quote!(["a", 1]))],
                "`keys` takes a string literal",
            ),
            (vec![("key", keys.clone())], "write `keys = [..]`"),
            (
                vec![("keys", syn::parse_quote!(["{nobody}"]))],
                "unknown name `nobody`",
            ),
        ] {
            let errors = check(&args)
                .err()
                .unwrap_or_else(|| panic!("no error for {needle}"));
            assert!(errors.contains(needle), "missing {needle:?} in:\n{errors}");
        }
        let many: Vec<String> = (0..65).map(|i| format!("k{i}")).collect();
        let many: Expr = syn::parse_quote!([#(#many),*]);
        assert!(check(&[("keys", many)])
            .err()
            .unwrap()
            .contains("at most 64"));
    }
}
