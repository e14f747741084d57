//! How a function is asynchronous (an `async fn`, or one `#[async_trait]`
//! rewrote) and what its future yields; the names its arguments bind.

use quote::quote;
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{
    Block, Expr, ExprAsync, FnArg, GenericArgument, ItemFn, Pat, PathArguments, ReturnType,
    Signature, Stmt, Type, TypeParamBound,
};

use crate::diagnostics::Errors;

/// How the function is asynchronous.
pub(crate) enum Shape {
    /// `async fn` returning `output`.
    AsyncFn { output: Type },
    /// A function rewritten by `#[async_trait]`: its last statement is
    /// `Box::pin(async move { .. })`, whose future yields `output`.
    AsyncTrait { output: Type },
}

impl Shape {
    /// `skips`: the function has `skip_if_busy`, so it may return `()` or
    /// `Option<T>` too (the type checker holds it to `SkipResult`).
    pub(crate) fn of(func: &ItemFn, skips: bool, errors: &mut Errors) -> Option<Shape> {
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

pub(crate) fn async_trait_body_mut(block: &mut Block) -> Option<&mut ExprAsync> {
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
pub(crate) fn binding_names(sig: &Signature) -> Vec<String> {
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
pub(crate) struct InferImplTrait;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
