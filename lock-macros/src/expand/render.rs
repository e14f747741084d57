//! The expression that renders a key template into a lock name at each
//! call ([`render_key`]).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};

use crate::template::{Part, Placeholder, Template};

/// An expression building the key from the template. Each placeholder's
/// value is rendered through a trait of its own whose
/// `#[diagnostic::on_unimplemented]` names the placeholder, so a value
/// without `Display` is an error about that placeholder (at its span), not
/// about the whole key.
pub(super) fn render_key(template: &Template, krate: &TokenStream) -> TokenStream {
    let span = template.lit.span();
    let key = format_ident!("__distlock_key", span = Span::mixed_site());
    let mut items = TokenStream::new();
    let mut steps = TokenStream::new();
    let mut placeholders = 0;
    for part in &template.parts {
        match part {
            Part::Text(text) => steps.extend(quote_spanned! {span=>
                let #key = #key.text(#text);
            }),
            Part::Value(placeholder) => {
                placeholders += 1;
                let (trait_def, call) = render_placeholder(placeholders, placeholder, krate, &key);
                items.extend(trait_def);
                steps.extend(call);
            }
        }
    }
    quote_spanned! {span=>
        {
            #items
            let #key = #krate::__private::Key::new();
            #steps
            #key.finish()
        }
    }
}

/// The trait that renders the `n`th placeholder (its definition; the
/// compiler names it in a note, "required for `Option<u32>` to implement
/// `DistlockKeyPlaceholder1`") and the step that renders it into `key`.
fn render_placeholder(
    n: usize,
    placeholder: &Placeholder,
    krate: &TokenStream,
    key: &syn::Ident,
) -> (TokenStream, TokenStream) {
    let text = placeholder.text.replace('{', "{{").replace('}', "}}");
    let message = format!(
        "the key placeholder `{text}` has type `{{Self}}`, which does not implement `Display`"
    );
    let label = format!("`{text}` is not `Display`");
    let note = "each `{...}` of a key is rendered with `Display`: write an expression whose \
                value implements it (an `Option`, for one, does not: unwrap it or choose a text \
                for `None` in the placeholder)";
    let name = format!("DistlockKeyPlaceholder{n}");
    let def_name = syn::Ident::new(&name, Span::call_site());
    let use_name = syn::Ident::new(&name, placeholder.span);
    let expr = &placeholder.expr;
    let trait_def = quote! {
        #[diagnostic::on_unimplemented(message = #message, label = #label, note = #note)]
        trait #def_name {
            fn __distlock_render(&self, key: #krate::__private::Key) -> #krate::__private::Key;
        }
        impl<T: #krate::__private::Display + ?Sized> #def_name for T {
            fn __distlock_render(&self, key: #krate::__private::Key) -> #krate::__private::Key {
                key.value(self)
            }
        }
    };
    let call = quote_spanned! {placeholder.span=>
        let #key = #use_name::__distlock_render(&(#expr), #key);
    };
    (trait_def, call)
}
