// `#[derive(TypedEvent)]` needs a kind: a type without one does not compile.
use batpak::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, TypedEvent)]
#[batpak(version = 2)]
struct NoKind {
    x: u8,
}

#[derive(Serialize, Deserialize, TypedEvent)]
#[batpak(category = 2, type_id = 1, version = 0)]
struct VersionZero {
    x: u8,
}

fn main() {}
