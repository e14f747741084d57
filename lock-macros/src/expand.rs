//! Generating the locked function.
//!
//! The function keeps its signature, attributes and visibility; its body is
//! moved, in place, into an `async move` block that runs under the lock:
//!
//! ```text
//! async fn settle(&self, order_id: u64) -> Result<Receipt, AppError> {
//!     let key = /* "order:{order_id}" rendered */;
//!     let manager = /* Some(self.locks.clone()) or None for the default */;
//!     ::distlock::__private::locked::<Result<Receipt, AppError>, _>(
//!         spec, manager, key, async move { /* the original body */ },
//!     ).await
//! }
//! ```
//!
//! Because the body stays inside the function, `self`, generics and `where`
//! clauses need nothing special. Functions already rewritten by
//! `#[async_trait]` (a plain `fn` returning `Box::pin(async move { .. })`) get
//! the same treatment inside their `Box::pin`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{
    Block, Expr, ExprAsync, FnArg, GenericArgument, ItemFn, Pat, PathArguments, ReturnType,
    Signature, Stmt, Type, TypeParamBound,
};

use crate::attr::{Args, Errors, OnLost, RawArgs};
use crate::template::{Part, Template};

/// Expands `#[distributed_lock(args)] item`. On errors, the function is
/// emitted after them as it was (but quiet about arguments only the key
/// used), so that its callers do not add errors of their own.
pub(crate) fn distributed_lock(args: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(func) => func,
        Err(_) => {
            let error = syn::Error::new(
                Span::call_site(),
                "#[distributed_lock] goes on an `async fn` with a body",
            );
            let error = error.to_compile_error();
            return quote!(#error #item);
        }
    };
    let mut errors = Errors::default();
    let raw = syn::parse2::<RawArgs>(args)
        .map_err(|e| errors.push(e))
        .ok();
    let skips = raw.as_ref().is_some_and(RawArgs::skips);
    let shape = Shape::of(&func, skips, &mut errors);
    let names = binding_names(&func.sig);
    let args = raw.and_then(|raw| Args::check(raw, &names, &mut errors));
    match (errors.finish(), shape, args) {
        (Ok(()), Some(shape), Some(args)) => generate(func, shape, &args),
        (Err(e), ..) => {
            let e = e.to_compile_error();
            let mut func = func;
            func.attrs
                .push(syn::parse_quote!(#[allow(unused_variables)]));
            quote!(#e #func)
        }
        // Unreachable: no errors means both are known.
        _ => item,
    }
}

/// How the function is asynchronous.
enum Shape {
    /// `async fn` returning `output`.
    AsyncFn { output: Type },
    /// A function rewritten by `#[async_trait]`: its last statement is
    /// `Box::pin(async move { .. })`, whose future yields `output`.
    AsyncTrait { output: Type },
}

impl Shape {
    /// `skips`: the function has `skip_if_busy`, so it may return `()` or
    /// `Option<T>` too (the type checker holds it to `SkipResult`).
    fn of(func: &ItemFn, skips: bool, errors: &mut Errors) -> Option<Shape> {
        let sig = &func.sig;
        if sig.asyncness.is_some() {
            let output = if skips {
                match &sig.output {
                    ReturnType::Type(_, ty) => (**ty).clone(),
                    ReturnType::Default => syn::parse_quote!(()),
                }
            } else {
                result_output(sig, errors)?
            };
            return Some(Shape::AsyncFn { output });
        }
        if async_trait_body(&func.block).is_some() {
            if let Some(output) = future_output(&sig.output) {
                if !skips && !may_be_result(&output) {
                    errors.spanned(&output, not_result(&output));
                    return None;
                }
                return Some(Shape::AsyncTrait { output });
            }
        }
        errors.at(
            sig.fn_token.span(),
            format!(
                "#[distributed_lock] needs an `async fn`: the lock is held across the \
                 function's awaits; write `async fn {}`",
                sig.ident
            ),
        );
        // The return type is worth checking too.
        let _ = result_output(sig, errors);
        None
    }
}

/// The return type of an `async fn`, which must look like `Result<T, E>`.
fn result_output(sig: &Signature, errors: &mut Errors) -> Option<Type> {
    match &sig.output {
        ReturnType::Type(_, ty) if may_be_result(ty) => Some((**ty).clone()),
        ReturnType::Type(_, ty) => {
            errors.spanned(ty, not_result(ty));
            None
        }
        ReturnType::Default => {
            errors.at(
                sig.ident.span(),
                format!(
                    "`{}` returns `()`, but #[distributed_lock] needs it to return `Result<T, E>` \
                     with `E: From<distlock::LockError>`, to report a lock it could not take \
                     or lost (a `skip_if_busy` function may return `()`)",
                    sig.ident
                ),
            );
            None
        }
    }
}

fn not_result(ty: &Type) -> String {
    format!(
        "#[distributed_lock] needs the function to return `Result<T, E>` with \
         `E: From<distlock::LockError>`, to report a lock it could not take or lost; \
         found `{}`",
        quote!(#ty)
            .to_string()
            .replace(" < ", "<")
            .replace(" >", ">")
    )
}

/// A type that may name `Result<T, E>`: any path (`Result<..>`,
/// `io::Result<..>`, an alias such as `Outcome<T>`), since an alias can have
/// any name. The type checker then holds it to `Result<T, E>` with
/// `E: From<LockError>`; tuples, references, `impl Trait` and the like cannot
/// be one and are refused here.
fn may_be_result(ty: &Type) -> bool {
    /// Names no one gives a `Result` alias: refused with the clearer message.
    const NOT_RESULTS: &[&str] = &[
        "Option", "Vec", "String", "Box", "Arc", "Rc", "Cow", "HashMap", "BTreeMap", "bool",
        "char", "str", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64",
        "i128", "isize", "f32", "f64",
    ];
    match ty {
        Type::Path(p) => !p
            .path
            .segments
            .last()
            .is_some_and(|s| NOT_RESULTS.contains(&s.ident.to_string().as_str())),
        Type::Macro(_) => true,
        Type::Group(g) => may_be_result(&g.elem),
        Type::Paren(p) => may_be_result(&p.elem),
        _ => false,
    }
}

/// The `Box::pin(async move { .. })` an `#[async_trait]` method ends with.
fn async_trait_body(block: &Block) -> Option<&ExprAsync> {
    let Some(Stmt::Expr(Expr::Call(call), None)) = block.stmts.last() else {
        return None;
    };
    let Expr::Path(func) = &*call.func else {
        return None;
    };
    if func.path.segments.last()?.ident != "pin" || call.args.len() != 1 {
        return None;
    }
    match call.args.first()? {
        Expr::Async(body) if body.capture.is_some() => Some(body),
        _ => None,
    }
}

fn async_trait_body_mut(block: &mut Block) -> Option<&mut ExprAsync> {
    let Some(Stmt::Expr(Expr::Call(call), None)) = block.stmts.last_mut() else {
        return None;
    };
    match call.args.first_mut()? {
        Expr::Async(body) => Some(body),
        _ => None,
    }
}

/// `T` in `Pin<Box<dyn Future<Output = T> + Send + 'a>>`.
fn future_output(output: &ReturnType) -> Option<Type> {
    fn find(ty: &Type) -> Option<Type> {
        match ty {
            Type::Path(p) => p.path.segments.iter().find_map(|seg| match &seg.arguments {
                PathArguments::AngleBracketed(args) => args.args.iter().find_map(|arg| match arg {
                    GenericArgument::AssocType(assoc) if assoc.ident == "Output" => {
                        Some(assoc.ty.clone())
                    }
                    GenericArgument::Type(inner) => find(inner),
                    _ => None,
                }),
                _ => None,
            }),
            Type::TraitObject(obj) => obj.bounds.iter().find_map(|b| match b {
                TypeParamBound::Trait(t) => find(&Type::Path(syn::TypePath {
                    qself: None,
                    path: t.path.clone(),
                })),
                _ => None,
            }),
            Type::Group(g) => find(&g.elem),
            Type::Paren(p) => find(&p.elem),
            _ => None,
        }
    }
    match output {
        ReturnType::Type(_, ty) => find(ty),
        ReturnType::Default => None,
    }
}

/// The names a key template may start from: `self` and every binding in the
/// argument patterns.
fn binding_names(sig: &Signature) -> Vec<String> {
    fn walk(pat: &Pat, out: &mut Vec<String>) {
        match pat {
            Pat::Ident(p) => {
                out.push(p.ident.to_string());
                if let Some((_, sub)) = &p.subpat {
                    walk(sub, out);
                }
            }
            Pat::Tuple(t) => t.elems.iter().for_each(|p| walk(p, out)),
            Pat::TupleStruct(t) => t.elems.iter().for_each(|p| walk(p, out)),
            Pat::Struct(s) => s.fields.iter().for_each(|f| walk(&f.pat, out)),
            Pat::Slice(s) => s.elems.iter().for_each(|p| walk(p, out)),
            Pat::Reference(r) => walk(&r.pat, out),
            Pat::Paren(p) => walk(&p.pat, out),
            Pat::Type(t) => walk(&t.pat, out),
            _ => {}
        }
    }
    let mut names = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(_) => names.push("self".to_owned()),
            FnArg::Typed(t) => walk(&t.pat, &mut names),
        }
    }
    names
}

/// `impl Trait` (unnameable in an expression) replaced by `_`.
struct InferImplTrait;

impl VisitMut for InferImplTrait {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::ImplTrait(it) = ty {
            *ty = Type::Infer(syn::TypeInfer {
                underscore_token: syn::Token![_](it.span()),
            });
            return;
        }
        syn::visit_mut::visit_type_mut(self, ty);
    }
}

fn generate(mut func: ItemFn, shape: Shape, args: &Args) -> TokenStream {
    let key_var = format_ident!("__distlock_key", span = Span::mixed_site());
    let manager_var = format_ident!("__distlock_manager", span = Span::mixed_site());
    // `::distlock`, or the `crate = "..."` path, spanned at `span` so that
    // type errors point where they did before.
    let krate_at = |span: Span| match &args.krate {
        Some(path) => quote!(#path),
        None => quote_spanned!(span=> ::distlock),
    };
    let krate = krate_at(Span::call_site());
    let key = render_key(&args.key, &krate_at(args.key.lit.span()));
    let manager = match &args.manager {
        Some(expr) => {
            let krate = krate_at(expr.span());
            quote_spanned! {expr.span()=>
                #krate::__private::manager(&(#expr))
            }
        }
        None => quote!(#krate::__private::use_default_manager()),
    };
    let spec = spec(args, &func.sig.ident.to_string(), &krate);
    let entry = if args.skip_if_busy {
        quote!(locked_or_skip)
    } else {
        quote!(locked)
    };
    let run = |output: &Type, body: TokenStream| {
        let mut output = output.clone();
        InferImplTrait.visit_type_mut(&mut output);
        // Spanned at the return type: an `E` without `From<LockError>` is
        // reported there.
        let krate = krate_at(output.span());
        let call = quote_spanned! {output.span()=>
            #krate::__private::#entry::<#output, _>(#spec, #manager_var, #key_var, #body).await
        };
        quote! {
            let #key_var = #key;
            let #manager_var = #manager;
            #call
        }
    };
    match shape {
        Shape::AsyncFn { output } => {
            let block = &func.block;
            let body = run(&output, quote!(async move #block));
            let ItemFn {
                attrs, vis, sig, ..
            } = &func;
            // Inner attributes (`#![allow(..)]` atop the body) apply to the
            // whole function: they become outer attributes of the function,
            // since the body's new home, an `async` block, cannot carry them.
            let attrs = attrs.iter().map(|attr| {
                let mut attr = attr.clone();
                attr.style = syn::AttrStyle::Outer;
                attr
            });
            quote! {
                #(#attrs)*
                #vis #sig {
                    #body
                }
            }
        }
        Shape::AsyncTrait { output } => {
            let inner = async_trait_body_mut(&mut func.block).expect("checked by Shape::of");
            let original = inner.clone();
            let body = run(&output, quote!(#original));
            *inner = syn::parse_quote!(async move { #body });
            quote!(#func)
        }
    }
}

/// An expression building the key from the template.
fn render_key(template: &Template, krate: &TokenStream) -> TokenStream {
    let span = template.lit.span();
    let pieces = template.parts.iter().map(|part| match part {
        Part::Text(text) => quote_spanned!(span=> .text(#text)),
        Part::Value(value) => quote_spanned!(span=> .value(&(#value))),
    });
    quote_spanned! {span=>
        #krate::__private::Key::new() #(#pieces)* .finish()
    }
}

/// The call's settings, as an expression of type `__private::Spec`.
fn spec(args: &Args, function: &str, krate: &TokenStream) -> TokenStream {
    let duration = |d: std::time::Duration| {
        let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
        quote!(#krate::__private::Duration::new(#secs, #nanos))
    };
    let ttl = duration(args.ttl);
    let mut spec = quote!(#krate::__private::Spec::new(#function, #ttl));
    if args.auto_renew {
        let every = duration(args.renew_interval);
        spec.extend(quote!(.renew_every(#every)));
    } else {
        spec.extend(quote!(.no_auto_renew()));
    }
    match args.wait {
        Some(wait) => {
            let wait = duration(wait);
            spec.extend(quote!(.wait(#wait)));
        }
        None => spec.extend(quote!(.wait_forever())),
    }
    if let Some(at_least) = args.hold_at_least {
        let at_least = duration(at_least);
        spec.extend(quote!(.hold_at_least(#at_least)));
    }
    if let Some(at_most) = args.hold_at_most {
        let at_most = duration(at_most);
        spec.extend(quote!(.hold_at_most(#at_most)));
    }
    if let Some(pause) = args.retry_interval {
        let pause = duration(pause);
        spec.extend(quote!(.retry_interval(#pause)));
    }
    if let Some(n) = args.max_retries {
        spec.extend(quote!(.max_retries(#n)));
    }
    if args.on_lost == OnLost::Continue {
        spec.extend(quote!(.continue_when_lost()));
    }
    // Evaluated at compile time with the runtime's own rules (`Spec::checked`):
    // settings that every call would refuse with `InvalidOptions` do not compile.
    let span = args.durations_span;
    quote_spanned! {span=>
        {
            const SPEC: #krate::__private::Spec = #spec.checked();
            SPEC
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(args: TokenStream, item: TokenStream) -> String {
        distributed_lock(args, item).to_string()
    }

    #[test]
    fn keeps_attributes_docs_and_signature() {
        let out = expand(
            quote!(key = "order:{id}", ttl = "5s"),
            quote! {
                /// Settles an order.
                #[must_use]
                #[cfg_attr(test, allow(dead_code))]
                pub(crate) async fn settle<T: Clone>(&self, id: T) -> Result<u32, E> where T: Send { Ok(1) }
            },
        );
        assert!(out.contains("# [doc = r\" Settles an order.\"]"), "{out}");
        assert!(out.contains("# [must_use]"), "{out}");
        assert!(
            out.contains("# [cfg_attr (test , allow (dead_code))]"),
            "{out}"
        );
        assert!(
            out.contains("pub (crate) async fn settle < T : Clone > (& self , id : T) -> Result < u32 , E > where T : Send"),
            "{out}"
        );
        assert!(
            out.contains(". text (\"order:\") . value (& (id))"),
            "{out}"
        );
        assert!(
            out.contains("locked :: < Result < u32 , E > , _ >"),
            "{out}"
        );
        assert!(out.contains("async move { Ok (1) }"), "{out}");
        assert!(out.contains("use_default_manager ()"), "{out}");
    }

    #[test]
    fn names_only_distlock_paths() {
        let out = expand(
            quote!(
                key = "k",
                manager = self.locks,
                wait = "1s",
                on_lost = "continue"
            ),
            quote!(
                async fn f(&self) -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        // Every absolute path (`::` not after a path segment) starts at ::distlock.
        let tokens: Vec<&str> = out.split_whitespace().collect();
        let mut absolute = 0;
        for (i, pair) in tokens.windows(2).enumerate() {
            let after_segment = i > 0 && {
                let prev = tokens[i - 1];
                prev.chars().all(|c| c.is_alphanumeric() || c == '_') || prev == ">"
            };
            let glued = pair[0].len() > 2 && pair[0].ends_with("::"); // `(::`
            if (pair[0] == "::" && !after_segment) || glued {
                absolute += 1;
                assert_eq!(pair[1], "distlock", "at token {i} of {out}");
            }
        }
        assert!(absolute >= 5, "{absolute} in {out}");
        assert!(out.contains("manager (& (self . locks))"), "{out}");
        assert!(out.contains(". wait ("), "{out}");
        assert!(out.contains(". continue_when_lost ()"), "{out}");
    }

    #[test]
    fn impl_trait_in_the_return_type_is_inferred() {
        let out = expand(
            quote!(key = "k"),
            quote!(
                async fn f() -> Result<impl Display, E> {
                    Ok(1)
                }
            ),
        );
        assert!(out.contains("locked :: < Result < _ , E > , _ >"), "{out}");
    }

    #[test]
    fn rewrites_inside_async_trait_box_pin() {
        let out = expand(
            quote!(key = "job:{id}"),
            quote! {
                fn run<'life0, 'async_trait>(&'life0 self, id: u32)
                    -> ::core::pin::Pin<Box<dyn ::core::future::Future<Output = Result<(), E>> + ::core::marker::Send + 'async_trait>>
                where 'life0: 'async_trait, Self: 'async_trait
                {
                    Box::pin(async move { let __self = self; let __ret: Result<(), E> = { Ok(()) }; __ret })
                }
            },
        );
        assert!(
            out.contains("Box :: pin (async move { let __distlock_key"),
            "{out}"
        );
        assert!(out.contains("locked :: < Result < () , E > , _ >"), "{out}");
        assert!(out.contains("async move { let __self = self ;"), "{out}");
    }

    #[test]
    fn errors_keep_the_item() {
        let out = expand(
            quote!(ttl = "1s"),
            quote!(
                async fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("missing `key"), "{out}");
        assert!(
            out.contains(
                "# [allow (unused_variables)] async fn f () -> Result < () , E > { Ok (()) }"
            ),
            "{out}"
        );
    }

    #[test]
    fn collects_function_and_argument_errors() {
        let out = expand(
            quote!(key = "{x}", bogus = 1),
            quote!(
                fn f(y: u8) -> u32 {
                    (1, y)
                }
            ),
        );
        for needle in [
            "unknown name `x`",
            "unknown argument `bogus`",
            "needs an `async fn`",
            "found `u32`",
        ] {
            assert!(out.contains(needle), "missing {needle:?} in {out}");
        }
    }

    #[test]
    fn result_like_types() {
        for ok in [
            quote!(Result<(), E>),
            quote!(std::io::Result<()>),
            quote!(anyhow::Result<u8>),
            quote!(AppResult<u8>),
            quote!(Outcome<u8>), // an alias need not end in `Result`
        ] {
            assert!(may_be_result(&syn::parse2(ok.clone()).unwrap()), "{ok}");
        }
        for bad in [
            quote!(u32),
            quote!(Option<u8>),
            quote!(impl Future),
            quote!(()),
            quote!((u8, u8)),
            quote!(&'static str),
        ] {
            assert!(!may_be_result(&syn::parse2(bad.clone()).unwrap()), "{bad}");
        }
    }

    #[test]
    fn inner_attributes_become_outer() {
        let out = expand(
            quote!(key = "k"),
            quote!(
                async fn f() -> Result<(), E> {
                    #![allow(unused_mut)]
                    let mut x = 1;
                    Ok(())
                }
            ),
        );
        assert!(
            out.starts_with("# [allow (unused_mut)] async fn f"),
            "{out}"
        );
        assert!(!out.contains("# !"), "{out}");
    }

    #[test]
    fn crate_path_and_scheduling() {
        let out = expand(
            quote!(
                key = "job",
                crate = "kit::distlock",
                skip_if_busy,
                hold_at_least = "2s",
                hold_at_most = "1m"
            ),
            quote!(
                async fn job() {}
            ),
        );
        assert_eq!(
            out.matches("distlock ::").count(),
            out.matches("kit :: distlock ::").count(),
            "{out}"
        );
        assert!(
            out.contains("kit :: distlock :: __private :: locked_or_skip :: < () , _ >"),
            "{out}"
        );
        assert!(out.contains(". hold_at_least ("), "{out}");
        assert!(out.contains(". hold_at_most ("), "{out}");
    }
}
