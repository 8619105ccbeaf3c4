// A state machine's trait is sealed: no type outside its
// `define_state_machine!` can become one of its states, even when several
// machines share a module.
mod machines {
    batpak::define_state_machine!(DoorState { Open, Closed });
    batpak::define_state_machine!(LightState { On, Off });
}

struct Ajar;

// A foreign type cannot join a machine...
impl machines::DoorState for Ajar {
    fn state_name() -> &'static str {
        "Ajar"
    }
}

// ...and a state of one machine cannot join another.
impl machines::LightState for machines::Open {
    fn state_name() -> &'static str {
        "Open"
    }
}

fn main() {}
