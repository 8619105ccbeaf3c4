//! An order moves Draft -> Placed -> Shipped. Each transition is a method on
//! one state only, so skipping a step does not compile; each transition is
//! appended to the store as an event.
//!
//! Run: `cargo run --example typestate_workflow`

use batpak::prelude::*;
use batpak::typestate::Transition;
use serde::Serialize;

batpak::define_state_machine!(OrderState {
    Draft,
    Placed,
    Shipped
});
batpak::define_typestate!(Order<S: OrderState> { id: String, items: u32 });

// A second machine in the same module.
batpak::define_state_machine!(PaymentState { Unpaid, Paid });

const PLACED: EventKind = EventKind::custom(6, 1);
const SHIPPED: EventKind = EventKind::custom(6, 2);

#[derive(Serialize)]
struct Placement {
    items: u32,
}

#[derive(Serialize)]
struct Shipment {
    carrier: &'static str,
}

impl Order<Draft> {
    fn place(self) -> (Order<Placed>, Transition<Draft, Placed, Placement>) {
        let (id, items) = self.into_data();
        (
            Order::new(id, items),
            Transition::new(PLACED, Placement { items }),
        )
    }
}

impl Order<Placed> {
    fn ship(
        self,
        carrier: &'static str,
    ) -> (Order<Shipped>, Transition<Placed, Shipped, Shipment>) {
        let (id, items) = self.into_data();
        (
            Order::new(id, items),
            Transition::new(SHIPPED, Shipment { carrier }),
        )
    }
}

fn describe<S: OrderState>(order: &Order<S>) -> String {
    format!("order {} is {}", order.id, S::state_name())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(StoreConfig::new(dir.path()))?;
    let coord = Coordinate::new("order:7", "shop:demo")?;

    let order = Order::<Draft>::new("7".into(), 3);
    println!("{}", describe(&order));
    let (order, placed) = order.place();
    store.apply_transition(&coord, placed)?;
    println!("{}", describe(&order));
    let (order, shipped) = order.ship("post");
    store.apply_transition(&coord, shipped)?;
    println!("{}", describe(&order));
    // order.place();  // does not compile: `place` exists only on Order<Draft>.

    let _unpaid = Unpaid;
    let kinds: Vec<EventKind> = store.stream("order:7").iter().map(|e| e.kind).collect();
    println!("events: {kinds:?}");
    assert_eq!(kinds, vec![PLACED, SHIPPED]);
    store.close()?;
    Ok(())
}
