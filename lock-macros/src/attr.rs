//! Parsing and checking the arguments of `#[distributed_lock(...)]`.
//!
//! Every problem is collected, each spanned at what caused it, so that one
//! compile shows them all.

mod target; // what a call locks: a key (a lock, a permit, a side) or keys

use std::collections::HashMap;
use std::time::Duration;

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, Path, Token};

use crate::diagnostics::{closest, Errors};
use crate::values::{boolean, duration, integer, string};
use target::Values;

pub(crate) use target::{Permits, Take, Target};

/// The arguments the attribute knows, in the order the docs list them.
pub(crate) const KNOWN: &[&str] = &[
    "key",
    "keys",
    "permits",
    "read",
    "write",
    "ttl",
    "wait",
    "manager",
    "auto_renew",
    "renew_interval",
    "retry_interval",
    "max_retries",
    "on_lost",
    "skip_if_busy",
    "hold_at_least",
    "hold_at_most",
    "crate",
];

/// The arguments that may be written alone, meaning `= true`.
const FLAGS: &[&str] = &["skip_if_busy", "read", "write"];

/// The default lease TTL.
const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// The default wait: `distlock::DEFAULT_WAIT`, as `LockLayer` waits.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// What `wait = "forever"` (or `"unlimited"`) spells.
const FOREVER: &[&str] = &["forever", "unlimited"];

/// What to do when the lock is lost while the function runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnLost {
    /// Cancel the body at its next await and return `Expired`.
    Cancel,
    /// Let the body run on; it can check `distlock::current_lock()`.
    Continue,
}

/// The checked arguments.
pub(crate) struct Args {
    /// What the call locks: `key` (and how) or `keys`.
    pub(crate) target: Target,
    pub(crate) ttl: Duration,
    /// `None`: without limit (`wait = "forever"`).
    pub(crate) wait: Option<Duration>,
    pub(crate) manager: Option<Expr>,
    pub(crate) auto_renew: bool,
    pub(crate) renew_interval: Duration,
    pub(crate) retry_interval: Option<Duration>,
    pub(crate) max_retries: Option<u32>,
    pub(crate) on_lost: OnLost,
    pub(crate) skip_if_busy: bool,
    pub(crate) hold_at_least: Option<Duration>,
    pub(crate) hold_at_most: Option<Duration>,
    /// The path the generated code names the `distlock` crate by.
    pub(crate) krate: Option<Path>,
    /// Where a compile-time error about the durations points: the
    /// `renew_interval` or else the `ttl` argument, or else the (first) key.
    pub(crate) durations_span: Span,
}

/// The arguments as written: `name = value, ...`.
pub(crate) struct RawArgs(Punctuated<RawArg, Token![,]>);

/// One argument as written; `value` is `None` when `= value` is missing.
pub(crate) struct RawArg {
    name: Path,
    value: Option<Expr>,
}

impl RawArgs {
    /// Whether `skip_if_busy` is given (and not `= false`), before checking.
    pub(crate) fn skips(&self) -> bool {
        self.0.iter().any(|arg| {
            arg.name.is_ident("skip_if_busy")
                && !matches!(&arg.value, Some(Expr::Lit(ExprLit { lit: Lit::Bool(b), .. })) if !b.value)
        })
    }
}

impl Parse for RawArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        Punctuated::parse_terminated(input).map(RawArgs)
    }
}

impl Parse for RawArg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        // `crate = "..."`: a keyword, taken as a name here.
        let name: Path = if input.peek(Token![crate]) {
            let krate: Token![crate] = input.parse()?;
            syn::Ident::new("crate", krate.span).into()
        } else {
            input.parse()?
        };
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse()?)
        } else {
            None
        };
        Ok(RawArg { name, value })
    }
}

impl Args {
    /// Checks `raw` against the function, whose argument bindings are `names`.
    /// Errors go to `errors`; `None` when the arguments cannot be used.
    pub(crate) fn check(raw: RawArgs, names: &[String], errors: &mut Errors) -> Option<Args> {
        let mut seen: HashMap<String, Span> = HashMap::new();
        let mut values = Values::new();
        for arg in raw.0 {
            let Some(ident) = arg.name.get_ident() else {
                let path = &arg.name;
                errors.spanned(path, unknown(&quote::quote!(#path).to_string()));
                continue;
            };
            let name = ident.to_string();
            if !KNOWN.contains(&name.as_str()) {
                errors.at(ident.span(), unknown(&name));
                continue;
            }
            if seen.insert(name.clone(), ident.span()).is_some() {
                errors.at(ident.span(), format!("duplicate argument `{name}`"));
                continue;
            }
            let value = match arg.value {
                Some(value) => Some(value),
                // A flag: `skip_if_busy` alone means `skip_if_busy = true`.
                None if FLAGS.contains(&name.as_str()) => Some(syn::parse_quote!(true)),
                None => None,
            };
            let Some(value) = value else {
                errors.at(
                    ident.span(),
                    format!("`{name}` needs a value: `{name} = ...`"),
                );
                continue;
            };
            values.insert(name, (ident.span(), value));
        }

        let target = Target::check(&mut values, names, errors);
        let mut durations_span = None;
        let ttl = match values.remove("ttl") {
            Some((_, value)) => duration(&value, "ttl", errors).and_then(|(lit, ttl)| {
                durations_span = Some(lit.span());
                if ttl < Duration::from_secs(1) {
                    errors.at(
                        lit.span(),
                        format!(
                            "ttl must be at least 1s (etcd leases count in whole seconds), got {:?}",
                            ttl
                        ),
                    );
                    None
                } else if ttl.subsec_nanos() != 0 {
                    errors.at(
                        lit.span(),
                        format!(
                            "ttl must be a whole number of seconds (etcd leases count in whole \
                             seconds), got {ttl:?}"
                        ),
                    );
                    None
                } else {
                    Some(ttl)
                }
            }),
            None => Some(DEFAULT_TTL),
        };
        let skip_if_busy = match values.remove("skip_if_busy") {
            Some((_, value)) => boolean(&value, "skip_if_busy", errors).unwrap_or(false),
            None => false,
        };
        let wait = match values.remove("wait") {
            Some((ident, _)) if skip_if_busy => {
                errors.at(
                    ident,
                    "`wait` has no effect with `skip_if_busy`, which tries once and skips the \
                     body when the lock is busy; remove one of them",
                );
                None
            }
            Some((_, value)) => match &value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) if FOREVER.contains(&s.value().as_str()) => Some(None),
                _ => duration(&value, "wait", errors).map(|(_, d)| Some(d)),
            },
            None => Some(Some(DEFAULT_WAIT)),
        };
        let hold_at_least = values.remove("hold_at_least").and_then(|(_, value)| {
            let (lit, at_least) = duration(&value, "hold_at_least", errors)?;
            if at_least.is_zero() {
                errors.at(lit.span(), "hold_at_least must be longer than zero");
                return None;
            }
            Some((lit, at_least))
        });
        let hold_at_most = values.remove("hold_at_most").and_then(|(_, value)| {
            let (lit, at_most) = duration(&value, "hold_at_most", errors)?;
            if at_most.is_zero() {
                errors.at(lit.span(), "hold_at_most must be longer than zero");
                return None;
            }
            if let Some((_, at_least)) = &hold_at_least {
                if at_most < *at_least {
                    errors.at(
                        lit.span(),
                        format!(
                            "hold_at_most ({at_most:?}) must not be shorter than hold_at_least \
                             ({at_least:?})"
                        ),
                    );
                    return None;
                }
            }
            Some(at_most)
        });
        let krate = values.remove("crate").and_then(|(_, value)| {
            let lit = string(
                &value,
                "crate",
                "the path of the `distlock` crate, such as \"my_kit::distlock\"",
                errors,
            )?;
            match lit.parse_with(Path::parse_mod_style) {
                Ok(path) => Some(path),
                Err(_) => {
                    errors.at(
                        lit.span(),
                        format!(
                            "`crate` takes a path such as \"::distlock\" or \"my_kit::distlock\", \
                             not {:?}",
                            lit.value()
                        ),
                    );
                    None
                }
            }
        });
        let manager = values.remove("manager").map(|(_, v)| v);
        let auto_renew = match values.remove("auto_renew") {
            Some((_, value)) => boolean(&value, "auto_renew", errors),
            None => Some(true),
        };
        let renew_interval = values.remove("renew_interval").and_then(|(ident, value)| {
            let (lit, every) = duration(&value, "renew_interval", errors)?;
            durations_span = Some(lit.span());
            if auto_renew == Some(false) {
                errors.at(
                    ident,
                    "renew_interval has no effect with `auto_renew = false`; remove one of them",
                );
                return None;
            }
            if every.is_zero() {
                errors.at(lit.span(), "renew_interval must be longer than zero");
                return None;
            }
            // How it must compare with `ttl` is the runtime's rule, checked
            // at compile time by the expansion (`Spec::checked`).
            Some(every)
        });
        let retry_interval = values.remove("retry_interval").and_then(|(_, value)| {
            let (lit, pause) = duration(&value, "retry_interval", errors)?;
            if pause.is_zero() {
                errors.at(lit.span(), "retry_interval must be longer than zero");
                return None;
            }
            Some(pause)
        });
        let max_retries = values
            .remove("max_retries")
            .and_then(|(_, value)| integer(&value, "max_retries", errors));
        let on_lost = match values.remove("on_lost") {
            Some((_, value)) => string(
                &value,
                "on_lost",
                "\"cancel\" (the default) or \"continue\"",
                errors,
            )
            .and_then(|lit| match lit.value().as_str() {
                "cancel" => Some(OnLost::Cancel),
                "continue" => Some(OnLost::Continue),
                other => {
                    errors.at(
                        lit.span(),
                        format!(
                            "unknown on_lost policy {other:?}: use \"cancel\" (stop the body at \
                             its next await and return `Expired`, the default) or \"continue\" \
                             (let it run on)"
                        ),
                    );
                    None
                }
            }),
            None => Some(OnLost::Cancel),
        };

        if errors.any() {
            return None;
        }
        let ttl = ttl?;
        let target = target?;
        Some(Args {
            durations_span: durations_span.unwrap_or_else(|| {
                let first = target.templates().first();
                first.map_or_else(Span::call_site, |key| key.lit.span())
            }),
            target,
            ttl,
            wait: wait?,
            manager,
            auto_renew: auto_renew?,
            renew_interval: renew_interval.unwrap_or(ttl / 3),
            retry_interval,
            max_retries,
            on_lost: on_lost?,
            skip_if_busy,
            hold_at_least: hold_at_least.map(|(_, d)| d),
            hold_at_most,
            krate,
        })
    }
}

fn unknown(name: &str) -> String {
    let hint = closest(name, KNOWN.iter().copied())
        .map(|known| format!("did you mean `{known}`? "))
        .unwrap_or_default();
    format!(
        "unknown argument `{name}`; {hint}expected one of: {}",
        KNOWN.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(tokens: proc_macro2::TokenStream) -> Result<Args, Vec<String>> {
        let raw: RawArgs = syn::parse2(tokens).expect("syntax");
        let mut errors = Errors::default();
        let args = Args::check(raw, &["order_id".into()], &mut errors);
        match errors.finish() {
            Ok(()) => Ok(args.expect("no errors, so args")),
            Err(e) => Err(e.into_iter().map(|e| e.to_string()).collect()),
        }
    }

    #[test]
    fn defaults() {
        let args =
            check(quote::quote!(key = "order:{order_id}")).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(args.ttl, Duration::from_secs(30));
        assert_eq!(args.renew_interval, Duration::from_secs(10));
        assert_eq!(
            args.wait,
            Some(Duration::from_secs(10)),
            "bounded by default"
        );
        assert!(!args.skip_if_busy);
        assert!(args.krate.is_none());
        assert!(args.auto_renew);
        assert!(args.manager.is_none());
        assert_eq!(args.on_lost, OnLost::Cancel);
        assert_eq!(args.retry_interval, None);
        assert_eq!(args.max_retries, None);
    }

    #[test]
    fn every_argument() {
        let args = check(quote::quote!(
            key = "k",
            ttl = "5s",
            wait = "0s",
            manager = self.locks,
            auto_renew = true,
            renew_interval = "1s",
            retry_interval = "50ms",
            max_retries = 3,
            on_lost = "continue",
        ))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(args.ttl, Duration::from_secs(5));
        assert_eq!(args.wait, Some(Duration::ZERO));
        assert_eq!(args.renew_interval, Duration::from_secs(1));
        assert_eq!(args.retry_interval, Some(Duration::from_millis(50)));
        assert_eq!(args.max_retries, Some(3));
        assert_eq!(args.on_lost, OnLost::Continue);
        assert!(args.manager.is_some());
    }

    #[test]
    fn scheduling_arguments() {
        let args = check(quote::quote!(
            key = "k",
            skip_if_busy,
            hold_at_least = "30s",
            hold_at_most = "5m",
            crate = "kit::distlock"
        ))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(args.skip_if_busy);
        assert_eq!(args.hold_at_least, Some(Duration::from_secs(30)));
        assert_eq!(args.hold_at_most, Some(Duration::from_secs(300)));
        let krate = args.krate.unwrap();
        assert_eq!(quote::quote!(#krate).to_string(), "kit :: distlock");
        let forever = check(quote::quote!(key = "k", wait = "forever")).unwrap();
        assert_eq!(forever.wait, None);
        assert!(
            !check(quote::quote!(key = "k", skip_if_busy = false))
                .unwrap()
                .skip_if_busy
        );
    }

    #[test]
    fn scheduling_mistakes() {
        let errors = check(quote::quote!(
            key = "k",
            skip_if_busy,
            wait = "1s",
            hold_at_least = "10s",
            hold_at_most = "5s",
            crate = "not a path"
        ))
        .err()
        .unwrap()
        .join("\n");
        for needle in [
            "`wait` has no effect with `skip_if_busy`",
            "must not be shorter than hold_at_least",
            "`crate` takes a path",
        ] {
            assert!(errors.contains(needle), "missing {needle:?} in:\n{errors}");
        }
    }

    #[test]
    fn renew_defaults_to_a_third_of_ttl() {
        let args = check(quote::quote!(key = "k", ttl = "5s")).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(args.renew_interval, Duration::from_secs(5) / 3);
    }

    #[test]
    fn collects_every_error() {
        let errors = check(quote::quote!(
            ttl = "500ms",
            wait = "soon",
            tll = "1s",
            wait = "1s",
            renew_interval = 5,
            auto_renew = "yes",
            max_retries = -1,
            on_lost = "panic"
        ))
        .err()
        .unwrap();
        let all = errors.join("\n");
        for needle in [
            "unknown argument `tll`",
            "duplicate argument `wait`",
            "missing `key",
            "ttl must be at least 1s",
            "invalid duration \"soon\"",
            "`renew_interval` takes a string literal",
            "`auto_renew` takes `true` or `false`",
            "`max_retries` takes a whole number",
            "did you mean `ttl`?",
            "unknown on_lost policy \"panic\"",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn renew_needs_auto_renew() {
        // How renew_interval must compare with ttl is checked by the
        // expansion, with the runtime's rule (tests/ui/sub_second_ttl.rs).
        let errors = check(quote::quote!(
            key = "k",
            auto_renew = false,
            renew_interval = "1s"
        ))
        .err()
        .unwrap();
        assert!(errors[0].contains("no effect"), "{errors:?}");
    }

    #[test]
    fn missing_value_is_named() {
        let errors = check(quote::quote!(key = "k", ttl)).err().unwrap();
        assert!(errors[0].contains("`ttl` needs a value"), "{errors:?}");
    }

    #[test]
    fn suggestions_are_close_names_only() {
        let known = || KNOWN.iter().copied();
        assert_eq!(closest("tll", known()), Some("ttl"));
        assert_eq!(closest("renew", known()), None);
        assert_eq!(closest("renewinterval", known()), Some("renew_interval"));
        assert_eq!(closest("manger", known()), Some("manager"));
        assert_eq!(closest("timeout", known()), None);
        assert_eq!(closest("x", known()), None);
    }

    #[test]
    fn ttl_must_be_whole_seconds() {
        let errors = check(quote::quote!(key = "k", ttl = "1500ms"))
            .err()
            .unwrap();
        assert!(errors[0].contains("whole number of seconds"), "{errors:?}");
    }
}
