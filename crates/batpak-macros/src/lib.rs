//! `#[derive(TypedEvent)]`: implements `batpak::event::TypedEvent` for a
//! type from its `#[batpak(...)]` attribute.
//!
//! ```ignore
//! #[derive(Serialize, Deserialize, TypedEvent)]
//! #[batpak(category = 2, type_id = 1, version = 3)]
//! struct OrderPlaced { sku: String, qty: u32 }
//! ```
//!
//! Keys: either `kind = <expr>` (any constant expression of type
//! `EventKind`) or `category = <u8>, type_id = <u16>` (for
//! `EventKind::custom`); `version = <u16>` (default 1); `name = "<str>"`
//! (default: the type's name). This crate only generates code: it owns no
//! rules of its own (the trait's documentation has them), and refers to
//! batpak by the path `::batpak`.

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, DeriveInput, Expr, LitInt, LitStr};

/// Derive `batpak::event::TypedEvent`; see the crate documentation.
#[proc_macro_derive(TypedEvent, attributes(batpak))]
pub fn derive_typed_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let mut kind: Option<Expr> = None;
    let mut category: Option<LitInt> = None;
    let mut type_id: Option<LitInt> = None;
    let mut version: Option<LitInt> = None;
    let mut name: Option<LitStr> = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("batpak")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("kind") {
                kind = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("category") {
                category = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("type_id") {
                type_id = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("version") {
                let v: LitInt = meta.value()?.parse()?;
                if v.base10_parse::<u16>()? == 0 {
                    return Err(meta.error("version starts at 1"));
                }
                version = Some(v);
            } else if meta.path.is_ident("name") {
                name = Some(meta.value()?.parse()?);
            } else {
                return Err(meta.error("expected kind, category, type_id, version or name"));
            }
            Ok(())
        })?;
    }
    let kind = match (kind, category, type_id) {
        (Some(k), None, None) => quote!(#k),
        (None, Some(c), Some(t)) => {
            c.base10_parse::<u8>()?;
            t.base10_parse::<u16>()?;
            quote!(::batpak::event::EventKind::custom(#c, #t))
        }
        _ => {
            return Err(syn::Error::new_spanned(
                &input.ident,
                "#[derive(TypedEvent)] needs #[batpak(kind = ...)] or #[batpak(category = .., type_id = ..)]",
            ))
        }
    };
    let version = version.map_or_else(|| quote!(1), |v| quote!(#v));
    let ident = &input.ident;
    let name = name.map_or_else(|| ident.to_string(), |n| n.value());
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::batpak::event::TypedEvent for #ident #ty_generics #where_clause {
            const KIND: ::batpak::event::EventKind = #kind;
            const VERSION: u16 = #version;
            const NAME: &'static str = #name;
        }
    })
}
