//! The flagship demo across three operating-system processes on PostgreSQL: the order, payment and
//! stock services of `examples/shop.rs`, each a process of its own, sharing one event log in one
//! database. Payment and stock are durable subscriptions to `OrderPlaced` whose checkpoints live in
//! the database; the stock service also keeps a SQL read model, the table `stock_levels`, written in
//! the same transaction as its checkpoint (exactly-once). While orders keep coming, the story kills
//! the stock process with SIGKILL, lets orders pile up, and starts a new one: once the killed
//! worker's lease has expired, the new process takes the partition over, catches up from the
//! checkpoint and goes live. Orders the killed process handled after its last checkpoint are
//! delivered again, and the Stock aggregate ignores them. The story ends with checks, from the log
//! and with plain SQL: every order reserved and paid exactly once, and both stock views equal to
//! what the orders imply. A failed check makes it exit with an error.
//!
//! Run it with `cargo run --release --features postgres --example shop_services`. It starts a
//! throwaway PostgreSQL cluster (`annals-testkit`, from PostgreSQL's server binaries: Debian package
//! `postgresql`), then the three services as child processes of itself, chosen by the environment
//! variable `SHOP_SERVICE`. Its test, `cargo test --features postgres --example shop_services`, runs
//! a shorter story and checks what it tells.
//!
//! The services also run by hand against your own database, each in a terminal of its own
//! (`--schema` defaults to `shop`, `--orders` to 100; `SHOP_URL`, `SHOP_SCHEMA` and `SHOP_ORDERS`
//! work too):
//!
//! ```text
//! cargo run --release --features postgres --example shop_services -- --service setup --url postgres://me@localhost/shop
//! cargo run --release --features postgres --example shop_services -- --service payment --url postgres://me@localhost/shop
//! cargo run --release --features postgres --example shop_services -- --service stock --url postgres://me@localhost/shop
//! cargo run --release --features postgres --example shop_services -- --service order --url postgres://me@localhost/shop --orders 200
//! ```
//!
//! `setup` restocks the warehouse once. `order` places its orders (numbered after those already in
//! the log) and exits. `payment` and `stock` run until their input ends (Ctrl-D) or Ctrl-C, then
//! handle what is left in the log and stop. Kill `stock` with `kill -9` while orders come in and
//! start it again to watch it catch up; `SELECT * FROM shop.stock_levels` shows the read model.
//! Each service prints one line per thing it does, `<service> <what> key=value ...`: the story reads
//! these lines to tell its timeline.

#![allow(clippy::print_stdout)] // printing is what the example is for

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use annals::tokio_postgres::{self, NoTls, Transaction};
use annals::{
    Aggregate, CommandContext, CommandError, Event, EventStore, Handler, HandlerError, LogFilter, Phase, Position,
    PostgresConfig, PostgresStore, ReadLog, RecordedEvent, Repository, SqlProjection, SqlProjector, Subscription,
    SubscriptionConfig, SubscriptionGroup,
};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// How long a service may take to handle what is in the log when it is told to stop.
const PATIENCE: Duration = Duration::from_secs(20);
/// How long the story waits for the next line of any service before it gives up.
const SILENCE: Duration = Duration::from_secs(60);
/// The subscriptions' lease: a worker killed with SIGKILL loses its partitions this long (up to a
/// third more) after its last renewal. Short, so that the restarted stock process soon takes over.
const LEASE_TTL: Duration = Duration::from_secs(1);
/// What the warehouse holds at the start: plenty, so that no order is refused.
const RESTOCK: [(&str, u32); 2] = [("gadget", 5_000), ("widget", 10_000)];
/// How many orders the story places (its test places fewer).
const STORY_ORDERS: u32 = 90;

const SERVICE_VAR: &str = "SHOP_SERVICE";
const URL_VAR: &str = "SHOP_URL";
const SCHEMA_VAR: &str = "SHOP_SCHEMA";
const ORDERS_VAR: &str = "SHOP_ORDERS";

// ---------------------------------------------------------------------------------------------------
// The order service's aggregate, as in shop.rs.

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
// The stock service's aggregate, one stream per item, as in shop.rs.

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
    /// Set goods aside for an order; a second reservation for the same order does nothing, so an
    /// order delivered again after a crash is not reserved twice.
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
    reserved_for: BTreeSet<String>,
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
                self.available = self.available.saturating_sub(*quantity);
                self.reserved_for.insert(order.clone());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The stock service's SQL read model.

/// The table `<schema>.stock_levels (item text primary key, available bigint)`, kept from the stock
/// events by a [`SqlProjector`]: each batch of events and the projection's checkpoint are committed
/// in one transaction, so a killed process applies nothing twice and skips nothing.
struct StockLevelsTable {
    /// The quoted, schema-qualified table name.
    table: String,
}

impl StockLevelsTable {
    fn new(schema: &str) -> Self {
        StockLevelsTable { table: stock_levels_table(schema) }
    }
}

fn stock_levels_table(schema: &str) -> String {
    format!("\"{}\".stock_levels", schema.replace('"', "\"\""))
}

#[async_trait::async_trait]
impl SqlProjection for StockLevelsTable {
    fn name(&self) -> &str {
        "stock-levels"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::all().stream_prefix("stock-")
    }

    async fn setup(&mut self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
        let table = &self.table;
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (item text PRIMARY KEY, available bigint NOT NULL)"
        ))
        .await?;
        Ok(())
    }

    async fn apply(&mut self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), HandlerError> {
        let item = event.stream.as_str().trim_start_matches("stock-");
        let change = match StockEvent::from_recorded(event)? {
            StockEvent::Restocked { quantity } => i64::from(quantity),
            StockEvent::Reserved { quantity, .. } => -i64::from(quantity),
        };
        let table = &self.table;
        tx.execute(
            &format!(
                "INSERT INTO {table} (item, available) VALUES ($1, $2) \
                 ON CONFLICT (item) DO UPDATE SET available = {table}.available + excluded.available"
            ),
            &[&item, &change],
        )
        .await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------
// Which service to run, from the command line or the environment.

/// A service of the shop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    /// Restocks the warehouse.
    Setup,
    /// Places orders.
    Order,
    /// Subscription "payment": marks placed orders paid.
    Payment,
    /// Subscription "stock": reserves the goods of placed orders; keeps `stock_levels`.
    Stock,
}

impl Service {
    fn parse(name: &str) -> Result<Service, String> {
        match name {
            "setup" => Ok(Service::Setup),
            "order" => Ok(Service::Order),
            "payment" => Ok(Service::Payment),
            "stock" => Ok(Service::Stock),
            other => Err(format!("unknown service {other:?}: expected setup, order, payment or stock")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Service::Setup => "setup",
            Service::Order => "order",
            Service::Payment => "payment",
            Service::Stock => "stock",
        }
    }
}

/// What a service process needs to know.
#[derive(Clone, Debug)]
struct Settings {
    service: Service,
    url: String,
    schema: String,
    /// How many orders the order service places.
    orders: u32,
}

impl Settings {
    /// The service named by `--service` or `SHOP_SERVICE`, with the other settings from the flags,
    /// else from the environment; `None` when no service is named (the story runs).
    fn from_args_and_env(args: &[String]) -> Result<Option<Settings>, Box<dyn Error>> {
        let mut values: BTreeMap<&str, String> = BTreeMap::new();
        for (key, var) in [("service", SERVICE_VAR), ("url", URL_VAR), ("schema", SCHEMA_VAR), ("orders", ORDERS_VAR)] {
            if let Ok(value) = std::env::var(var) {
                values.insert(key, value);
            }
        }
        let flags_given = !args.is_empty();
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let key = match flag.as_str() {
                "--service" => "service",
                "--url" => "url",
                "--schema" => "schema",
                "--orders" => "orders",
                other => return Err(Message(format!("unknown argument {other:?}\n{USAGE}")).into()),
            };
            let value = args.next().ok_or_else(|| Message(format!("{flag} needs a value\n{USAGE}")))?;
            values.insert(key, value.clone());
        }
        let Some(service) = values.get("service") else {
            return match flags_given {
                false => Ok(None),
                true => Err(Message(format!("name a service with --service\n{USAGE}")).into()),
            };
        };
        let service = Service::parse(service).map_err(Message)?;
        let url = values
            .get("url")
            .cloned()
            .ok_or_else(|| Message(format!("the {} service needs --url\n{USAGE}", service.name())))?;
        let schema = values.get("schema").cloned().unwrap_or_else(|| "shop".into());
        let orders = match values.get("orders") {
            Some(orders) => orders.parse().map_err(|_| Message(format!("--orders {orders:?} is not a number")))?,
            None => 100,
        };
        Ok(Some(Settings { service, url, schema, orders }))
    }

    /// The environment that makes a process of this example run `service` with these settings.
    fn environment(&self, service: Service) -> [(&'static str, String); 4] {
        [
            (SERVICE_VAR, service.name().to_owned()),
            (URL_VAR, self.url.clone()),
            (SCHEMA_VAR, self.schema.clone()),
            (ORDERS_VAR, self.orders.to_string()),
        ]
    }
}

/// A mistake on the command line (or a failed check), shown as its message.
struct Message(String);

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Message {}

const USAGE: &str =
    "usage: shop_services [--service setup|order|payment|stock --url URL [--schema NAME] [--orders N]]\n\
                     (without --service: the whole story on a throwaway PostgreSQL cluster)";

// ---------------------------------------------------------------------------------------------------
// The services.

/// Runs one service until it is done (setup, order) or told to stop (payment, stock).
async fn serve(settings: Settings) -> Result<(), Box<dyn Error>> {
    let store = PostgresConfig::new(settings.url.as_str()).schema(settings.schema.as_str()).open().await?;
    match settings.service {
        Service::Setup => {
            restock(&store).await?;
            let stock: Vec<String> = RESTOCK.iter().map(|(item, quantity)| format!("{item}={quantity}")).collect();
            say(format!("setup restocked {}", stock.join(" ")));
            Ok(())
        }
        Service::Order => order_service(&store, settings.orders).await,
        Service::Payment => payment_service(store).await,
        Service::Stock => stock_service(store, &settings.schema).await,
    }
}

/// Prints one line for whoever reads this process's output. A reader that went away is no reason
/// to stop serving.
fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn restock(store: &PostgresStore) -> Result<(), Box<dyn Error>> {
    let stock = Repository::<Stock, _>::new(store.clone());
    let context = CommandContext::new().header("service", "warehouse");
    for (item, quantity) in RESTOCK {
        stock.execute(item, StockCommand::Restock { quantity }, &context).await?;
    }
    Ok(())
}

/// The item and quantity of order `n`: widgets in two orders out of three, a gadget in the others.
fn order_line(n: u32) -> (&'static str, u32) {
    if n % 3 == 0 {
        ("gadget", 1)
    } else {
        ("widget", 1 + n % 4)
    }
}

/// The order service: places `count` orders, one every 20 to 30 ms, numbered after those already
/// in the log.
async fn order_service(store: &PostgresStore, count: u32) -> Result<(), Box<dyn Error>> {
    let orders = Repository::<Order, _>::new(store.clone());
    let first = u32::try_from(read(store, LogFilter::all().event_types(["OrderPlaced"])).await?.len())? + 1;
    say(format!("order up first={first} orders={count} pid={}", std::process::id()));
    let context = CommandContext::new().header("service", "order");
    let mut last = Position::ZERO;
    for n in first..first + count {
        let (item, quantity) = order_line(n);
        let place = OrderCommand::Place { item: item.into(), quantity, unit_price_cents: 1250 };
        let committed = orders.execute(&n.to_string(), place, &context).await?;
        last = committed.last_position().ok_or("placing an order wrote nothing")?;
        say(format!("order placed order={n} position={last} item={item} quantity={quantity} at={}", unix_micros()));
        tokio::time::sleep(Duration::from_millis(20 + u64::from(n * 7 % 11))).await;
    }
    say(format!("order done orders={count} last={last}"));
    Ok(())
}

fn unix_micros() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros())
}

fn phase_label(phase: Phase) -> &'static str {
    match phase {
        Phase::CatchUp => "catch-up",
        Phase::Live => "live",
    }
}

fn order_placed_only(name: &str) -> SubscriptionConfig {
    SubscriptionConfig::new(name).filter(LogFilter::all().event_types(["OrderPlaced"])).lease_ttl(LEASE_TTL)
}

/// The payment service's handler: marks every placed order paid (a second delivery does nothing).
struct PaymentService {
    orders: Repository<Order, PostgresStore>,
}

#[async_trait::async_trait]
impl Handler for PaymentService {
    async fn handle(&mut self, event: &RecordedEvent, phase: Phase) -> Result<(), HandlerError> {
        let order = event.stream.as_str().trim_start_matches("order-");
        let context = CommandContext::new().causation_id(event.id.to_string()).header("service", "payment");
        let paid = self.orders.execute(order, OrderCommand::MarkPaid, &context).await?;
        let (position, phase) = (event.position, phase_label(phase));
        match paid.events.first() {
            Some(payment) => {
                let OrderEvent::OrderPaid { amount_cents } = payment.event else { return Ok(()) };
                say(format!(
                    "payment paid order={order} position={position} phase={phase} amount={amount_cents} paid-at={}",
                    payment.position
                ));
            }
            None => say(format!("payment repeat order={order} position={position} phase={phase}")),
        }
        Ok(())
    }
}

async fn payment_service(store: PostgresStore) -> Result<(), Box<dyn Error>> {
    let stop = told_to_stop();
    let checkpoint = Subscription::checkpoint(&store, "payment").await?.unwrap_or(Position::ZERO);
    say(format!("payment up checkpoint={checkpoint} pid={}", std::process::id()));
    let handler = PaymentService { orders: Repository::new(store.clone()) };
    let worker = Subscription::start(store.clone(), order_placed_only("payment"), handler).await?;
    tokio::pin!(stop);
    let stopped = tokio::select! {
        head = worker.caught_up() => {
            say(format!("payment live head={} lag={}", head?, worker.lag()));
            false
        }
        () = &mut stop => true,
    };
    if !stopped {
        stop.await;
    }
    let head = store.head().await?;
    worker.wait_for(head, PATIENCE).await?;
    say(format!("payment drained position={}", worker.position()));
    worker.stop().await?;
    Ok(())
}

/// The stock service's handler: reserves the goods of every placed order with the Stock aggregate.
struct StockService {
    stock: Repository<Stock, PostgresStore>,
    took_over: Arc<Mutex<bool>>,
}

#[async_trait::async_trait]
impl Handler for StockService {
    async fn handle(&mut self, event: &RecordedEvent, phase: Phase) -> Result<(), HandlerError> {
        let OrderEvent::OrderPlaced { item, quantity, .. } = OrderEvent::from_recorded(event)? else {
            return Ok(());
        };
        took_over(&self.took_over);
        let order = event.stream.as_str().trim_start_matches("order-").to_owned();
        let context = CommandContext::new().causation_id(event.id.to_string()).header("service", "stock");
        let reserve = StockCommand::Reserve { order: order.clone(), quantity };
        let (position, phase) = (event.position, phase_label(phase));
        match self.stock.execute(&item, reserve, &context).await {
            Ok(committed) if committed.events.is_empty() => {
                say(format!("stock repeat order={order} position={position} phase={phase} item={item}"));
            }
            Ok(_) => {
                let left = self.stock.load(&item).await?.state.available;
                say(format!(
                    "stock reserved order={order} position={position} phase={phase} item={item} quantity={quantity} left={left}"
                ));
            }
            Err(CommandError::Rejected(StockError::OutOfStock { available, requested })) => say(format!(
                "stock refused order={order} position={position} phase={phase} item={item} available={available} requested={requested}"
            )),
            Err(error) => return Err(error.into()),
        }
        Ok(())
    }
}

/// Says, once, that this process holds the stock subscription's partition: before the first order
/// it handles, or when the poll in [`stock_service`] sees it first.
fn took_over(said: &Mutex<bool>) {
    let mut said = said.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !*said {
        say(format!("stock took-over pid={}", std::process::id()));
        *said = true;
    }
}

async fn stock_service(store: PostgresStore, schema: &str) -> Result<(), Box<dyn Error>> {
    let stop = told_to_stop();
    let checkpoint = Subscription::checkpoint(&store, "stock").await?.unwrap_or(Position::ZERO);
    let levels = SqlProjector::start(store.clone(), StockLevelsTable::new(schema)).await?;
    say(format!("stock up checkpoint={checkpoint} levels={} pid={}", levels.position(), std::process::id()));
    // Checkpoints at most every 500 ms: a process killed in between leaves handled orders after its
    // checkpoint, which its successor gets again (at-least-once) and the Stock aggregate ignores.
    let config = order_placed_only("stock").checkpoint_interval(Duration::from_millis(500));
    let group = SubscriptionGroup::new(store.clone(), config).await?;
    let said = Arc::new(Mutex::new(false));
    let worker =
        group.join(StockService { stock: Repository::new(store.clone()), took_over: Arc::clone(&said) }).await?;
    let started = async {
        // A killed predecessor holds the partition until its lease expires.
        while !group.assignment().iter().any(|(id, held)| *id == worker.worker_id() && !held.is_empty()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        took_over(&said);
        let head = worker.caught_up().await?;
        say(format!("stock live head={head} lag={}", worker.lag()));
        let head = levels.caught_up().await?;
        say(format!("stock levels-live head={head}"));
        Ok::<(), annals::Error>(())
    };
    tokio::pin!(stop);
    let stopped = tokio::select! {
        started = started => {
            started?;
            false
        }
        () = &mut stop => true,
    };
    if !stopped {
        stop.await;
    }
    if *said.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
        // Every order in the log reserved, then every reservation in the table.
        worker.wait_for(store.head().await?, PATIENCE).await?;
        levels.wait_for(store.head().await?, PATIENCE).await?;
    }
    say(format!("stock drained position={} levels={}", worker.position(), levels.position()));
    worker.stop().await?;
    levels.stop().await?;
    Ok(())
}

/// Resolves when this process's input ends or Ctrl-C is pressed. Reads the input on a thread of its
/// own: a runtime does not wait for it when it shuts down.
async fn told_to_stop() {
    let (closed, input_ended) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = closed.send(());
    });
    tokio::select! {
        _ = input_ended => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Every event of the log `filter` admits.
async fn read(store: &PostgresStore, filter: LogFilter) -> Result<Vec<RecordedEvent>, annals::Error> {
    store.read_log(ReadLog::from_start().filter(filter)).try_collect().await
}

// ---------------------------------------------------------------------------------------------------
// The story: the services as child processes, and what their lines tell.

/// How the story starts a service: the program is always this one (`current_exe()`).
#[derive(Clone, Copy, Debug)]
pub enum Launch {
    /// The example's binary: its `main` runs the service named in the environment.
    Main,
    /// The example's test binary: libtest runs only the test `tests::service`, which runs the
    /// service named in the environment.
    TestHarness,
}

/// One line a service printed: `<service> <what> key=value ...`.
#[derive(Debug)]
struct Report {
    what: String,
    fields: BTreeMap<String, String>,
}

impl Report {
    /// The report in `line`, if it is one (the test harness prints lines of its own).
    fn parse(line: &str) -> Option<Report> {
        let mut words = line.split_whitespace();
        if !["order", "payment", "stock"].contains(&words.next()?) {
            return None;
        }
        let what = words.next()?.to_owned();
        let fields =
            words.map(|w| w.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))).collect::<Option<_>>()?;
        Some(Report { what, fields })
    }

    fn text(&self, key: &str) -> &str {
        self.fields.get(key).map_or("?", String::as_str)
    }

    fn number(&self, key: &str) -> u64 {
        self.fields.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

/// What a process's output said: a line, or the end of its output.
#[derive(Debug)]
enum Heard {
    Line(&'static str, String),
    Closed(&'static str),
}

/// A service process. Dropping it kills the process (on an early return of the story).
struct Process {
    label: &'static str,
    child: Child,
    input: Option<ChildStdin>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `service` as a child process labelled `label`; its complete lines go to `heard`.
fn spawn(
    launch: Launch,
    settings: &Settings,
    service: Service,
    label: &'static str,
    heard: &mpsc::UnboundedSender<Heard>,
) -> Result<Process, Box<dyn Error>> {
    let mut command = Command::new(std::env::current_exe()?);
    if let Launch::TestHarness = launch {
        command.args(["--exact", "tests::service", "--nocapture", "--test-threads=1"]);
    }
    command.envs(settings.environment(service)).stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = command.spawn()?;
    let input = child.stdin.take();
    let output = child.stdout.take().ok_or("no pipe from the child's stdout")?;
    let heard = heard.clone();
    std::thread::spawn(move || {
        let mut output = BufReader::new(output);
        let mut line = String::new();
        while output.read_line(&mut line).is_ok_and(|n| n > 0) {
            // A line cut short by SIGKILL has no newline: it was never said.
            if let Some(complete) = line.strip_suffix('\n') {
                let _ = heard.send(Heard::Line(label, complete.to_owned()));
            }
            line.clear();
        }
        let _ = heard.send(Heard::Closed(label));
    });
    Ok(Process { label, child, input })
}

/// What the story found, for its checks and its test.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every line of the timeline.
    pub lines: Vec<String>,
    /// How many orders were placed.
    pub orders: u32,
    /// The signal that ended the first stock process (9: SIGKILL).
    pub stock_killed_by: Option<i32>,
    /// Orders committed after the first stock process had died and before the second was started.
    pub placed_while_stock_down: Vec<u32>,
    /// Orders the second stock process reserved (its catch-up and live).
    pub reserved_after_restart: Vec<u32>,
    /// Orders the second stock process reserved while catching up.
    pub caught_up_after_restart: Vec<u32>,
    /// Orders the second stock process got again and ignored (the first had reserved them after its
    /// last checkpoint).
    pub redelivered_after_restart: Vec<u32>,
    /// `Reserved` events in the stock streams, per placed order.
    pub reservations: BTreeMap<u32, usize>,
    /// `OrderPaid` events, per placed order.
    pub payments: BTreeMap<u32, usize>,
    /// What is left of each item: restocked minus the quantities of every `OrderPlaced` in the log.
    pub expected_levels: BTreeMap<String, i64>,
    /// What is left of each item according to the Stock aggregates.
    pub aggregate_levels: BTreeMap<String, i64>,
    /// The table `stock_levels`, read with plain SQL on a connection of its own.
    pub sql_levels: BTreeMap<String, i64>,
}

impl Outcome {
    /// Whether each of the `orders` orders has exactly one entry in `counts`.
    fn each_once(&self, counts: &BTreeMap<u32, usize>) -> bool {
        counts.len() == self.orders as usize && counts.values().all(|&n| n == 1)
    }

    /// The checks, one line each, starting with `ok` or `FAILED`.
    pub fn checks(&self) -> Vec<String> {
        let verdict = |ok: bool| if ok { "ok    " } else { "FAILED" };
        let levels = |levels: &BTreeMap<String, i64>| {
            levels.iter().map(|(item, n)| format!("{item} {n}")).collect::<Vec<_>>().join(", ")
        };
        let not_once = |counts: &BTreeMap<u32, usize>| {
            let wrong: Vec<String> =
                counts.iter().filter(|(_, &n)| n != 1).map(|(order, n)| format!("order-{order} {n} times")).collect();
            if wrong.is_empty() {
                String::new()
            } else {
                format!(": {}", wrong.join(", "))
            }
        };
        vec![
            format!(
                "{} {} orders, each reserved exactly once (Reserved events per order, over the stock streams){}",
                verdict(self.each_once(&self.reservations)),
                self.reservations.len(),
                not_once(&self.reservations)
            ),
            format!(
                "{} each paid exactly once (OrderPaid events per order){}",
                verdict(self.each_once(&self.payments)),
                not_once(&self.payments)
            ),
            format!(
                "{} stock levels of the Stock aggregates: {}; restocked minus every OrderPlaced in the log: {}",
                verdict(self.aggregate_levels == self.expected_levels),
                levels(&self.aggregate_levels),
                levels(&self.expected_levels)
            ),
            format!(
                "{} SQL read model, `SELECT item, available FROM {}` on a connection of its own: {}",
                verdict(self.sql_levels == self.expected_levels),
                stock_levels_table("shop"),
                levels(&self.sql_levels)
            ),
        ]
    }

    /// The checks that failed (empty when all passed).
    pub fn failures(&self) -> Vec<String> {
        self.checks().into_iter().filter(|line| line.starts_with("FAILED")).collect()
    }
}

/// The story as it unfolds: the timeline printed so far and what the services said.
struct Story {
    store: PostgresStore,
    heard: mpsc::UnboundedReceiver<Heard>,
    /// Lines heard while waiting for one process's last words, to handle next.
    held: VecDeque<Heard>,
    outcome: Outcome,
    /// Order number -> when its append was acknowledged (µs since the Unix epoch).
    placed_at: BTreeMap<u32, u128>,
    last_placed: u32,
    order_done: bool,
    /// Labels of the processes whose subscription (and read model) caught up.
    live: BTreeSet<&'static str>,
    levels_live: BTreeSet<&'static str>,
    closed: BTreeSet<&'static str>,
    /// The stock subscription's checkpoint while no stock process runs.
    stock_down_at: Option<Position>,
    /// The highest order each stock process reserved.
    reserved_by: BTreeMap<&'static str, u32>,
    /// When the first stock process was killed.
    killed: Option<Instant>,
}

impl Story {
    fn say(&mut self, line: String) {
        println!("{line}");
        self.outcome.lines.push(line);
    }

    /// Handles what the processes say until `done` holds.
    async fn until(&mut self, done: impl Fn(&Story) -> bool) -> Result<(), Box<dyn Error>> {
        while !done(self) {
            let heard = match self.held.pop_front() {
                Some(heard) => heard,
                None => tokio::time::timeout(SILENCE, self.heard.recv())
                    .await
                    .map_err(|_| format!("no service said anything for {SILENCE:?}"))?
                    .ok_or("every service's output closed")?,
            };
            self.hear(heard);
        }
        Ok(())
    }

    /// Handles what `label` said until its output closed; what the others said meanwhile waits.
    async fn last_words_of(&mut self, label: &'static str) -> Result<(), Box<dyn Error>> {
        while !self.closed.contains(label) {
            let heard = tokio::time::timeout(SILENCE, self.heard.recv())
                .await
                .map_err(|_| format!("the output of {label} did not close"))?
                .ok_or("every service's output closed")?;
            match heard {
                Heard::Line(from, _) | Heard::Closed(from) if from == label => self.hear(heard),
                other => self.held.push_back(other),
            }
        }
        Ok(())
    }

    fn hear(&mut self, heard: Heard) {
        let (label, line) = match heard {
            Heard::Line(label, line) => (label, line),
            Heard::Closed(label) => {
                self.closed.insert(label);
                return;
            }
        };
        if let Some(report) = Report::parse(&line) {
            self.tell(label, &report);
        }
    }

    /// Prints a report as a line of the timeline, and notes what it means.
    fn tell(&mut self, label: &'static str, r: &Report) {
        let line = match (label, r.what.as_str()) {
            (_, "up" | "live" | "drained") => self.tell_lifecycle(label, r),
            ("order", _) => self.tell_order(r),
            ("payment", _) => tell_payment(r),
            _ => self.tell_stock(label, r),
        };
        if let Some(line) = line {
            self.say(line);
        }
    }

    /// A service started, caught up, or stopped.
    fn tell_lifecycle(&mut self, label: &'static str, r: &Report) -> Option<String> {
        let service = label.split('#').next().unwrap_or(label);
        let pid = r.text("pid");
        let levels = r.fields.get("levels");
        Some(match (service, r.what.as_str()) {
            ("order", "up") => {
                let (first, count) = (r.number("first"), r.number("orders"));
                format!("order    (pid {pid}) up: orders {first} to {}", first + count.max(1) - 1)
            }
            (_, "up") => format!(
                "  {service:<8} (pid {pid}) up: subscription {service:?} from checkpoint {}{}",
                r.text("checkpoint"),
                levels.map_or(String::new(), |l| format!(", read model stock-levels from {l}"))
            ),
            (_, "live") => {
                self.live.insert(label);
                let (head, lag) = (r.text("head"), r.text("lag"));
                match label {
                    "stock#2" => format!(
                        "  stock    caught up at position {head}: {} missed orders reserved, {} delivered again and \
                         ignored; live from here (lag {lag}: what was appended meanwhile, its reservations included)",
                        self.outcome.caught_up_after_restart.len(),
                        self.outcome.redelivered_after_restart.len()
                    ),
                    _ => format!("  {service:<8} caught up at position {head}: live, lag {lag}"),
                }
            }
            (_, "drained") => format!(
                "  {service:<8} drained: every event up to position {} handled{}; stopped",
                r.text("position"),
                levels.map_or(String::new(), |l| format!(" (stock-levels at {l})"))
            ),
            _ => return None,
        })
    }

    fn tell_order(&mut self, r: &Report) -> Option<String> {
        let (order, position) = (r.number("order") as u32, r.number("position"));
        match r.what.as_str() {
            "placed" => {
                self.last_placed = order;
                self.placed_at.insert(order, r.fields.get("at").and_then(|at| at.parse().ok()).unwrap_or(0));
                let lag = self.stock_down_at.map_or(String::new(), |at| {
                    format!("   (stock down: checkpoint {at}, lag {} events)", position.saturating_sub(at.get()))
                });
                let (quantity, item) = (r.text("quantity"), r.text("item"));
                Some(format!("order    [position {position:>4}] order-{order}: {quantity} x {item} placed{lag}"))
            }
            "done" => {
                self.order_done = true;
                let (orders, last) = (r.text("orders"), r.text("last"));
                Some(format!(
                    "order    all {orders} orders placed (the last at position {last}); the order service exits"
                ))
            }
            _ => None,
        }
    }

    fn tell_stock(&mut self, label: &'static str, r: &Report) -> Option<String> {
        let (order, position, phase) = (r.number("order") as u32, r.number("position"), r.text("phase"));
        let restarted = label == "stock#2";
        Some(match r.what.as_str() {
            "took-over" => {
                let how = match self.killed {
                    Some(killed) if restarted => {
                        let after = killed.elapsed().as_secs_f64();
                        format!(", {after:.1} s after the kill: the killed process's lease expired")
                    }
                    _ => String::new(),
                };
                format!("  stock    (pid {}) holds the partition of \"stock\"{how}", r.text("pid"))
            }
            "reserved" => {
                let most = self.reserved_by.entry(label).or_default();
                *most = (*most).max(order);
                if restarted {
                    self.outcome.reserved_after_restart.push(order);
                    if phase == "catch-up" {
                        self.outcome.caught_up_after_restart.push(order);
                    }
                }
                let (quantity, item, left) = (r.text("quantity"), r.text("item"), r.text("left"));
                format!("  stock    [{phase:>8}] order-{order} (position {position}): {quantity} x {item} reserved, {left} left")
            }
            "repeat" => {
                if restarted {
                    self.outcome.redelivered_after_restart.push(order);
                }
                format!("  stock    [{phase:>8}] order-{order} (position {position}): delivered again, already reserved: ignored")
            }
            "refused" => {
                let (available, item, requested) = (r.text("available"), r.text("item"), r.text("requested"));
                format!("  stock    [{phase:>8}] order-{order}: only {available} {item} left, {requested} asked")
            }
            "levels-live" => {
                self.levels_live.insert(label);
                format!("  stock    read model stock-levels caught up at position {}: live", r.text("head"))
            }
            _ => return None,
        })
    }
}

fn tell_payment(r: &Report) -> Option<String> {
    let (order, phase) = (r.text("order"), r.text("phase"));
    match r.what.as_str() {
        "paid" => {
            let (amount, at) = (r.text("amount"), r.text("paid-at"));
            Some(format!("  payment  [{phase:>8}] order-{order} paid {amount} cents (event at position {at})"))
        }
        "repeat" => Some(format!("  payment  [{phase:>8}] order-{order}: already paid, ignored")),
        _ => None,
    }
}

/// Runs the whole story: a throwaway cluster, setup, the three services, the kill, the restart, and
/// the checks. `orders` orders are placed; the stock process is killed once it reserved the first
/// third, and restarted once two thirds were placed.
pub async fn story(launch: Launch, orders: u32) -> Result<Outcome, Box<dyn Error>> {
    let cluster = tokio::task::spawn_blocking(annals_testkit::PgCluster::start).await??;
    let outcome = story_on(launch, &cluster.url(), orders).await;
    tokio::task::spawn_blocking(move || drop(cluster)).await?;
    outcome
}

async fn story_on(launch: Launch, url: &str, orders: u32) -> Result<Outcome, Box<dyn Error>> {
    let settings = Settings { service: Service::Order, url: url.to_owned(), schema: "shop".into(), orders };
    let store = PostgresConfig::new(url).schema(settings.schema.as_str()).open().await?;
    let (tell, heard) = mpsc::unbounded_channel();
    let mut story = Story {
        store: store.clone(),
        heard,
        held: VecDeque::new(),
        outcome: Outcome { orders, ..Outcome::default() },
        placed_at: BTreeMap::new(),
        last_placed: 0,
        order_done: false,
        live: BTreeSet::new(),
        levels_live: BTreeSet::new(),
        closed: BTreeSet::new(),
        stock_down_at: None,
        reserved_by: BTreeMap::new(),
        killed: None,
    };
    story.say(format!("Annals shop across processes: one event log in PostgreSQL at {url}, schema \"shop\""));
    restock(&store).await?;
    let stocked: Vec<String> = RESTOCK.iter().map(|(item, quantity)| format!("{quantity} x {item}")).collect();
    story.say(format!("warehouse: restocked {}", stocked.join(", ")));

    story.say("\n== starting the payment and stock services ==".into());
    let mut payment = spawn(launch, &settings, Service::Payment, "payment", &tell)?;
    let stock = spawn(launch, &settings, Service::Stock, "stock#1", &tell)?;
    story.until(|s| s.live.contains("payment") && s.levels_live.contains("stock#1")).await?;

    let (kill_after, restart_after) = (orders / 3, orders * 2 / 3);
    story.say(format!("\n== all services up: the order service places {orders} orders, one every 20 to 30 ms =="));
    let order = spawn(launch, &settings, Service::Order, "order", &tell)?;
    story.until(|s| s.reserved_by.get("stock#1").is_some_and(|&n| n >= kill_after)).await?;

    let (killed_at, checkpoint) = story.kill(stock).await?;
    story.until(|s| s.last_placed >= restart_after).await?;
    let restarted_at = unix_micros();
    let head = store.head().await?;
    let mut stock = spawn(launch, &settings, Service::Stock, "stock#2", &tell)?;
    story.stock_down_at = None;
    story.say(format!(
        "\n== stock process restarted (pid {}) after order-{}: {} events behind (checkpoint {checkpoint}, head {head}); \
         it takes the partition over once the killed process's lease ({LEASE_TTL:?}) has expired ==",
        stock.child.id(),
        story.last_placed,
        head.get() - checkpoint.get(),
    ));

    story.until(|s| s.order_done && s.closed.contains("order") && s.levels_live.contains("stock#2")).await?;
    drop(order);
    story.outcome.placed_while_stock_down =
        story.placed_at.iter().filter(|(_, &at)| at > killed_at && at < restarted_at).map(|(&n, _)| n).collect();
    story.say("\n== every order placed: payment and stock finish what is in the log and stop ==".into());
    // Their input closes: they drain and exit.
    payment.input = None;
    stock.input = None;
    story.until(|s| s.closed.contains("payment") && s.closed.contains("stock#2")).await?;
    for process in [&mut payment, &mut stock] {
        let status = process.child.wait()?;
        if !status.success() {
            return Err(format!("the {} process failed ({status})", process.label).into());
        }
    }

    check(&mut story, url).await?;
    Ok(story.outcome)
}

impl Story {
    /// Kills the stock process with SIGKILL and tells what it said before it died; returns when it
    /// died (µs since the Unix epoch) and the checkpoint it left in the database.
    async fn kill(&mut self, mut stock: Process) -> Result<(u128, Position), Box<dyn Error>> {
        stock.child.kill()?;
        let status = stock.child.wait()?;
        let killed_at = unix_micros();
        self.killed = Some(Instant::now());
        self.last_words_of(stock.label).await?;
        let checkpoint = Subscription::checkpoint(&self.store, "stock").await?.unwrap_or(Position::ZERO);
        self.outcome.stock_killed_by = status.signal();
        self.stock_down_at = Some(checkpoint);
        self.say(format!(
            "\n== stock process (pid {}) KILLED with SIGKILL ({status}) after order-{}; its checkpoint in the \
             database: position {checkpoint}; orders keep coming ==",
            stock.child.id(),
            self.last_placed,
        ));
        Ok((killed_at, checkpoint))
    }
}

/// Counts, from the log and with plain SQL, what the story came to, and prints the checks.
async fn check(story: &mut Story, url: &str) -> Result<(), Box<dyn Error>> {
    let store = story.store.clone();
    let outcome = &mut story.outcome;
    let order_of = |event: &RecordedEvent| event.stream.as_str().trim_start_matches("order-").parse::<u32>();
    outcome.expected_levels =
        RESTOCK.iter().map(|(item, quantity)| ((*item).to_owned(), i64::from(*quantity))).collect();
    for event in read(&store, LogFilter::all().event_types(["OrderPlaced"])).await? {
        outcome.reservations.insert(order_of(&event)?, 0);
        outcome.payments.insert(order_of(&event)?, 0);
        if let OrderEvent::OrderPlaced { item, quantity, .. } = OrderEvent::from_recorded(&event)? {
            *outcome.expected_levels.entry(item).or_default() -= i64::from(quantity);
        }
    }
    for event in read(&store, LogFilter::all().stream_prefix("stock-").event_types(["Reserved"])).await? {
        if let StockEvent::Reserved { order, .. } = StockEvent::from_recorded(&event)? {
            *outcome.reservations.entry(order.parse()?).or_default() += 1;
        }
    }
    for event in read(&store, LogFilter::all().event_types(["OrderPaid"])).await? {
        *outcome.payments.entry(order_of(&event)?).or_default() += 1;
    }
    let stock = Repository::<Stock, _>::new(store.clone());
    for (item, _) in RESTOCK {
        outcome.aggregate_levels.insert(item.to_owned(), i64::from(stock.load(item).await?.state.available));
    }
    // Another connection, as any program reading the model would use.
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    let connection = tokio::spawn(connection);
    for row in client.query(&format!("SELECT item, available FROM {}", stock_levels_table("shop")), &[]).await? {
        outcome.sql_levels.insert(row.try_get(0)?, row.try_get(1)?);
    }
    drop(client);
    let _ = connection.await;

    story.say("\n== checks, from the log and with plain SQL ==".into());
    for line in story.outcome.checks() {
        story.say(line);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(settings) = Settings::from_args_and_env(&args)? {
        return serve(settings).await;
    }
    let outcome = story(Launch::Main, STORY_ORDERS).await?;
    match outcome.failures() {
        failures if failures.is_empty() => Ok(()),
        failures => Err(Message(format!("{} check(s) failed:\n{}", failures.len(), failures.join("\n"))).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service process of the story's test: the story runs this test binary again with only this
    /// test and `SHOP_SERVICE` set. Without `SHOP_SERVICE` (every ordinary test run) it does nothing.
    #[test]
    fn service() -> Result<(), Box<dyn Error>> {
        let Some(settings) = Settings::from_args_and_env(&[])? else { return Ok(()) };
        // libtest may have printed "test tests::service ... " without a newline.
        say(String::new());
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?.block_on(serve(settings))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_killed_stock_process_is_replaced_and_every_order_is_handled_exactly_once() -> Result<(), Box<dyn Error>>
    {
        let orders = 45;
        let outcome = story(Launch::TestHarness, orders).await?;

        // The stock process was killed with SIGKILL while orders were being placed: some were
        // committed after it had died and before its successor started.
        assert_eq!(outcome.stock_killed_by, Some(9), "SIGKILL");
        assert!(!outcome.placed_while_stock_down.is_empty(), "orders placed while stock was down");
        for n in &outcome.placed_while_stock_down {
            assert!(outcome.reserved_after_restart.contains(n), "order-{n} reserved by the restarted process");
        }
        assert!(!outcome.caught_up_after_restart.is_empty(), "the restarted process caught up on missed orders");
        assert!(outcome.lines.iter().any(|l| l.starts_with("  stock    caught up at position")), "it went live");

        // Every order handled exactly once, counted in the log.
        assert_eq!(outcome.reservations.len(), orders as usize);
        for (order, count) in &outcome.reservations {
            assert_eq!(*count, 1, "order-{order} reserved {count} times");
        }
        assert_eq!(outcome.payments.len(), orders as usize);
        for (order, count) in &outcome.payments {
            assert_eq!(*count, 1, "order-{order} paid {count} times");
        }

        // Both stock views equal the independent computation.
        let widgets_ordered: i64 =
            (1..=orders).map(order_line).filter(|(item, _)| *item == "widget").map(|(_, q)| i64::from(q)).sum();
        assert_eq!(outcome.expected_levels["widget"], 10_000 - widgets_ordered);
        assert_eq!(outcome.aggregate_levels, outcome.expected_levels);
        assert_eq!(outcome.sql_levels, outcome.expected_levels);
        assert!(outcome.failures().is_empty(), "{:?}", outcome.failures());
        Ok(())
    }
}
