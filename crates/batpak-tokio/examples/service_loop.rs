//! A service loop on tokio, without HTTP: a task consumes a guaranteed
//! cursor over the `order:` region and appends a reaction to every order
//! placed (an invoice, correlated to the order and caused by it), while
//! `main` appends the orders. At the end it checks every order got exactly
//! one invoice with the right causal links, and exits.
//!
//! Run: `cargo run -p batpak-tokio --example service_loop`

use batpak::prelude::*;
use batpak_tokio::AsyncStore;
use futures_util::StreamExt;
use std::time::Duration;

const ORDER_PLACED: EventKind = EventKind::custom(1, 1);
const INVOICE_ISSUED: EventKind = EventKind::custom(2, 1);
const ORDERS: u32 = 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()?;
    rt.block_on(run(dir.path()))
}

async fn run(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let store = AsyncStore::new(Store::open(StoreConfig::new(dir))?)?;

    // The service: every order placed gets an invoice.
    let service = {
        let store = store.clone();
        let mut orders = store.cursor_stream(&Region::entity("order:"), None)?;
        tokio::spawn(async move {
            let mut invoiced = 0;
            while invoiced < ORDERS {
                let Some(entry) = orders.next().await else {
                    break;
                };
                let order = entry?;
                if order.kind != ORDER_PLACED {
                    continue;
                }
                let invoice = Coordinate::new(format!("invoice:{}", order.coord.entity()), "shop")?;
                store
                    .append_reaction(
                        &invoice,
                        INVOICE_ISSUED,
                        serde_json::json!({"for": order.coord.entity()}),
                        order.correlation_id,
                        order.event_id,
                    )
                    .await?;
                invoiced += 1;
            }
            Ok::<u32, StoreError>(invoiced)
        })
    };

    // The inputs.
    let mut placed = Vec::new();
    for i in 0..ORDERS {
        let order = Coordinate::new(format!("order:{i}"), "shop")?;
        let r = store
            .append(&order, ORDER_PLACED, serde_json::json!({"qty": i + 1}))
            .await?;
        placed.push(r.event_id);
    }

    let invoiced = tokio::time::timeout(Duration::from_secs(30), service).await???;
    assert_eq!(invoiced, ORDERS);
    for order_id in placed {
        let invoices = store.children(order_id).await?;
        assert_eq!(invoices.len(), 1, "one invoice per order");
        assert_eq!(invoices[0].kind, INVOICE_ISSUED);
        assert_eq!(
            invoices[0].correlation_id, order_id,
            "in the order's causal tree"
        );
    }
    println!("{ORDERS} orders, {ORDERS} invoices, each caused by its order");
    store.close().await?;
    Ok(())
}
