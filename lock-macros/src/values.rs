//! The values an argument of the attribute takes: string literals,
//! durations, booleans and whole numbers, each with a spanned error saying
//! what was expected.

use std::time::Duration;

use syn::{Expr, ExprLit, Lit, LitStr};

use crate::diagnostics::Errors;

/// The string literal `value`, or an error naming what `arg` expects.
pub(crate) fn string(
    value: &Expr,
    arg: &str,
    expected: &str,
    errors: &mut Errors,
) -> Option<LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s.clone()),
        other => {
            errors.spanned(other, format!("`{arg}` takes a string literal: {expected}"));
            None
        }
    }
}

/// A duration string such as `"500ms"`, `"30s"`, `"5m"`, `"1h 30m"`.
pub(crate) fn duration(value: &Expr, arg: &str, errors: &mut Errors) -> Option<(LitStr, Duration)> {
    let lit = string(
        value,
        arg,
        "a duration such as \"500ms\", \"30s\" or \"5m\"",
        errors,
    )?;
    match humantime::parse_duration(&lit.value()) {
        Ok(d) => Some((lit, d)),
        Err(e) => {
            errors.at(
                lit.span(),
                format!(
                    "invalid duration {:?} for `{arg}`: {e}; write e.g. \"500ms\", \"30s\", \"5m\"",
                    lit.value()
                ),
            );
            None
        }
    }
}

/// `true` or `false`.
pub(crate) fn boolean(value: &Expr, arg: &str, errors: &mut Errors) -> Option<bool> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => Some(b.value),
        other => {
            errors.spanned(other, format!("`{arg}` takes `true` or `false`"));
            None
        }
    }
}

/// A whole number that fits in `u32`.
pub(crate) fn integer(value: &Expr, arg: &str, errors: &mut Errors) -> Option<u32> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => match i.base10_parse::<u32>() {
            Ok(n) => Some(n),
            Err(e) => {
                errors.at(
                    i.span(),
                    format!("`{arg}` takes a whole number (0 = without limit): {e}"),
                );
                None
            }
        },
        other => {
            errors.spanned(
                other,
                format!("`{arg}` takes a whole number (0 = without limit)"),
            );
            None
        }
    }
}
