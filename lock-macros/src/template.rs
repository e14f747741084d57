//! The `key` template: `"order:{order_id}"`, `"user:{req.user.id}"`.
//!
//! Literal text with `{...}` placeholders, each naming a function argument
//! (or `self`) followed by any number of field accesses. `{{` and `}}` are
//! literal braces. Each placeholder's value is rendered with `Display`.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::{Expr, LitStr, Member};

/// A parsed key template.
#[derive(Debug)]
pub(crate) struct Template {
    pub(crate) parts: Vec<Part>,
    /// The literal, for spans.
    pub(crate) lit: LitStr,
}

/// One piece of a template.
#[derive(Debug)]
pub(crate) enum Part {
    /// Text copied as is.
    Text(String),
    /// A placeholder: an argument and its field accesses, spanned at the
    /// template literal.
    Value(TokenStream),
}

impl Template {
    /// Parses `lit`; `names` are what placeholders may start with (the
    /// function's argument bindings, and `self` for methods). Every problem
    /// found is reported, each spanned at the literal.
    pub(crate) fn parse(lit: &LitStr, names: &[String]) -> Result<Template, syn::Error> {
        let text = lit.value();
        let span = lit.span();
        let mut errors: Option<syn::Error> = None;
        let mut error = |message: String| {
            let e = syn::Error::new(span, message);
            match &mut errors {
                Some(all) => all.combine(e),
                None => errors = Some(e),
            }
        };
        if text.is_empty() {
            error("the lock key must not be empty".into());
        }

        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => error(format!(
                    "unmatched `}}` in key template {text:?}; write `}}}}` for a literal brace"
                )),
                '{' => {
                    let mut inner = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        inner.push(c);
                    }
                    if !closed {
                        error(format!(
                            "unclosed `{{` in key template {text:?}; write `{{{{` for a literal brace"
                        ));
                        break;
                    }
                    match placeholder(&inner, names, span) {
                        Ok(value) => {
                            if !literal.is_empty() {
                                parts.push(Part::Text(std::mem::take(&mut literal)));
                            }
                            parts.push(Part::Value(value));
                        }
                        Err(message) => error(message),
                    }
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        match errors {
            Some(e) => Err(e),
            None => Ok(Template {
                parts,
                lit: lit.clone(),
            }),
        }
    }
}

/// Checks one placeholder's content and turns it into an expression.
fn placeholder(inner: &str, names: &[String], span: Span) -> Result<TokenStream, String> {
    let trimmed = inner.trim();
    if trimmed.is_empty() {
        return Err(
            "empty placeholder `{}` in key template: name an argument, as in `{order_id}`".into(),
        );
    }
    if let Some((head, _spec)) = trimmed.split_once(':') {
        return Err(format!(
            "format specs are not supported in key templates (`{{{trimmed}}}`): \
             the value's `Display` is used; write `{{{}}}`",
            head.trim()
        ));
    }
    let expr: Expr = syn::parse_str(trimmed).map_err(|_| {
        format!(
            "`{{{trimmed}}}` is not a placeholder: name an argument, optionally with fields, \
             as in `{{order_id}}` or `{{req.user.id}}`"
        )
    })?;
    let root = root_name(&expr).ok_or_else(|| {
        if trimmed.chars().all(|c| c.is_ascii_digit()) {
            format!(
                "positional placeholder `{{{trimmed}}}` in key template: name an argument instead"
            )
        } else {
            format!(
                "`{{{trimmed}}}` is not a placeholder: name an argument, optionally with fields, \
                 as in `{{order_id}}` or `{{req.user.id}}`"
            )
        }
    })?;
    if !names.contains(&root) {
        let known = if names.is_empty() {
            "the function has no arguments".to_owned()
        } else {
            let list: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            format!("the function's arguments are {}", list.join(", "))
        };
        let hint = crate::diagnostics::closest(&root, names.iter().map(String::as_str))
            .map(|n| format!("did you mean `{n}`? "))
            .unwrap_or_default();
        return Err(if root == "self" {
            format!("unknown name `self` in key template: the function has no `self`; {known}")
        } else {
            format!("unknown name `{root}` in key template; {hint}{known}")
        });
    }
    Ok(respan(expr.into_token_stream(), span))
}

/// The argument a placeholder starts from: `a` in `a`, `a.b.0`.
fn root_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Path(p) if p.attrs.is_empty() && p.qself.is_none() => {
            p.path.get_ident().map(|i| i.to_string())
        }
        Expr::Field(f) if f.attrs.is_empty() => match &f.member {
            Member::Named(_) | Member::Unnamed(_) => root_name(&f.base),
        },
        _ => None,
    }
}

/// `tokens` with every span set to `span`, so that names resolve at the
/// attribute's site and type errors point at the template.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tt| {
            if let proc_macro2::TokenTree::Group(g) = &tt {
                let mut group = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                tt = proc_macro2::TokenTree::Group(group);
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["order_id".into(), "req".into(), "self".into()]
    }

    fn parse(s: &str) -> Result<Template, String> {
        let lit = LitStr::new(s, Span::call_site());
        Template::parse(&lit, &names()).map_err(|e| {
            e.into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(" | ")
        })
    }

    fn shape(t: &Template) -> Vec<String> {
        t.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => format!("text:{t}"),
                Part::Value(v) => format!("value:{v}"),
            })
            .collect()
    }

    #[test]
    fn splits_text_and_placeholders() {
        let t = parse("order:{order_id}/{req.user.id}:{self.0}").unwrap();
        assert_eq!(
            shape(&t),
            [
                "text:order:",
                "value:order_id",
                "text:/",
                "value:req . user . id",
                "text::",
                "value:self . 0"
            ]
        );
    }

    #[test]
    fn escaped_braces_are_text() {
        let t = parse("{{a}}-{order_id}").unwrap();
        assert_eq!(shape(&t), ["text:{a}-", "value:order_id"]);
        assert_eq!(shape(&parse("x{{}}").unwrap()), ["text:x{}"]);
    }

    #[test]
    fn constant_key_has_no_values() {
        assert_eq!(
            shape(&parse("nightly-report").unwrap()),
            ["text:nightly-report"]
        );
    }

    #[test]
    fn reports_every_problem() {
        let err = parse("{nope}:{}:{0}:{order_id:>5}:{a+b}:}").unwrap_err();
        assert!(err.contains("unknown name `nope`"), "{err}");
        assert!(err.contains("`order_id`, `req`, `self`"), "{err}");
        assert!(err.contains("empty placeholder"), "{err}");
        assert!(err.contains("positional placeholder `{0}`"), "{err}");
        assert!(err.contains("format specs are not supported"), "{err}");
        assert!(err.contains("`{a+b}` is not a placeholder"), "{err}");
        assert!(err.contains("unmatched `}`"), "{err}");
    }

    #[test]
    fn rejects_empty_and_unclosed() {
        assert!(parse("").unwrap_err().contains("must not be empty"));
        assert!(parse("a{order_id").unwrap_err().contains("unclosed `{`"));
    }

    #[test]
    fn self_without_receiver_is_explained() {
        let lit = LitStr::new("{self.id}", Span::call_site());
        let err = Template::parse(&lit, &["id".into()]).unwrap_err();
        assert!(
            err.to_string().contains("the function has no `self`"),
            "{err}"
        );
    }
}
