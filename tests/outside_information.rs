//! How a command that needs outside information is written: the application looks the price up
//! (asynchronously, from any service) before it builds the command, and the price travels inside the
//! command. `handle` stays pure and synchronous, a retry after a conflict reuses the same price, and
//! the aggregate is tested without any service. See `docs/DESIGN.md`.

use std::collections::HashMap;

use annals::testing::given;
use annals::{Aggregate, CommandContext, CommandError, Committed, Event, MemoryStore, Repository};

#[derive(Event, Clone, Debug, PartialEq)]
enum CartEvent {
    ItemAdded { sku: String, quantity: u32, unit_price_cents: u64 },
}

#[derive(Clone, Debug)]
enum CartCommand {
    AddItem { sku: String, quantity: u32, unit_price_cents: u64 },
}

#[derive(Debug, PartialEq, thiserror::Error)]
enum CartError {
    #[error("a cart holds at most 1000 euros")]
    TooExpensive,
}

#[derive(Aggregate, Default)]
#[aggregate(command = CartCommand, event = CartEvent, error = CartError)]
struct Cart {
    total_cents: u64,
}

impl Cart {
    fn handle(&self, command: CartCommand) -> Result<Vec<CartEvent>, CartError> {
        let CartCommand::AddItem { sku, quantity, unit_price_cents } = command;
        if self.total_cents + u64::from(quantity) * unit_price_cents > 100_000 {
            return Err(CartError::TooExpensive);
        }
        Ok(vec![CartEvent::ItemAdded { sku, quantity, unit_price_cents }])
    }

    fn apply(&mut self, event: &CartEvent) {
        let CartEvent::ItemAdded { quantity, unit_price_cents, .. } = event;
        self.total_cents += u64::from(*quantity) * unit_price_cents;
    }
}

/// The outside service: in a real program an HTTP call or a database query.
trait PriceList {
    async fn price_cents(&self, sku: &str) -> Option<u64>;
}

struct Catalog(HashMap<&'static str, u64>);

impl PriceList for Catalog {
    async fn price_cents(&self, sku: &str) -> Option<u64> {
        tokio::task::yield_now().await;
        self.0.get(sku).copied()
    }
}

#[derive(Debug, thiserror::Error)]
enum ShopError {
    #[error("unknown product {0}")]
    UnknownSku(String),
    #[error(transparent)]
    Command(#[from] CommandError<CartError>),
}

/// The application service: look up, then command.
async fn add_to_cart(
    carts: &Repository<Cart, MemoryStore>,
    prices: &impl PriceList,
    cart: &str,
    sku: &str,
    quantity: u32,
) -> Result<Committed<CartEvent>, ShopError> {
    let unit_price_cents = prices.price_cents(sku).await.ok_or_else(|| ShopError::UnknownSku(sku.to_owned()))?;
    let command = CartCommand::AddItem { sku: sku.to_owned(), quantity, unit_price_cents };
    Ok(carts.execute(cart, command, &CommandContext::new()).await?)
}

#[test]
fn the_aggregate_decides_on_the_price_in_the_command_without_any_service() {
    let add =
        |sku: &str, quantity, unit_price_cents| CartCommand::AddItem { sku: sku.into(), quantity, unit_price_cents };
    let added =
        |sku: &str, quantity, unit_price_cents| CartEvent::ItemAdded { sku: sku.into(), quantity, unit_price_cents };
    let cart = given::<Cart>([]).when(add("book", 2, 1250)).then([added("book", 2, 1250)]);
    assert_eq!(cart.total_cents, 2500);
    given::<Cart>([added("tv", 1, 99_900)]).when(add("book", 1, 1250)).then_error(CartError::TooExpensive);
}

#[tokio::test]
async fn the_application_looks_the_price_up_before_it_commands() -> Result<(), Box<dyn std::error::Error>> {
    let carts = Repository::<Cart, _>::new(MemoryStore::new());
    let prices = Catalog(HashMap::from([("book", 1250), ("pen", 199)]));
    let committed = add_to_cart(&carts, &prices, "c1", "book", 2).await?;
    assert_eq!(
        committed.events[0].event,
        CartEvent::ItemAdded { sku: "book".into(), quantity: 2, unit_price_cents: 1250 }
    );
    add_to_cart(&carts, &prices, "c1", "pen", 1).await?;
    assert_eq!(carts.load("c1").await?.state.total_cents, 2 * 1250 + 199);
    let unknown = add_to_cart(&carts, &prices, "c1", "boat", 1).await;
    assert!(matches!(unknown, Err(ShopError::UnknownSku(ref sku)) if sku == "boat"), "{unknown:?}");
    assert_eq!(carts.load("c1").await?.version.get(), 2, "nothing is written for an unknown product");
    Ok(())
}
