//! What an operator sees of a running Annals application: its metrics, scraped from a Prometheus
//! endpoint, and its logs. A small shop on an embedded sled store in a temporary directory: orders
//! come in; a payment service and a stock service follow them through durable subscriptions. The
//! stock service cannot reserve discontinued items, so those orders are parked; it is stopped while
//! orders keep coming (its lag grows) and started again (it catches up and its lag goes back to 0).
//!
//! The example installs `metrics-exporter-prometheus`, serving Prometheus text on
//! `127.0.0.1:PORT` (`--metrics-port N`; by default a free port the OS picks, printed at start),
//! and a `tracing-subscriber` fmt logger at info level on stderr. At each step it scrapes its own
//! endpoint over HTTP and prints the lines an operator would watch: `annals_consumer_lag` and
//! `annals_parked` for the stock subscription (docs/observability.md lists every metric), and
//! `shop_orders_placed`, a gauge of the example's own. Then it exits.
//!
//! Run it with `cargo run --example shop_metrics` (add `-- --metrics-port 9464` to pick the port).
//! Its test, `cargo test --all-features --example shop_metrics`, runs the story and checks the
//! scraped text.

#![allow(clippy::print_stdout)] // printing is what the example is for

use std::error::Error;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use annals::{
    handler_fn, Event, EventStore, ExpectedVersion, HandlerError, LogFilter, OnFailure, Phase, Position, RecordedEvent,
    RetryPolicy, SledStore, StreamId, Subscription, SubscriptionConfig, SubscriptionHandle,
};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde::{Deserialize, Serialize};

/// How long a service may take to handle what was just appended, and a metric to show it.
const PATIENCE: Duration = Duration::from_secs(10);

/// Items the warehouse no longer has: the stock service fails on their orders, which get parked.
const DISCONTINUED: [&str; 1] = ["typewriter"];

// ---------------------------------------------------------------------------------------------------
// The domain: orders, payments, reservations.

/// What happens to an order.
#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
enum OrderEvent {
    /// A customer placed the order.
    OrderPlaced { item: String, quantity: u32 },
}

/// What the payment service records, in `payment-<order>`.
#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
enum PaymentEvent {
    /// The money was taken.
    PaymentTaken { order: String },
}

/// What the stock service records, in `reservation-<order>`.
#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
enum StockEvent {
    /// Goods were set aside for the order.
    Reserved { item: String, quantity: u32 },
}

/// The item and quantity of order `n`: every fifth order is for a discontinued typewriter.
fn order_line(n: u32) -> (&'static str, u32) {
    match n % 5 {
        3 => ("typewriter", 1),
        0 => ("gadget", 2),
        _ => ("widget", 1 + n % 3),
    }
}

/// Appends `event` as the first event of `stream`; a redelivered event finds it there and does
/// nothing (subscriptions deliver at least once).
async fn record_once(store: &SledStore, stream: String, event: impl Event) -> Result<(), HandlerError> {
    let stream = StreamId::new(stream)?;
    match store.append(&stream, ExpectedVersion::NoStream, vec![event.to_new_event()?]).await {
        Ok(_) | Err(annals::Error::WrongExpectedVersion { .. }) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The payment service: takes the money of every order.
async fn start_payment(store: &SledStore) -> Result<SubscriptionHandle, annals::Error> {
    let own = store.clone();
    let handler = handler_fn(move |event: RecordedEvent, _phase: Phase| {
        let store = own.clone();
        async move {
            let order = event.stream.as_str().to_owned();
            record_once(&store, format!("payment-{order}"), PaymentEvent::PaymentTaken { order }).await
        }
    });
    let config = SubscriptionConfig::new("payment").filter(LogFilter::all().event_types(["OrderPlaced"]));
    Subscription::start(store.clone(), config, handler).await
}

/// The stock service: reserves the goods of every order, and fails on discontinued items. It does
/// not retry (a discontinued item stays discontinued): the event is parked for an operator.
async fn start_stock(store: &SledStore) -> Result<SubscriptionHandle, annals::Error> {
    let own = store.clone();
    let handler = handler_fn(move |event: RecordedEvent, _phase: Phase| {
        let store = own.clone();
        async move {
            let OrderEvent::OrderPlaced { item, quantity } = OrderEvent::from_recorded(&event)?;
            if DISCONTINUED.contains(&item.as_str()) {
                return Err(format!("{item} is discontinued, cannot reserve it for {}", event.stream).into());
            }
            record_once(&store, format!("reservation-{}", event.stream), StockEvent::Reserved { item, quantity }).await
        }
    });
    let config = SubscriptionConfig::new("stock")
        .filter(LogFilter::all().event_types(["OrderPlaced"]))
        .retry(RetryPolicy::never())
        .on_failure(OnFailure::Park);
    Subscription::start(store.clone(), config, handler).await
}

/// Places order `n`, and counts it in the example's own gauge.
async fn place(store: &SledStore, n: u32) -> Result<Position, Box<dyn Error>> {
    let (item, quantity) = order_line(n);
    let event = OrderEvent::OrderPlaced { item: item.to_owned(), quantity };
    let stream = StreamId::new(format!("order-{n}"))?;
    let appended = store.append(&stream, ExpectedVersion::NoStream, vec![event.to_new_event()?]).await?;
    metrics::gauge!("shop.orders.placed").set(f64::from(n));
    println!("order-{n}: {quantity} x {item} placed");
    Ok(appended.last_position)
}

/// Waits until every service has handled every event, its own appends included: the log is quiet.
async fn settle(store: &SledStore, services: &[&SubscriptionHandle]) -> Result<(), Box<dyn Error>> {
    loop {
        let head = store.head().await?;
        for service in services {
            service.wait_for(head, PATIENCE).await?;
        }
        if store.head().await? == head {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The metrics endpoint and scraping it.

/// Installs the Prometheus exporter on `127.0.0.1:port` (a free port when `port` is 0) and returns
/// the port it serves on. The exporter runs on a thread and runtime of its own, so it serves scrapes
/// whatever the application's runtime is doing.
fn install_exporter(port: u16) -> Result<u16, Box<dyn Error>> {
    let mut tries = 0;
    loop {
        // The exporter takes an address, not a listener: ask the OS for a free port, let it go, and
        // hand it over. Another process may take it in between; then pick another.
        let chosen = match port {
            0 => TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port(),
            port => port,
        };
        let builder = PrometheusBuilder::new().with_http_listener(SocketAddr::from((Ipv4Addr::LOCALHOST, chosen)));
        // Installed from a thread outside any runtime, the exporter starts its own.
        let installed = std::thread::spawn(move || builder.install())
            .join()
            .map_err(|_| "the thread installing the metrics exporter panicked")?;
        match installed {
            Ok(()) => {
                metrics::describe_gauge!("shop.orders.placed", "orders placed since the example started");
                return Ok(chosen);
            }
            Err(error) if port == 0 && tries < 3 => {
                tracing::warn!(%error, port = chosen, "cannot serve metrics on that port, trying another");
                tries += 1;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// GETs `/metrics` from `127.0.0.1:port` with a plain HTTP/1.0 request and returns the body.
fn scrape_blocking(port: u16) -> Result<String, Box<dyn Error + Send + Sync>> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.set_write_timeout(Some(PATIENCE))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8(response)?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("the response has no end of headers")?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("the metrics endpoint answered {status:?}").into());
    }
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    if chunked {
        return dechunk(body);
    }
    Ok(body.to_owned())
}

/// The body of a chunked HTTP response (an HTTP/1.0 request should not get one, but a server may).
fn dechunk(mut body: &str) -> Result<String, Box<dyn Error + Send + Sync>> {
    let mut text = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").ok_or("a chunk without its size line")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16)?;
        if size == 0 {
            return Ok(text);
        }
        let chunk = rest.get(..size).ok_or("a chunk shorter than its size")?;
        text.push_str(chunk);
        body = rest.get(size..).unwrap_or_default().trim_start_matches("\r\n");
    }
}

/// Scrapes the endpoint from a blocking thread, off the runtime's workers.
async fn scrape(port: u16) -> Result<String, Box<dyn Error>> {
    let text = tokio::task::spawn_blocking(move || scrape_blocking(port)).await?;
    text.map_err(|error| -> Box<dyn Error> { error })
}

/// Scrapes until `ready` holds or [`PATIENCE`] has passed, and returns the last scrape: metrics are
/// updated by the services as they go, a moment after what they report happened.
async fn scrape_when(port: u16, ready: impl Fn(&Scrape) -> bool) -> Result<Scrape, Box<dyn Error>> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let scrape = Scrape(scrape(port).await?);
        if ready(&scrape) || Instant::now() >= deadline {
            return Ok(scrape);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One scrape of the endpoint: Prometheus text.
#[derive(Clone, Debug)]
pub struct Scrape(pub String);

impl Scrape {
    /// The sample lines of metric `name` whose labels include `label` (`consumer="stock"`).
    fn lines(&self, name: &str, label: &str) -> Vec<&str> {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| match parse_sample(line) {
                Some(sample) => sample.name == name && sample.labels.split(',').any(|l| l == label),
                None => false,
            })
            .collect()
    }

    /// The value of metric `name` with `label`, summed over its series; `None` if it has none.
    pub fn value(&self, name: &str, label: &str) -> Option<f64> {
        let lines = self.lines(name, label);
        let values = lines.iter().filter_map(|line| parse_sample(line).map(|sample| sample.value));
        (!lines.is_empty()).then(|| values.sum())
    }

    /// The value of metric `name` without labels.
    pub fn unlabelled(&self, name: &str) -> Option<f64> {
        self.0.lines().filter_map(parse_sample).find(|s| s.name == name && s.labels.is_empty()).map(|s| s.value)
    }

    /// Every line that is neither a comment, nor blank, nor `name{labels} value` or `name value`.
    pub fn invalid_lines(&self) -> Vec<&str> {
        self.0
            .lines()
            .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
            .filter(|line| parse_sample(line).is_none())
            .collect()
    }

    /// Prints the lines an operator watches for the stock service, and the example's own gauge.
    fn show(&self) {
        for name in [LAG, PARKED, SAVED_LAG, SAVED_PARKED] {
            let label = STOCK;
            match self.lines(name, label).as_slice() {
                [] => println!("  {name}{{{label}}}: (not reported)"),
                lines => lines.iter().for_each(|line| println!("  {line}")),
            }
        }
        if let Some(line) = self.0.lines().find(|line| line.starts_with("shop_orders_placed ")) {
            println!("  {line}");
        }
    }
}

/// One sample line of the Prometheus text format.
#[derive(Debug, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    /// What is between the braces, empty without them.
    labels: &'a str,
    value: f64,
}

/// Parses `name{labels} value [timestamp]` or `name value [timestamp]`.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut name_chars = name.chars();
    let first_ok = name_chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if !first_ok || !name_chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        return None;
    }
    let rest = &line[name_end..];
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inner) => {
            let close = inner.rfind('}')?;
            let labels = &inner[..close];
            let well_formed = labels.split(',').filter(|l| !l.is_empty()).all(|label| {
                label.split_once('=').is_some_and(|(key, value)| {
                    !key.is_empty() && value.len() >= 2 && value.starts_with('"') && value.ends_with('"')
                })
            });
            if !well_formed {
                return None;
            }
            (labels, &inner[close + 1..])
        }
        None => ("", rest),
    };
    let mut fields = rest.strip_prefix(' ')?.split(' ');
    let value = fields.next()?.parse::<f64>().ok()?;
    match (fields.next(), fields.next()) {
        (None, _) => {}
        (Some(timestamp), None) if timestamp.parse::<i64>().is_ok() => {}
        _ => return None,
    }
    Some(Sample { name, labels, value })
}

// ---------------------------------------------------------------------------------------------------
// The story.

/// What the example scraped at each step, for its test.
#[derive(Debug)]
pub struct Outcome {
    /// After orders 1 to 4 (order 3 is for a discontinued item), every service up and settled.
    pub all_up: Scrape,
    /// With the stock service stopped, after orders 5 to 9 (order 8 discontinued).
    pub stock_down: Scrape,
    /// With the stock service back and caught up.
    pub caught_up: Scrape,
}

const LAG: &str = "annals_consumer_lag";
const PARKED: &str = "annals_parked";
/// From the saved checkpoints (`Subscription::record_saved_metrics`): they see a stopped subscription.
const SAVED_LAG: &str = "annals_subscription_checkpoint_lag";
const SAVED_PARKED: &str = "annals_subscription_parked";
const STOCK: &str = "consumer=\"stock\"";

/// Runs the story on a sled store in a temporary directory, the metrics served on `port` (already
/// installed with [`install_exporter`]).
pub async fn run(port: u16) -> Result<Outcome, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path())?;
    tracing::info!(dir = %dir.path().display(), "shop store opened");

    // What an exporter does for subscriptions that may be stopped or elsewhere: read the saved
    // checkpoints now and then.
    let watched = store.clone();
    let saved_metrics = tokio::spawn(async move {
        loop {
            let _ = Subscription::record_saved_metrics(&watched).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let payment = start_payment(&store).await?;
    let stock = start_stock(&store).await?;
    println!("\n== all services up: orders 1 to 4 ==");
    for n in 1..=4 {
        place(&store, n).await?;
    }
    settle(&store, &[&payment, &stock]).await?;
    let all_up = scrape_when(port, |s| {
        s.value(PARKED, STOCK).is_some_and(|parked| parked > 0.0) && s.value(LAG, STOCK) == Some(0.0)
    })
    .await?;
    println!("scraped (stock lag {}, parked {}):", stock.lag(), stock.parked().await?.len());
    all_up.show();

    stock.stop().await?;
    let stopped_at = Subscription::checkpoint(&store, "stock").await?.unwrap_or(Position::ZERO);
    println!("\n== stock service DOWN at checkpoint {stopped_at}: orders 5 to 9 keep coming ==");
    for n in 5..=9 {
        place(&store, n).await?;
    }
    settle(&store, &[&payment]).await?;
    let stock_down = scrape_when(port, |s| {
        s.value(SAVED_LAG, STOCK).is_some_and(|lag| lag > 0.0)
            && s.value(SAVED_PARKED, STOCK).is_some_and(|parked| parked > 0.0)
    })
    .await?;
    let head = store.head().await?;
    println!("scraped (head {head}, stock checkpoint {stopped_at}):");
    stock_down.show();

    println!("\n== stock service back ==");
    let stock = start_stock(&store).await?;
    stock.caught_up().await?;
    settle(&store, &[&payment, &stock]).await?;
    let caught_up = scrape_when(port, |s| {
        s.value(LAG, STOCK) == Some(0.0) && s.value(PARKED, STOCK).is_some_and(|parked| parked > 0.0)
    })
    .await?;
    println!("scraped (stock lag {}, parked {}):", stock.lag(), stock.parked().await?.len());
    caught_up.show();

    payment.stop().await?;
    stock.stop().await?;
    saved_metrics.abort();
    Ok(Outcome { all_up, stock_down, caught_up })
}

/// `--metrics-port N`, or 0 (a free port) without it.
fn metrics_port() -> Result<u16, Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let mut port = 0;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--metrics-port" => port = args.next().ok_or("--metrics-port needs a port")?.parse()?,
            other => return Err(format!("unknown argument {other:?}; the only one is --metrics-port N").into()),
        }
    }
    Ok(port)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let port = metrics_port()?;
    tracing_subscriber::fmt().with_max_level(tracing::Level::INFO).with_writer(std::io::stderr).init();
    let port = install_exporter(port)?;
    println!("metrics: http://127.0.0.1:{port}/metrics");
    run(port).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::OnceLock;

    /// The story, run once for the tests of this binary: the exporter is process-wide.
    fn outcome() -> Result<&'static Outcome, String> {
        static OUTCOME: OnceLock<Result<Outcome, String>> = OnceLock::new();
        let outcome = OUTCOME.get_or_init(|| {
            let _ = tracing_subscriber::fmt().with_max_level(tracing::Level::INFO).with_test_writer().try_init();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(async {
                    let port = install_exporter(0)?;
                    run(port).await
                })
                .map_err(|e| e.to_string())
        });
        outcome.as_ref().map_err(Clone::clone)
    }

    /// What the example registers itself: proves the endpoint, the HTTP and the parsing without the
    /// library's metrics.
    #[test]
    fn every_scrape_is_prometheus_text_with_the_orders_placed_so_far() -> Result<(), Box<dyn Error>> {
        let outcome = outcome()?;
        let steps =
            [("all up", &outcome.all_up), ("stock down", &outcome.stock_down), ("caught up", &outcome.caught_up)];
        for ((step, scrape), placed) in steps.iter().zip([4.0, 9.0, 9.0]) {
            assert_eq!(scrape.invalid_lines(), Vec::<&str>::new(), "{step}: not Prometheus text:\n{}", scrape.0);
            assert_eq!(scrape.unlabelled("shop_orders_placed"), Some(placed), "{step}:\n{}", scrape.0);
        }
        Ok(())
    }

    /// What the library reports, under the names of docs/observability.md.
    #[test]
    fn the_stock_lag_grows_while_it_is_stopped_and_its_parked_orders_show() -> Result<(), Box<dyn Error>> {
        let outcome = outcome()?;
        let lag = |scrape: &Scrape| scrape.value(LAG, STOCK);
        let parked = |scrape: &Scrape| scrape.value(PARKED, STOCK);
        assert_eq!(lag(&outcome.all_up), Some(0.0), "all up:\n{}", outcome.all_up.0);
        assert!(parked(&outcome.all_up).is_some_and(|p| p > 0.0), "all up, order 3 parked:\n{}", outcome.all_up.0);
        // Stopped, the subscription has no worker to report: its saved checkpoint and parked list do.
        let saved_lag = outcome.stock_down.value(SAVED_LAG, STOCK);
        assert!(saved_lag.is_some_and(|l| l >= 5.0), "stock down, 5 orders behind:\n{}", outcome.stock_down.0);
        let saved_parked = outcome.stock_down.value(SAVED_PARKED, STOCK);
        assert_eq!(saved_parked, Some(1.0), "stock down, order 3 parked:\n{}", outcome.stock_down.0);
        assert_eq!(lag(&outcome.caught_up), Some(0.0), "caught up:\n{}", outcome.caught_up.0);
        assert!(parked(&outcome.caught_up).is_some_and(|p| p > 0.0), "caught up, order 8:\n{}", outcome.caught_up.0);
        Ok(())
    }

    #[test]
    fn sample_lines_parse_and_anything_else_is_invalid() {
        let text = Scrape(
            "# TYPE annals_consumer_lag gauge\n\
             annals_consumer_lag{consumer=\"stock\",kind=\"subscription\"} 5\n\
             annals_consumer_lag{consumer=\"payment\",kind=\"subscription\"} 0\n\
             shop_orders_placed 9\n\
             annals_append_duration_seconds{store=\"sled\",quantile=\"0.5\"} 0.00012 1700000000000\n\
             \n"
            .to_owned(),
        );
        assert_eq!(text.invalid_lines(), Vec::<&str>::new());
        assert_eq!(text.value("annals_consumer_lag", "consumer=\"stock\""), Some(5.0));
        assert_eq!(text.value("annals_consumer_lag", "consumer=\"nobody\""), None);
        assert_eq!(text.unlabelled("shop_orders_placed"), Some(9.0));
        for bad in ["lag", "lag five", "lag{consumer=stock} 1", "9lag 1", "lag{consumer=\"s\"}1", "lag 1 2 3"] {
            assert_eq!(Scrape(bad.to_owned()).invalid_lines(), [bad], "{bad:?} is not a sample line");
        }
    }

    #[test]
    fn a_chunked_body_is_put_back_together() -> Result<(), Box<dyn Error + Send + Sync>> {
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")?, "hello world");
        Ok(())
    }
}
