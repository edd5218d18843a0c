//! The flagship demo: an order service, a payment service and a stock service on one embedded sled
//! store. Payment and stock are durable subscriptions to `OrderPlaced`. The stock service is stopped
//! while orders keep coming; when it comes back it catches up on every order it missed, from its
//! checkpoint, then follows the log live. The demo ends by asking the log about the past: what was
//! the stock of an item right after a given order?
//!
//! Run it with `cargo run --release --example shop` (add a directory to keep the store:
//! `cargo run --release --example shop -- /tmp/shop`; a second run then goes on from the saved
//! checkpoints). Its test, `cargo test --example shop`, checks the story the output tells.

#![allow(clippy::print_stdout)] // printing is what the example is for

use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::{
    replay, Aggregate, CommandContext, CommandError, Event, EventStore, Handler, HandlerError, LogFilter, Phase,
    Position, Projection, ReadStream, RecordedEvent, Repository, SledStore, Start, Subscription, SubscriptionConfig,
    SubscriptionHandle, Until,
};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

/// How long a service may take to handle what was just appended.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------------
// The order service's aggregate.

/// What happens to an order.
#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OrderEvent {
    /// A customer placed the order.
    OrderPlaced {
        /// The item ordered.
        item: String,
        /// How many.
        quantity: u32,
        /// The price of one, in cents.
        unit_price_cents: u64,
    },
    /// The payment service took the money.
    OrderPaid {
        /// In cents.
        amount_cents: u64,
    },
}

/// What an order can be asked to do.
#[derive(Clone, Debug)]
pub enum OrderCommand {
    /// Place it.
    Place {
        /// The item.
        item: String,
        /// How many.
        quantity: u32,
        /// The price of one, in cents.
        unit_price_cents: u64,
    },
    /// Record the payment; a second payment of the same order does nothing.
    MarkPaid,
}

/// Why an order refuses a command.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum OrderError {
    /// Placing it twice.
    #[error("the order was already placed")]
    AlreadyPlaced,
    /// Paying an order that does not exist.
    #[error("the order was never placed")]
    NotPlaced,
}

/// An order.
#[derive(Aggregate, Clone, Debug, Default)]
#[aggregate(command = OrderCommand, event = OrderEvent, error = OrderError)]
pub struct Order {
    total_cents: Option<u64>,
    paid: bool,
}

impl Order {
    fn handle(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        match (command, self.total_cents) {
            (OrderCommand::Place { .. }, Some(_)) => Err(OrderError::AlreadyPlaced),
            (OrderCommand::Place { item, quantity, unit_price_cents }, None) => {
                Ok(vec![OrderEvent::OrderPlaced { item, quantity, unit_price_cents }])
            }
            (OrderCommand::MarkPaid, None) => Err(OrderError::NotPlaced),
            (OrderCommand::MarkPaid, Some(_)) if self.paid => Ok(vec![]),
            (OrderCommand::MarkPaid, Some(amount_cents)) => Ok(vec![OrderEvent::OrderPaid { amount_cents }]),
        }
    }

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::OrderPlaced { quantity, unit_price_cents, .. } => {
                self.total_cents = Some(u64::from(*quantity) * unit_price_cents);
            }
            OrderEvent::OrderPaid { .. } => self.paid = true,
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The stock service's aggregate: one stream per item.

/// What happens to the stock of an item.
#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StockEvent {
    /// Goods arrived.
    Restocked {
        /// How many.
        quantity: u32,
    },
    /// Goods were set aside for an order.
    Reserved {
        /// The order's id.
        order: String,
        /// How many.
        quantity: u32,
    },
}

/// What the stock of an item can be asked to do.
#[derive(Clone, Debug)]
pub enum StockCommand {
    /// Goods arrived.
    Restock {
        /// How many.
        quantity: u32,
    },
    /// Set goods aside for an order; a second reservation for the same order does nothing.
    Reserve {
        /// The order's id.
        order: String,
        /// How many.
        quantity: u32,
    },
}

/// Why the stock refuses a command.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum StockError {
    /// Not enough goods left.
    #[error("only {available} left, {requested} asked")]
    OutOfStock {
        /// What is left.
        available: u32,
        /// What was asked.
        requested: u32,
    },
}

/// The stock of one item.
#[derive(Aggregate, Clone, Debug, Default)]
#[aggregate(command = StockCommand, event = StockEvent, error = StockError)]
pub struct Stock {
    available: u32,
    reserved_for: Vec<String>,
}

impl Stock {
    fn handle(&self, command: StockCommand) -> Result<Vec<StockEvent>, StockError> {
        match command {
            StockCommand::Restock { quantity } => Ok(vec![StockEvent::Restocked { quantity }]),
            StockCommand::Reserve { order, .. } if self.reserved_for.contains(&order) => Ok(vec![]),
            StockCommand::Reserve { quantity, .. } if quantity > self.available => {
                Err(StockError::OutOfStock { available: self.available, requested: quantity })
            }
            StockCommand::Reserve { order, quantity } => Ok(vec![StockEvent::Reserved { order, quantity }]),
        }
    }

    fn apply(&mut self, event: &StockEvent) {
        match event {
            StockEvent::Restocked { quantity } => self.available += quantity,
            StockEvent::Reserved { order, quantity } => {
                self.available -= quantity;
                self.reserved_for.push(order.clone());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// A read model of stock levels, used to look into the past.

/// The stock level of every item, from the stock events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StockLevels(BTreeMap<String, i64>);

#[async_trait::async_trait]
impl Projection for StockLevels {
    fn name(&self) -> &str {
        "stock-levels"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::all().stream_prefix("stock-")
    }

    async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
        let item = event.stream.as_str().trim_start_matches("stock-").to_owned();
        let change = match StockEvent::from_recorded(event)? {
            StockEvent::Restocked { quantity } => i64::from(quantity),
            StockEvent::Reserved { quantity, .. } => -i64::from(quantity),
        };
        *self.0.entry(item).or_default() += change;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------
// The timeline: every service writes what it does here, and it is printed as it happens.

/// The lines of the demo's output, kept for the test.
#[derive(Clone, Debug, Default)]
pub struct Timeline(Arc<Mutex<Vec<String>>>);

impl Timeline {
    fn say(&self, line: String) {
        println!("{line}");
        if let Ok(mut lines) = self.0.lock() {
            lines.push(line);
        }
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().map(|lines| lines.clone()).unwrap_or_default()
    }
}

fn phase_label(phase: Phase) -> &'static str {
    match phase {
        Phase::CatchUp => "catch-up",
        Phase::Live => "live",
    }
}

// ---------------------------------------------------------------------------------------------------
// The payment and stock services: subscriptions to `OrderPlaced`.

/// The payment service: marks every placed order as paid.
struct PaymentService {
    orders: Arc<Repository<Order, SledStore>>,
    timeline: Timeline,
}

#[async_trait::async_trait]
impl Handler for PaymentService {
    async fn handle(&mut self, event: &RecordedEvent, phase: Phase) -> Result<(), HandlerError> {
        let order = event.stream.as_str().trim_start_matches("order-");
        let context = CommandContext::new().causation_id(event.id.to_string());
        let paid = self.orders.execute(order, OrderCommand::MarkPaid, &context).await?;
        if let Some(payment) = paid.events.first() {
            let OrderEvent::OrderPaid { amount_cents } = payment.event else { return Ok(()) };
            self.timeline.say(format!(
                "  payment  [{:>8}] order-{order} paid {amount_cents} cents (event at position {})",
                phase_label(phase),
                payment.position
            ));
        }
        Ok(())
    }
}

/// The stock service: reserves the goods of every placed order.
struct StockService {
    stock: Arc<Repository<Stock, SledStore>>,
    timeline: Timeline,
}

#[async_trait::async_trait]
impl Handler for StockService {
    async fn handle(&mut self, event: &RecordedEvent, phase: Phase) -> Result<(), HandlerError> {
        let OrderEvent::OrderPlaced { item, quantity, .. } = OrderEvent::from_recorded(event)? else {
            return Ok(());
        };
        let order = event.stream.as_str().trim_start_matches("order-").to_owned();
        let context = CommandContext::new().causation_id(event.id.to_string());
        let reserve = StockCommand::Reserve { order: order.clone(), quantity };
        match self.stock.execute(&item, reserve, &context).await {
            Ok(committed) => {
                let left = self.stock.load(&item).await?.state.available;
                self.timeline.say(format!(
                    "  stock    [{:>8}] order-{order} (position {}): {quantity} x {item} reserved, {left} left",
                    phase_label(phase),
                    event.position
                ));
                let _ = committed;
                Ok(())
            }
            Err(CommandError::Rejected(refused)) => {
                self.timeline.say(format!("  stock    [{:>8}] order-{order}: {refused}", phase_label(phase)));
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }
}

fn order_placed_only(name: &str) -> SubscriptionConfig {
    SubscriptionConfig::new(name).filter(LogFilter::all().event_types(["OrderPlaced"]))
}

// ---------------------------------------------------------------------------------------------------
// The story.

/// What the demo found, for its test.
#[derive(Debug)]
pub struct Outcome {
    /// Every line printed.
    pub lines: Vec<String>,
    /// How many orders the stock service handled when it caught up after its downtime.
    pub missed_and_caught_up: usize,
    /// The widget stock right after order 10, from replaying the log up to that order.
    pub widgets_after_order_10: i64,
    /// The widget stock at the end.
    pub widgets_now: i64,
}

/// The item and quantity of order `n`: two widgets in three orders, gadgets in the others.
fn order_line(n: u32) -> (&'static str, u32) {
    if n % 3 == 0 {
        ("gadget", 1)
    } else {
        ("widget", 1 + n % 4)
    }
}

async fn place(
    orders: &Repository<Order, SledStore>,
    timeline: &Timeline,
    n: u32,
    stock_lag: impl Fn(Position) -> String,
) -> Result<Position, Box<dyn Error>> {
    let (item, quantity) = order_line(n);
    let place = OrderCommand::Place { item: item.into(), quantity, unit_price_cents: 1250 };
    let committed = orders.execute(&n.to_string(), place, &CommandContext::new()).await?;
    let position = committed.last_position().ok_or("placing an order wrote nothing")?;
    timeline
        .say(format!("order    [position {position:>3}] order-{n}: {quantity} x {item} placed{}", stock_lag(position)));
    Ok(position)
}

/// Runs the whole story on a store in `dir`.
pub async fn run(dir: &Path) -> Result<Outcome, Box<dyn Error>> {
    let timeline = Timeline::default();
    let store = SledStore::open(dir)?;
    timeline.say(format!("Annals shop: an embedded sled store in {}", dir.display()));
    let orders = Arc::new(Repository::<Order, _>::new(store.clone()));
    let stock = Arc::new(Repository::<Stock, _>::new(store.clone()));

    let context = CommandContext::new().header("service", "warehouse");
    for (item, quantity) in [("widget", 100), ("gadget", 20)] {
        stock.execute(item, StockCommand::Restock { quantity }, &context).await?;
    }

    let payment = PaymentService { orders: Arc::clone(&orders), timeline: timeline.clone() };
    let payments = Subscription::start(store.clone(), order_placed_only("payment"), payment).await?;
    let stock_service = || StockService { stock: Arc::clone(&stock), timeline: timeline.clone() };
    let stocking = Subscription::start(store.clone(), order_placed_only("stock"), stock_service()).await?;
    payments.caught_up().await?;
    stocking.caught_up().await?;

    timeline.say("\n== all services up: orders 1 to 6 ==".into());
    for n in 1..=6 {
        let position = place(&orders, &timeline, n, |_| String::new()).await?;
        settle(&[&payments, &stocking], position).await?;
    }

    stocking.stop().await?;
    let stopped_at = Subscription::checkpoint(&store, "stock").await?.unwrap_or(Position::ZERO);
    timeline
        .say(format!("\n== stock service DOWN (checkpoint at position {stopped_at}); orders 7 to 14 keep coming =="));
    for n in 7..=14 {
        let lag = |position: Position| {
            format!("   (stock service: checkpoint {stopped_at}, lag {} events)", position.get() - stopped_at.get())
        };
        let position = place(&orders, &timeline, n, lag).await?;
        settle(&[&payments], position).await?;
    }

    let head = store.head().await?;
    timeline.say(format!(
        "\n== stock service back: catching up from position {} to the head at {head} ==",
        stopped_at.get() + 1
    ));
    let before = reservations(&store).await?;
    let stocking = Subscription::start(store.clone(), order_placed_only("stock"), stock_service()).await?;
    let caught_up = stocking.caught_up().await?;
    let missed_and_caught_up = reservations(&store).await? - before;
    // Its own reservations came after the head it caught up with; it reads past them live.
    settle(&[&stocking], store.head().await?).await?;
    timeline.say(format!(
        "== stock service caught up at position {caught_up}: {missed_and_caught_up} missed orders handled; now at {}, lag {} ==",
        stocking.position(),
        stocking.lag()
    ));

    timeline.say("\n== live again: orders 15 to 18 ==".into());
    for n in 15..=18 {
        let position = place(&orders, &timeline, n, |_| String::new()).await?;
        settle(&[&payments, &stocking], position).await?;
    }
    payments.stop().await?;
    stocking.stop().await?;

    let (widgets_after_order_10, at) = widgets_after_order(&store, "10").await?;
    let widgets_now = replay(&store, StockLevels::default(), Start::Beginning, Until::default()).await?.0["widget"];
    timeline.say(format!(
        "\n== the past ==\nwidget stock right after order 10 (its reservation is at position {at}; log replayed up to there): \
         {widgets_after_order_10}\nwidget stock now: {widgets_now}"
    ));
    Ok(Outcome { lines: timeline.lines(), missed_and_caught_up, widgets_after_order_10, widgets_now })
}

/// Waits until every service has handled `position`.
async fn settle(services: &[&SubscriptionHandle], position: Position) -> Result<(), Box<dyn Error>> {
    for service in services {
        service.wait_for(position, PATIENCE).await?;
    }
    Ok(())
}

/// How many reservations the log holds.
async fn reservations(store: &SledStore) -> Result<usize, Box<dyn Error>> {
    let filter = LogFilter::all().event_types(["Reserved"]);
    let events: Vec<_> = store.read_log(annals::ReadLog::from_start().filter(filter)).try_collect().await?;
    Ok(events.len())
}

/// The widget stock right after the reservation for `order`: the stock-levels read model replayed up
/// to the position of that reservation, on a fresh instance.
async fn widgets_after_order(store: &SledStore, order: &str) -> Result<(i64, Position), Box<dyn Error>> {
    let stream = Stock::stream_id("widget")?;
    let events: Vec<_> = store.read_stream(&stream, ReadStream::forward()).try_collect().await?;
    let reservation = events
        .iter()
        .find(|e| matches!(StockEvent::from_recorded(e), Ok(StockEvent::Reserved { order: o, .. }) if o == order))
        .ok_or("no reservation for the order")?;
    let until = Until { position: Some(reservation.position), ..Until::default() };
    let levels = replay(store, StockLevels::default(), Start::Beginning, until).await?;
    Ok((levels.0.get("widget").copied().unwrap_or_default(), reservation.position))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let kept = std::env::args().nth(1);
    let temporary = tempfile::tempdir()?;
    let dir = kept.as_deref().map_or(temporary.path(), Path::new);
    run(dir).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_stock_service_catches_up_on_every_missed_order_and_the_past_is_answered() -> Result<(), Box<dyn Error>>
    {
        let dir = tempfile::tempdir()?;
        let outcome = run(dir.path()).await?;

        // Orders 7 to 14 were placed while the stock service was down: all 8 were handled on catch-up.
        assert_eq!(outcome.missed_and_caught_up, 8);
        let catch_up: Vec<_> = outcome.lines.iter().filter(|l| l.starts_with("  stock    [catch-up]")).collect();
        for n in 7..=14 {
            let count = catch_up.iter().filter(|l| l.contains(&format!(" order-{n} "))).count();
            assert_eq!(count, 1, "order-{n} caught up once: {catch_up:?}");
        }
        for n in 15..=18 {
            let live = format!("  stock    [    live] order-{n} ");
            assert!(outcome.lines.iter().any(|l| l.starts_with(&live)), "order-{n} handled live");
        }
        for n in 1..=18 {
            let paid = outcome.lines.iter().filter(|l| l.contains(&format!("] order-{n} paid"))).count();
            assert_eq!(paid, 1, "order-{n} paid once");
        }

        // The past, computed independently from the order lines.
        let widgets = |orders: std::ops::RangeInclusive<u32>| {
            orders.map(order_line).filter(|(item, _)| *item == "widget").map(|(_, q)| i64::from(q)).sum::<i64>()
        };
        assert_eq!(outcome.widgets_after_order_10, 100 - widgets(1..=10));
        assert_eq!(outcome.widgets_now, 100 - widgets(1..=18));
        assert!(outcome.lines.iter().any(|l| l.contains("widget stock right after order 10")));
        Ok(())
    }
}
