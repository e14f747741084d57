//! The `key` template: `"order:{order_id}"`, `"user:{req.get_ref().user_id}"`.
//!
//! Literal text with `{...}` placeholders, each a Rust expression over the
//! function's arguments (and `self`), as `tracing`'s `fields(..)` take:
//! `{order_id}`, `{req.user.id}`, `{ids[0]}`, `{name.to_lowercase()}`.
//! `{{` and `}}` are literal braces. Each placeholder's value is rendered
//! with `Display`. Names are checked here: a lowercase name that is neither
//! an argument nor bound inside the placeholder (a closure's parameter) is
//! an error at it, with the closest argument as a hint.

use std::collections::HashSet;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::visit_mut::VisitMut;
use syn::{Expr, Lit, LitStr};

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
    /// A placeholder.
    Value(Placeholder),
}

/// One `{...}` of a template.
#[derive(Debug)]
pub(crate) struct Placeholder {
    /// The expression, every token spanned at [`span`](Self::span), so that
    /// names resolve at the attribute's site and type errors point there.
    pub(crate) expr: TokenStream,
    /// The placeholder as written, braces included (`{req.id}`), for messages.
    pub(crate) text: String,
    /// The function's arguments (and `self`) it uses.
    pub(crate) uses: Vec<String>,
    /// Where the placeholder is: its own bytes of the literal where the
    /// compiler can tell (`Literal::subspan`, nightly compilers today),
    /// else the whole literal.
    pub(crate) span: Span,
}

impl Template {
    /// Parses `lit`; `names` are the names placeholders may use (the
    /// function's argument bindings, and `self` for methods). Every problem
    /// found is reported, each spanned at its placeholder (see
    /// [`Placeholder::span`]).
    pub(crate) fn parse(lit: &LitStr, names: &[String]) -> Result<Template, syn::Error> {
        let text = lit.value();
        let spans = Spans::of(lit, &text);
        let mut errors: Option<syn::Error> = None;
        let mut error = |span: Span, message: String| {
            let e = syn::Error::new(span, message);
            match &mut errors {
                Some(all) => all.combine(e),
                None => errors = Some(e),
            }
        };
        if text.is_empty() {
            error(lit.span(), "the lock key must not be empty".into());
        }

        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text.char_indices().peekable();
        while let Some((at, c)) = rest.next() {
            match c {
                '{' if rest.peek().map(|&(_, c)| c) == Some('{') => {
                    rest.next();
                    literal.push('{');
                }
                '}' if rest.peek().map(|&(_, c)| c) == Some('}') => {
                    rest.next();
                    literal.push('}');
                }
                '}' => error(
                    spans.at(at, at + 1),
                    format!(
                        "unmatched `}}` in key template {text:?}; write `}}}}` for a literal brace"
                    ),
                ),
                '{' => {
                    let Some(end) = closing_brace(&text, at) else {
                        error(
                            spans.at(at, text.len()),
                            format!(
                                "unclosed `{{` in key template {text:?}; write `{{{{` for a literal brace"
                            ),
                        );
                        break;
                    };
                    while rest.next_if(|&(i, _)| i <= end).is_some() {}
                    let span = spans.at(at, end + 1);
                    match placeholder(&text[at + 1..end], names, span) {
                        Ok(value) => {
                            if !literal.is_empty() {
                                parts.push(Part::Text(std::mem::take(&mut literal)));
                            }
                            parts.push(Part::Value(value));
                        }
                        Err(messages) => messages.into_iter().for_each(|m| error(span, m)),
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

impl Template {
    /// The function's arguments (and `self`) the placeholders use.
    pub(crate) fn uses(&self) -> impl Iterator<Item = &str> {
        self.parts
            .iter()
            .flat_map(|part| match part {
                Part::Value(placeholder) => placeholder.uses.as_slice(),
                Part::Text(_) => &[],
            })
            .map(String::as_str)
    }
}

/// Spans of byte ranges of a literal's value.
struct Spans {
    lit: proc_macro2::Literal,
    whole: Span,
    /// Where the value starts in the literal's source (after `"` or `r#"`),
    /// when the source holds the value byte for byte (no escapes).
    offset: Option<usize>,
}

impl Spans {
    fn of(lit: &LitStr, value: &str) -> Spans {
        let token = lit.token();
        let source = token.to_string();
        let offset = source.find('"').map(|quote| quote + 1).filter(|&start| {
            source
                .get(start..)
                .is_some_and(|body| body.starts_with(value) && body[value.len()..].starts_with('"'))
        });
        Spans {
            lit: token,
            whole: lit.span(),
            offset,
        }
    }

    /// The span of the value's bytes `from..to`, or the whole literal's
    /// where the compiler cannot tell.
    fn at(&self, from: usize, to: usize) -> Span {
        self.offset
            .and_then(|offset| self.lit.subspan(offset + from..offset + to))
            .unwrap_or(self.whole)
    }
}

/// The index of the `}` that closes the `{` at `open`: braces nest, and
/// braces inside string and character literals do not count.
fn closing_brace(text: &str, open: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            // `'x'` and `'\n'`; a lone `'` is a lifetime or a label.
            b'\'' => {
                let close = if bytes.get(i + 1) == Some(&b'\\') {
                    text[i + 2..].find('\'').map(|n| i + 2 + n)
                } else {
                    let len = text[i + 1..].chars().next().map_or(0, char::len_utf8);
                    (bytes.get(i + 1 + len) == Some(&b'\'')).then_some(i + 1 + len)
                };
                if let Some(close) = close {
                    i = close;
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Checks one placeholder's content (`inner`, without its braces) and turns
/// it into an expression; `Err` holds every problem found.
fn placeholder(inner: &str, names: &[String], span: Span) -> Result<Placeholder, Vec<String>> {
    let trimmed = inner.trim();
    if trimmed.is_empty() {
        return Err(vec![
            "empty placeholder `{}` in key template: write an expression over the function's \
             arguments, as in `{order_id}`"
                .into(),
        ]);
    }
    let expr: Expr = match syn::parse_str(trimmed) {
        Ok(expr) => expr,
        Err(e) => {
            if let Some(head) = format_spec_head(trimmed) {
                return Err(vec![format!(
                    "format specs are not supported in key templates (`{{{trimmed}}}`): \
                     the value's `Display` is used; write `{{{head}}}` (to pad or format \
                     it otherwise, call `format!` in the placeholder)"
                )]);
            }
            return Err(vec![format!(
                "`{{{trimmed}}}` in key template is not an expression: {e}"
            )]);
        }
    };
    if let Expr::Lit(lit) = &expr {
        if matches!(lit.lit, Lit::Int(_)) {
            return Err(vec![format!(
                "positional placeholder `{{{trimmed}}}` in key template: name an argument instead"
            )]);
        }
    }
    let (uses, unknown) = names_used(&expr, names);
    if !unknown.is_empty() {
        return Err(unknown
            .iter()
            .map(|name| unknown_name(name, names))
            .collect());
    }
    Ok(Placeholder {
        expr: respan(expr.into_token_stream(), span),
        text: format!("{{{trimmed}}}"),
        uses,
        span,
    })
}

/// `order_id` of `order_id:>8`: the part before a format spec's `:` (one
/// colon at the top level, not a path's `::`), if it is an expression.
fn format_spec_head(inner: &str) -> Option<&str> {
    let bytes = inner.as_bytes();
    let mut depth = 0i32;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'(' | b'[' | b'{' | b'<' => depth += 1,
            b')' | b']' | b'}' | b'>' => depth -= 1,
            b':' if depth == 0
                && bytes.get(i + 1) != Some(&b':')
                && (i == 0 || bytes[i - 1] != b':') =>
            {
                let head = inner[..i].trim();
                return syn::parse_str::<Expr>(head).is_ok().then_some(head);
            }
            _ => {}
        }
    }
    None
}

/// The names of `names` (the function's argument bindings) that `expr`, an
/// argument of the attribute such as `manager = ..`, uses.
pub(crate) fn names_in(expr: &Expr, names: &[String]) -> Vec<String> {
    names_used(expr, names).0
}

/// The names of `names` that `expr` uses, and the names it uses that must
/// be arguments but are not: single lowercase names (locals, by Rust's
/// naming) used as values, that are neither in `names` nor bound inside
/// `expr` (closure parameters, `let`s and match arms of blocks in it). A
/// name called as a function (`hash(x)`) is a function's name, and names
/// inside macro calls are left to the compiler. Each list in the order of
/// first use, each name once.
fn names_used(expr: &Expr, names: &[String]) -> (Vec<String>, Vec<String>) {
    let mut finder = Names::default();
    finder.visit_expr_mut(&mut expr.clone());
    let mut seen = HashSet::new();
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for name in finder.used {
        if finder.bound.contains(&name) || !seen.insert(name.clone()) {
            continue;
        }
        if names.contains(&name) {
            known.push(name);
        } else if name == "self" || name.starts_with(|c: char| c.is_lowercase() || c == '_') {
            unknown.push(name);
        }
    }
    (known, unknown)
}

/// The single names an expression uses as values, and those it binds.
#[derive(Default)]
struct Names {
    used: Vec<String>,
    bound: HashSet<String>,
}

impl VisitMut for Names {
    fn visit_expr_path_mut(&mut self, path: &mut syn::ExprPath) {
        if path.qself.is_none() {
            if let Some(ident) = path.path.get_ident() {
                self.used.push(ident.to_string());
            }
        }
        syn::visit_mut::visit_expr_path_mut(self, path);
    }

    fn visit_expr_call_mut(&mut self, call: &mut syn::ExprCall) {
        let is_name = matches!(&*call.func, Expr::Path(p) if p.qself.is_none() && p.path.get_ident().is_some());
        if !is_name {
            self.visit_expr_mut(&mut call.func);
        }
        for arg in call.args.iter_mut() {
            self.visit_expr_mut(arg);
        }
    }

    fn visit_pat_ident_mut(&mut self, pat: &mut syn::PatIdent) {
        self.bound.insert(pat.ident.to_string());
        syn::visit_mut::visit_pat_ident_mut(self, pat);
    }
}

/// The error for a name that is not an argument.
fn unknown_name(name: &str, names: &[String]) -> String {
    let known = if names.is_empty() {
        "the function has no arguments".to_owned()
    } else {
        let list: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
        format!("the function's arguments are {}", list.join(", "))
    };
    if name == "self" {
        return format!("unknown name `self` in key template: the function has no `self`; {known}");
    }
    let hint = crate::diagnostics::closest(name, names.iter().map(String::as_str))
        .map(|n| format!("did you mean `{n}`? "))
        .unwrap_or_default();
    format!("unknown name `{name}` in key template; {hint}{known}")
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
        vec!["order_id".into(), "req".into(), "ids".into(), "self".into()]
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
                Part::Value(v) => format!("value:{}", v.expr),
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
    fn placeholders_are_expressions() {
        let t = parse("{req.get_ref().order_id}/{ids[0]}/{req.name.to_lowercase()}").unwrap();
        assert_eq!(
            shape(&t),
            [
                "value:req . get_ref () . order_id",
                "text:/",
                "value:ids [0]",
                "text:/",
                "value:req . name . to_lowercase ()",
            ]
        );
        let t = parse("{ ids.iter().map(|i| { i * 2 }).sum::<u32>() }").unwrap();
        assert_eq!(t.parts.len(), 1);
        let Part::Value(v) = &t.parts[0] else {
            panic!()
        };
        assert_eq!(v.text, "{ids.iter().map(|i| { i * 2 }).sum::<u32>()}");
        // Braces in strings and chars do not close a placeholder.
        let t = parse(r#"{req.name.replace("}", "{")}-{req.c == '}'}"#).unwrap();
        assert_eq!(shape(&t).len(), 3, "{:?}", shape(&t));
        // Paths, constants, functions and closure parameters are not arguments.
        parse("{std::process::id()}{MAX}{hash(order_id)}{ids.iter().map(|x| x + 1).count()}")
            .unwrap();
        parse("{match req.id { Some(v) => v, None => 0 }}").unwrap();
        parse("{format!(\"{:>8}\", order_id)}").unwrap();
        let t = parse("{req.x(order_id, |r| r)}{ids[order_id]}{MAX}").unwrap();
        assert_eq!(
            t.uses().collect::<Vec<_>>(),
            ["req", "order_id", "ids", "order_id"]
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
        let err = parse("{nope}:{}:{0}:{order_id:>5}:{a+}:{req.x(oder_id, y)}:}").unwrap_err();
        assert!(err.contains("unknown name `nope`"), "{err}");
        assert!(err.contains("`order_id`, `req`, `ids`, `self`"), "{err}");
        assert!(err.contains("empty placeholder"), "{err}");
        assert!(err.contains("positional placeholder `{0}`"), "{err}");
        assert!(err.contains("format specs are not supported"), "{err}");
        assert!(
            err.contains("`{a+}` in key template is not an expression"),
            "{err}"
        );
        assert!(
            err.contains("unknown name `oder_id` in key template; did you mean `order_id`?"),
            "{err}"
        );
        assert!(err.contains("unknown name `y`"), "{err}");
        assert!(err.contains("unmatched `}`"), "{err}");
    }

    #[test]
    fn rejects_empty_and_unclosed() {
        assert!(parse("").unwrap_err().contains("must not be empty"));
        assert!(parse("a{order_id").unwrap_err().contains("unclosed `{`"));
        assert!(parse("a{f(\"}\")").unwrap_err().contains("unclosed `{`"));
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
