// Transitions are methods on one specific state: calling one from another
// state, or passing a transition off as a different one, does not compile.
use batpak::event::EventKind;
use batpak::typestate::Transition;

batpak::define_state_machine!(DoorState {
    Open,
    Closed,
    Locked
});
batpak::define_typestate!(Door<S: DoorState> { name: String });

const DOOR_CLOSED: EventKind = EventKind::custom(2, 1);

impl Door<Open> {
    fn close(self) -> (Door<Closed>, Transition<Open, Closed, ()>) {
        let (name,) = self.into_data();
        (Door::new(name), Transition::new(DOOR_CLOSED, ()))
    }
}

fn main() {
    let closed: Door<Closed> = Door::new("front".to_string());
    // Closed -> Closed is not a transition of this machine.
    let _ = closed.close();

    let open: Door<Open> = Door::new("back".to_string());
    // Open -> Closed cannot be recorded as Closed -> Locked.
    let (_door, _t): (Door<Locked>, Transition<Closed, Locked, ()>) = open.close();
}
