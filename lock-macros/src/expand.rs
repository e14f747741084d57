//! Generating the locked function.
//!
//! The function keeps its signature, attributes and visibility; its body is
//! moved, in place, into an `async move` block that runs under the lock:
//!
//! ```text
//! async fn settle(&self, order_id: u64) -> Result<Receipt, AppError> {
//!     let key = /* "order:{order_id}" rendered; with `keys`, [each rendered] */;
//!     let manager = /* Some(self.locks.clone()) or None for the default */;
//!     let permits = /* only for `permits = <expression>`: evaluated per call */;
//!     ::distlock::__private::locked::<Result<Receipt, AppError>, _>(
//!         spec, // the settings, checked in a const; `.permits(n)`, `.read()`, `.write()`
//!         manager, key, async move { /* the original body */ },
//!     ).await
//! }
//! ```
//!
//! Because the body stays inside the function, `self`, generics and `where`
//! clauses need nothing special. Functions already rewritten by
//! `#[async_trait]` (a plain `fn` returning `Box::pin(async move { .. })`) get
//! the same treatment inside their `Box::pin`.

mod render; // the key's rendering, each placeholder through a trait of its own

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{ItemFn, Type};

use crate::attr::{Args, OnLost, Permits, RawArgs, Take, Target};
use crate::diagnostics::Errors;
use crate::shape::{async_trait_body_mut, binding_names, InferImplTrait, Shape};
use crate::template::{names_in, Template};
use render::render_key;

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
        (Ok(()), Some(shape), Some(args)) => generate(func, shape, &args, &names),
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

fn generate(mut func: ItemFn, shape: Shape, args: &Args, names: &[String]) -> TokenStream {
    let key_var = format_ident!("__distlock_key", span = Span::mixed_site());
    let manager_var = format_ident!("__distlock_manager", span = Span::mixed_site());
    let permits_var = format_ident!("__distlock_permits", span = Span::mixed_site());
    // `::distlock`, or the `crate = "..."` path, spanned at `span` so that
    // type errors point where they did before.
    let krate_at = |span: Span| match &args.krate {
        Some(path) => quote!(#path),
        None => quote_spanned!(span=> ::distlock),
    };
    let krate = krate_at(Span::call_site());
    let render = |key: &Template| render_key(key, &krate_at(key.lit.span()));
    let key = match &args.target {
        Target::One { key, .. } => render(key),
        // An array of the rendered keys, each name a lock of the multi-lock.
        Target::All(keys) => {
            let keys = keys.iter().map(render);
            quote!([#(#keys),*])
        }
    };
    // A number of permits known only at run time: evaluated at each call,
    // like `manager`, and checked by the call (`InvalidOptions`).
    let permits = match &args.target {
        Target::One {
            take: Take::Permits(Permits::Expr(expr)),
            ..
        } => Some(quote_spanned! {expr.span()=>
            let #permits_var: u32 = #expr;
        }),
        _ => None,
    };
    let manager = match &args.manager {
        Some(expr) => {
            let krate = krate_at(expr.span());
            quote_spanned! {expr.span()=>
                #krate::__private::manager(&(#expr))
            }
        }
        None => quote!(#krate::__private::use_default_manager()),
    };
    let mut spec = spec(args, &func.sig.ident.to_string(), &krate);
    if permits.is_some() {
        spec = quote!(#spec.permits(#permits_var));
    }
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
            #permits
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
            quiet_attribute_only_bindings(inner, &attribute_uses(args, names));
            let original = inner.clone();
            let body = run(&output, quote!(#original));
            *inner = syn::parse_quote!(async move { #body });
            quote!(#func)
        }
    }
}

/// The function's arguments (and `self`) that the attribute's expressions
/// use: the key templates' placeholders, `permits` and `manager`.
fn attribute_uses(args: &Args, names: &[String]) -> Vec<String> {
    let mut used: Vec<String> = args
        .target
        .templates()
        .iter()
        .flat_map(Template::uses)
        .map(str::to_owned)
        .collect();
    if let Target::One {
        take: Take::Permits(Permits::Expr(expr)),
        ..
    } = &args.target
    {
        used.extend(names_in(expr, names));
    }
    if let Some(expr) = &args.manager {
        used.extend(names_in(expr, names));
    }
    used
}

/// `#[async_trait]` moves each argument into its body (`let request =
/// request;`); the key, `permits` and `manager` are evaluated outside that
/// body, so an argument that only they use would be reported unused there.
/// Such bindings, of arguments in `used`, are allowed to be.
fn quiet_attribute_only_bindings(body: &mut syn::ExprAsync, used: &[String]) {
    for stmt in &mut body.block.stmts {
        let syn::Stmt::Local(local) = stmt else {
            continue;
        };
        let (syn::Pat::Ident(pat), Some(init)) = (&local.pat, &local.init) else {
            continue;
        };
        let moved = matches!(&*init.expr, syn::Expr::Path(p) if p.path.is_ident(&pat.ident));
        if moved && used.iter().any(|name| pat.ident == name) {
            local
                .attrs
                .push(syn::parse_quote!(#[allow(unused_variables)]));
        }
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
    // Known at compile time, the kind goes into the `const` and is checked
    // there with the core's own rules; a run-time `permits` is added after.
    if let Target::One { take, .. } = &args.target {
        match take {
            Take::Lock | Take::Permits(Permits::Expr(_)) => {}
            Take::Permits(Permits::Literal(n)) => spec.extend(quote!(.permits(#n))),
            Take::Read => spec.extend(quote!(.read())),
            Take::Write => spec.extend(quote!(.write())),
        }
    }
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
            out.contains("let __distlock_key = __distlock_key . text (\"order:\") ;"),
            "{out}"
        );
        assert!(
            out.contains("DistlockKeyPlaceholder1 :: __distlock_render (& (id) , __distlock_key)"),
            "{out}"
        );
        assert!(
            out.contains("the key placeholder `{{id}}` has type `{Self}`"),
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
    fn kinds_reach_the_spec_and_the_key() {
        let f = quote!(
            async fn f(host: &str, n: u32, from: u32, to: u32) -> Result<(), E> {
                Ok(())
            }
        );
        let permits = expand(quote!(key = "crawl:{host}", permits = 3), f.clone());
        assert!(
            permits.contains(". permits (3u32) . renew_every"),
            "{permits}"
        );
        // Known at run time only: evaluated at each call, after the const.
        let runtime = expand(quote!(key = "crawl:{host}", permits = n + 1), f.clone());
        assert!(
            runtime.contains("let __distlock_permits : u32 = n + 1 ;"),
            "{runtime}"
        );
        assert!(
            runtime.contains("SPEC } . permits (__distlock_permits)"),
            "{runtime}"
        );
        assert!(!runtime.contains(". permits (n"), "{runtime}");
        let read = expand(quote!(key = "doc:{host}", read), f.clone());
        assert!(read.contains(". read () . renew_every"), "{read}");
        let write = expand(quote!(key = "doc:{host}", write = true), f.clone());
        assert!(write.contains(". write () . renew_every"), "{write}");
        let lock = expand(quote!(key = "doc:{host}", read = false), f.clone());
        assert!(!lock.contains(". read ()"), "{lock}");
        let keys = expand(quote!(keys = ["acct:{from}", "acct:{to}"]), f);
        assert!(keys.contains("let __distlock_key = [{"), "{keys}");
        assert_eq!(
            keys.matches("__private :: Key :: new ()").count(),
            2,
            "{keys}"
        );
        assert!(
            !keys.contains(". permits") && !keys.contains(". read"),
            "{keys}"
        );
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
            quote!(key = "job:{id}", permits = limit, manager = locks),
            quote! {
                fn run<'life0, 'async_trait>(&'life0 self, id: u32, limit: u32, locks: M, other: u8)
                    -> ::core::pin::Pin<Box<dyn ::core::future::Future<Output = Result<(), E>> + ::core::marker::Send + 'async_trait>>
                where 'life0: 'async_trait, Self: 'async_trait
                {
                    Box::pin(async move { let __self = self; let id = id; let limit = limit; let locks = locks; let other = other; let __ret: Result<(), E> = { Ok(()) }; __ret })
                }
            },
        );
        assert!(
            out.contains("Box :: pin (async move { let __distlock_key"),
            "{out}"
        );
        assert!(out.contains("locked :: < Result < () , E > , _ >"), "{out}");
        assert!(out.contains("async move { let __self = self ;"), "{out}");
        // `id` is the key's: its move into the body is not "unused"; nor are
        // the moves of arguments that only `permits` or `manager` use.
        assert!(
            out.contains("# [allow (unused_variables)] let id = id ;"),
            "{out}"
        );
        for name in ["limit", "locks"] {
            let quiet = format!("# [allow (unused_variables)] let {name} = {name} ;");
            assert!(out.contains(&quiet), "{out}");
        }
        for name in ["__self", "other"] {
            let quiet = format!("# [allow (unused_variables)] let {name}");
            assert!(!out.contains(&quiet), "{out}");
        }
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
