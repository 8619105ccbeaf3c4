//! Compile-time state machines: sealed state traits, typestate structs and
//! typed transitions.
//!
//! This module owns [`define_state_machine!`](crate::define_state_machine),
//! [`define_typestate!`](crate::define_typestate) and [`Transition`]. Everything
//! here is checked by the compiler and costs nothing at run time; it never
//! touches the store, and the store does not know which state an entity is in
//! (`Store::apply_transition` only appends the transition's kind and payload).
//!
//! # Writing a state machine
//!
//! Transitions are ordinary methods written on one specific state, so calling
//! them from any other state does not compile:
//!
//! ```
//! use batpak::event::EventKind;
//! use batpak::typestate::Transition;
//!
//! batpak::define_state_machine!(DoorState { Open, Closed, Locked });
//! batpak::define_typestate!(Door<S: DoorState> { name: String, times_opened: u32 });
//!
//! const DOOR_CLOSED: EventKind = EventKind::custom(2, 1);
//! const DOOR_LOCKED: EventKind = EventKind::custom(2, 2);
//!
//! impl Door<Open> {
//!     fn close(self) -> (Door<Closed>, Transition<Open, Closed, ()>) {
//!         let (name, times_opened) = self.into_data();
//!         (Door::new(name, times_opened), Transition::new(DOOR_CLOSED, ()))
//!     }
//! }
//!
//! impl Door<Closed> {
//!     fn lock(self, key: u32) -> (Door<Locked>, Transition<Closed, Locked, u32>) {
//!         let (name, times_opened) = self.into_data();
//!         (Door::new(name, times_opened), Transition::new(DOOR_LOCKED, key))
//!     }
//! }
//!
//! // Code generic over every state:
//! fn describe<S: DoorState>(door: &Door<S>) -> String {
//!     format!("{} is {}", door.name, S::state_name())
//! }
//!
//! let door = Door::<Open>::new("front".into(), 1);
//! let (door, closed) = door.close();
//! let (door, locked) = door.lock(1234);
//! assert_eq!(describe(&door), "front is Locked");
//! assert_eq!((closed.kind(), *locked.payload()), (DOOR_CLOSED, 1234));
//! // door.close();  // does not compile: `close` exists only on `Door<Open>`
//! ```
//!
//! Several state machines may live in one module, and a machine's trait is
//! sealed: only the states listed in its `define_state_machine!` implement it.
//!
//! ```
//! mod machines {
//!     batpak::define_state_machine!(DoorState { Open, Closed });
//!     batpak::define_state_machine!(LightState { On, Off });
//! }
//! fn door_only<S: machines::DoorState>() {}
//! door_only::<machines::Open>();
//! ```
//!
//! ```compile_fail
//! batpak::define_state_machine!(DoorState { Open, Closed });
//! struct Ajar;
//! impl DoorState for Ajar { fn state_name() -> &'static str { "Ajar" } }
//! ```
//!
//! Nor can a type that is not a state be used as one:
//!
//! ```compile_fail
//! batpak::define_state_machine!(DoorState { Open, Closed });
//! batpak::define_typestate!(Door<S: DoorState> { name: String });
//! struct Ajar;
//! let door: Door<Ajar> = Door::new("front".to_string());
//! ```
//!
//! # How the seal works
//!
//! A state trait has the supertrait `__private::StateOf<(State1, State2, ..)>`,
//! keyed by the tuple of its states, and the macro implements that only for the
//! listed states. This needs no helper module per machine, so several
//! machines can share one Rust module (`macro_rules!` cannot build a fresh
//! module name per machine). The key is a public,
//! `#[doc(hidden)]` item: ordinary code cannot add a state by accident, but a
//! deliberate `impl` of `__private::StateOf` is not prevented and is not
//! supported API.

pub mod transition;

pub use transition::Transition;

/// Macro support. Not public API: names here may change in any release.
#[doc(hidden)]
pub mod __private {
    /// Implemented by exactly the states of the machine keyed by `M` (the tuple
    /// of its states); the supertrait of every state trait.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not a state of this state machine",
        label = "not one of the states `{M}`",
        note = "a state machine's states are exactly those listed in its `define_state_machine!`; its trait is sealed"
    )]
    pub trait StateOf<M: ?Sized> {}
}

/// Declares a sealed state trait and one marker type per state.
///
/// `define_state_machine!(DoorState { Open, Closed })` expands to
/// `pub trait DoorState` (sealed, with `fn state_name() -> &'static str`) and
/// `#[derive(Debug, Clone, Copy, PartialEq, Eq)] pub struct Open;` (and so on)
/// implementing it. Doc comments and other attributes may precede the machine
/// name and each state. Several machines may be declared in one module, but a
/// state name can belong to one machine only. See [the module docs](crate::typestate).
#[macro_export]
macro_rules! define_state_machine {
    (@states $Machine:ident, $Key:ty; $( $(#[$smeta:meta])* $State:ident ),+) => {
        $(
            $(#[$smeta])*
            #[doc = ""]
            #[doc = concat!("A state of the [`", stringify!($Machine), "`] state machine.")]
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            // States are mostly used as types only; unused ones are not the user's fault.
            #[allow(dead_code)]
            pub struct $State;

            impl $crate::typestate::__private::StateOf<$Key> for $State {}

            impl $Machine for $State {
                fn state_name() -> &'static str {
                    stringify!($State)
                }
            }
        )+
    };
    (
        $(#[$meta:meta])*
        $Machine:ident { $( $(#[$smeta:meta])* $State:ident ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[doc = ""]
        #[doc = concat!(
            "The states of the `", stringify!($Machine), "` state machine: ",
            $( "[`", stringify!($State), "`] ", )+
            "(sealed: no other type can implement it)."
        )]
        #[diagnostic::on_unimplemented(
            message = "`{Self}` is not a state of this state machine",
            note = "a state machine's states are exactly those listed in its `define_state_machine!`"
        )]
        pub trait $Machine: $crate::typestate::__private::StateOf<( $($State,)+ )> {
            /// The state's name as written in `define_state_machine!`.
            /// (A function, not a constant, so that the trait stays usable
            /// as `dyn`, as the original crate's empty trait is.)
            #[allow(dead_code)]
            fn state_name() -> &'static str
            where
                Self: Sized;
        }

        $crate::define_state_machine!(@states $Machine, ( $($State,)+ ); $( $(#[$smeta])* $State ),+);
    };
}

/// Declares a struct whose type carries its state.
///
/// `define_typestate!(Door<S: DoorState> { name: String, opened: u32 })` expands
/// to `pub struct Door<S: DoorState> { pub name: String, pub opened: u32, _state: PhantomData<S> }`
/// with `new(name, opened)`, `data(&self) -> (&String, &u32)` and
/// `into_data(self) -> (String, u32)`. Attributes (such as `#[derive(Debug)]`
/// or doc comments) may precede the struct name and each field; the name
/// `_state` is taken.
///
/// `new` works for every state, so any state can be built directly; the type
/// system guards the *moves* between states, which are methods written on
/// `Door<SpecificState>`. See [the module docs](crate::typestate).
#[macro_export]
macro_rules! define_typestate {
    (
        $(#[$meta:meta])*
        $Name:ident < $S:ident : $Bound:path > {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[doc = ""]
        #[doc = concat!("Data whose state is the type parameter (see [`", stringify!($Bound), "`]).")]
        pub struct $Name<$S: $Bound> {
            $( $(#[$fmeta])* pub $field: $ty, )*
            _state: ::core::marker::PhantomData<$S>,
        }

        // Generated helpers the user may not call should not warn, nor should the
        // `()` that `data`/`into_data` return for a struct without fields.
        #[allow(dead_code, clippy::unused_unit)]
        impl<$S: $Bound> $Name<$S> {
            /// Builds the value in state `S`.
            #[allow(clippy::too_many_arguments, clippy::new_without_default)]
            pub fn new($( $field: $ty ),*) -> Self {
                $Name { $( $field, )* _state: ::core::marker::PhantomData }
            }

            /// Borrows every field, in declaration order.
            pub fn data(&self) -> ( $( &$ty, )* ) {
                ( $( &self.$field, )* )
            }

            /// Takes every field, in declaration order, dropping the state.
            pub fn into_data(self) -> ( $( $ty, )* ) {
                ( $( self.$field, )* )
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::Transition;
    use crate::event::EventKind;

    mod machines {
        crate::define_state_machine!(
            /// Doors.
            DoorState {
                /// Wide open.
                Open,
                Closed,
                Locked,
            }
        );
        crate::define_state_machine!(LightState { On, Off });
        crate::define_state_machine!(Single { Only });

        crate::define_typestate!(
            #[derive(Debug, Clone, PartialEq)]
            Door<S: DoorState> {
                /// Which door.
                name: String,
                opened: u32,
            }
        );
        crate::define_typestate!(Lamp<S: LightState> { watts: u16 });
        crate::define_typestate!(Token<S: Single> {});
    }

    use machines::*;

    const CLOSED: EventKind = EventKind::custom(3, 1);

    impl Door<Open> {
        fn close(self) -> (Door<Closed>, Transition<Open, Closed, String>) {
            let (name, opened) = self.into_data();
            let payload = format!("{name} closed");
            (Door::new(name, opened), Transition::new(CLOSED, payload))
        }
    }

    impl Lamp<Off> {
        fn switch_on(self) -> Lamp<On> {
            Lamp::new(self.watts)
        }
    }

    fn state_of<M: DoorState>(_: &Door<M>) -> &'static str {
        M::state_name()
    }

    #[test]
    fn several_machines_in_one_module() {
        let door = Door::<Open>::new("front".into(), 2);
        assert_eq!(door.data(), (&"front".to_string(), &2));
        assert_eq!(state_of(&door), "Open");
        let (door, t) = door.close();
        assert_eq!(state_of(&door), "Closed");
        assert_eq!(t.kind(), CLOSED);
        assert_eq!(t.payload(), "front closed");
        assert_eq!(t.clone().into_payload(), "front closed");
        assert_eq!(door.clone(), door);

        let lamp = Lamp::<Off>::new(60).switch_on();
        assert_eq!(<On as LightState>::state_name(), "On");
        // The trait is dyn-compatible, as the original crate's empty one is.
        let states: Vec<Box<dyn DoorState>> = vec![Box::new(Open), Box::new(Closed)];
        assert_eq!(states.len(), 2);
        assert_eq!(lamp.into_data(), (60,));
        let token = Token::<Only>::new();
        let () = token.data();
        assert_eq!(Only, Only);
    }

    #[test]
    fn transition_needs_no_bounds_and_debug_names_states() {
        struct NotAState;
        let t: Transition<NotAState, u8, Vec<u8>> = Transition::new(EventKind::DATA, vec![1]);
        let dbg = format!("{t:?}");
        assert!(
            dbg.contains("NotAState") && dbg.contains("u8") && dbg.contains("[1]"),
            "{dbg}"
        );
        assert_eq!(t, Transition::new(EventKind::DATA, vec![1]));
        assert_ne!(t, Transition::new(CLOSED, vec![1]));
    }

    #[test]
    fn transition_is_send_whatever_the_markers() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Transition<std::rc::Rc<u8>, *const u8, u32>>();
    }
}
