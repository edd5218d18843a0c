//! The derives' output compiles without a warning under strict lints, next to user items that
//! shadow every name generated code could lean on (`Result`, `Vec`, `Option`, `String`, `serde`,
//! `annals`, `core`, `std`, primitive types, constants named like its locals, a trait with a
//! `to_owned` method), and behaves at run time: every payload shape round-trips, names and versions
//! are the declared ones, serde field attributes apply, and `Aggregate` calls the inherent methods.
#![deny(
    warnings,
    rust_2018_idioms,
    unused_qualifications,
    unused_results,
    unused_lifetimes,
    unused_import_braces,
    missing_docs,
    unreachable_pub,
    trivial_casts,
    trivial_numeric_casts,
    unsafe_code,
    non_ascii_idents,
    let_underscore_drop,
    redundant_lifetimes,
    explicit_outlives_requirements,
    missing_copy_implementations,
    missing_debug_implementations,
    variant_size_differences
)]

use annals::{Aggregate, DecodeError, Event};

mod shadowed {
    //! Every item here shadows something that generated code must not resolve to.

    use ::annals::{Aggregate, Event};

    pub(crate) type Result = ();
    pub(crate) struct Vec;
    pub(crate) struct Option;
    pub(crate) struct String;
    pub(crate) struct Box;
    pub(crate) struct Ok;
    pub(crate) struct Err;
    pub(crate) struct Some;
    pub(crate) struct None;
    pub(crate) struct Default;
    pub(crate) mod serde {}
    pub(crate) mod serde_json {}
    pub(crate) mod annals {}
    pub(crate) mod core {}
    pub(crate) mod std {}
    #[allow(non_camel_case_types)]
    pub(crate) struct u32;
    #[allow(non_camel_case_types)]
    pub(crate) struct bool;
    #[allow(non_upper_case_globals)]
    pub(crate) const event_type: () = ();
    #[allow(non_upper_case_globals)]
    pub(crate) const payload: () = ();
    #[allow(non_upper_case_globals)]
    pub(crate) const value: () = ();
    #[allow(non_upper_case_globals)]
    pub(crate) const field0: () = ();
    #[allow(non_upper_case_globals)]
    pub(crate) const serializer: () = ();
    #[allow(non_upper_case_globals)]
    pub(crate) const state: () = ();
    #[allow(non_upper_case_globals)]
    pub(crate) const command: () = ();
    #[allow(non_upper_case_globals)]
    pub(crate) const event: () = ();
    #[allow(non_upper_case_globals)]
    pub(crate) const subject: () = ();
    pub(crate) struct PersonalData;

    /// A method named like the one generated code turns a subject into a string with.
    pub(crate) trait ToString {
        fn to_string(&self) -> ();
    }

    impl ToString for ::core::primitive::u64 {
        fn to_string(&self) {}
    }

    /// A method named like one generated code might call on a `&str`.
    pub(crate) trait ToOwned {
        fn to_owned(&self) -> ();
    }

    impl ToOwned for ::core::primitive::str {
        fn to_owned(&self) {}
    }

    /// Amounts in cents, written as `"12.34"`: a `with` module.
    pub(crate) mod cents {
        pub(crate) fn serialize<S: ::serde::Serializer>(
            amount: &::core::primitive::u64,
            out: S,
        ) -> ::core::result::Result<S::Ok, S::Error> {
            out.collect_str(&::core::format_args!("{}.{:02}", amount / 100, amount % 100))
        }

        pub(crate) fn deserialize<'de, D: ::serde::Deserializer<'de>>(
            deserializer: D,
        ) -> ::core::result::Result<::core::primitive::u64, D::Error> {
            let text = <::std::string::String as ::serde::Deserialize<'de>>::deserialize(deserializer)?;
            let (units, cents) = text.split_once('.').ok_or_else(|| ::serde::de::Error::custom("no `.`"))?;
            let number = |part: &::core::primitive::str| {
                part.parse::<::core::primitive::u64>().map_err(::serde::de::Error::custom)
            };
            ::core::result::Result::Ok(number(units)? * 100 + number(cents)?)
        }
    }

    /// A `serialize_with` function taking the field by reference, as serde expects.
    pub(crate) fn upper<S: ::serde::Serializer>(
        text: &::core::primitive::str,
        out: S,
    ) -> ::core::result::Result<S::Ok, S::Error> {
        out.serialize_str(&text.to_uppercase())
    }

    /// A `skip_serializing_if` predicate taking the field by reference.
    pub(crate) fn is_zero(number: &::core::primitive::u64) -> ::core::primitive::bool {
        *number == 0
    }

    /// A nested payload type with its own serde impls.
    #[derive(::serde::Serialize, ::serde::Deserialize, Debug, PartialEq, Clone, Copy)]
    pub(crate) struct Point {
        pub(crate) x: ::core::primitive::i32,
        pub(crate) y: ::core::primitive::i32,
    }

    #[derive(Event, Debug, PartialEq)]
    #[event(version = 2)]
    #[serde(rename_all_fields = "camelCase")]
    pub(crate) enum AccountEvent {
        /// A struct variant; `nickname` was added later, with a default.
        Opened {
            owner: ::std::string::String,
            #[serde(default, skip_serializing_if = "::core::option::Option::is_none")]
            nick_name: ::core::option::Option<::std::string::String>,
        },
        /// A renamed newtype variant with its own version.
        #[event(name = "MoneyDeposited", version = 3)]
        Deposited(::core::primitive::u64),
        /// A tuple variant with several fields.
        Moved(Point, Point),
        /// A unit variant.
        Closed,
        /// Function-path serde attributes, wrapped for the reference helper.
        #[serde(rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
        Adjusted {
            #[serde(with = "cents")]
            amount: ::core::primitive::u64,
            #[serde(serialize_with = "upper", alias = "why")]
            reason: ::std::string::String,
            #[serde(skip_serializing_if = "is_zero", default)]
            fee: ::core::primitive::u64,
            #[serde(rename = "t", skip_deserializing)]
            tag: ::std::string::String,
        },
    }

    /// Personal data: a subject and personal fields, beside a variant without them.
    #[derive(Event, Debug, PartialEq)]
    pub(crate) enum MemberEvent {
        Joined {
            #[event(subject)]
            member_id: ::core::primitive::u64,
            #[event(personal)]
            email: ::core::option::Option<::std::string::String>,
        },
        Left,
    }

    /// A struct event: its payload is the struct through its own serde derive.
    #[derive(Event, ::serde::Serialize, ::serde::Deserialize, Debug, PartialEq)]
    #[event(name = "order.placed", version = 4)]
    pub(crate) struct OrderPlaced {
        pub(crate) item: ::std::string::String,
        pub(crate) quantity: ::core::primitive::u32,
    }

    #[derive(Debug, PartialEq, Clone, Copy)]
    pub(crate) enum AccountCommand {
        Open,
        Deposit(::core::primitive::u64),
    }

    #[derive(Debug, PartialEq, Clone, Copy)]
    pub(crate) enum AccountError {
        AlreadyOpen,
        NotOpen,
    }

    impl ::core::fmt::Display for AccountError {
        fn fmt(&self, formatter: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
            formatter.write_str(match self {
                AccountError::AlreadyOpen => "already open",
                AccountError::NotOpen => "not open",
            })
        }
    }

    impl ::std::error::Error for AccountError {}

    /// A struct aggregate with the default name and snapshot version.
    #[derive(Aggregate, ::core::default::Default, Debug)]
    #[aggregate(command = AccountCommand, event = AccountEvent, error = AccountError)]
    pub(crate) struct BankAccount {
        pub(crate) open: ::core::primitive::bool,
        pub(crate) balance: ::core::primitive::u64,
    }

    impl BankAccount {
        fn handle(&self, cmd: AccountCommand) -> ::core::result::Result<::std::vec::Vec<AccountEvent>, AccountError> {
            match (cmd, self.open) {
                (AccountCommand::Open, true) => ::core::result::Result::Err(AccountError::AlreadyOpen),
                (AccountCommand::Open, false) => ::core::result::Result::Ok(::std::vec![AccountEvent::Opened {
                    owner: "ann".into(),
                    nick_name: ::core::option::Option::None,
                }]),
                (AccountCommand::Deposit(_), false) => ::core::result::Result::Err(AccountError::NotOpen),
                (AccountCommand::Deposit(amount), true) => {
                    ::core::result::Result::Ok(::std::vec![AccountEvent::Deposited(amount)])
                }
            }
        }

        fn apply(&mut self, happened: &AccountEvent) {
            match happened {
                AccountEvent::Opened { .. } => self.open = true,
                AccountEvent::Deposited(amount) => self.balance += amount,
                _ => {}
            }
        }
    }

    /// An enum aggregate with a name and snapshot version of its own.
    #[derive(Aggregate, ::core::default::Default, Debug, PartialEq)]
    #[aggregate(
        command = (),
        event = OrderPlaced,
        error = ::std::convert::Infallible,
        name = "order",
        snapshot_version = 3
    )]
    pub(crate) enum Order {
        #[default]
        Empty,
        Placed(::core::primitive::u32),
    }

    impl Order {
        fn handle(&self, _: ()) -> ::core::result::Result<::std::vec::Vec<OrderPlaced>, ::std::convert::Infallible> {
            ::core::result::Result::Ok(::std::vec![OrderPlaced { item: "book".into(), quantity: 2 }])
        }

        fn apply(&mut self, placed: &OrderPlaced) {
            *self = Order::Placed(placed.quantity);
        }
    }

    /// Uses every shadowing item, so that none is dead code.
    pub(crate) fn use_the_shadows() {
        let _: Result = ();
        let _ = (Vec, Option, String, Box, Ok, Err, Some, None, Default, u32, bool);
        let _ = (event_type, payload, value, field0, serializer, state, command, event, subject, PersonalData);
        ToOwned::to_owned("");
        ToString::to_string(&7_u64);
    }
}

use shadowed::{AccountCommand, AccountError, AccountEvent, BankAccount, MemberEvent, Order, OrderPlaced, Point};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Encodes `event`, checks the JSON, decodes it back and checks that it is the same event.
fn round_trip(event: &AccountEvent, json: &str) -> TestResult {
    let payload = event.to_payload()?;
    assert_eq!(payload, json, "payload of {event:?}");
    let back = AccountEvent::from_payload(event.event_type(), &payload)?;
    assert_eq!(&back, event);
    Ok(())
}

#[test]
fn names_versions_and_types_are_the_declared_ones() {
    shadowed::use_the_shadows();
    assert_eq!(AccountEvent::event_types(), ["Opened", "MoneyDeposited", "Moved", "Closed", "Adjusted"]);
    assert_eq!(AccountEvent::current_version("Opened"), Some(2));
    assert_eq!(AccountEvent::current_version("MoneyDeposited"), Some(3));
    assert_eq!(AccountEvent::current_version("Deposited"), None);
    assert_eq!(AccountEvent::Closed.event_type(), "Closed");
    assert_eq!(AccountEvent::Closed.schema_version(), 2);
    assert_eq!(AccountEvent::Deposited(5).event_type(), "MoneyDeposited");
    assert_eq!(AccountEvent::Deposited(5).schema_version(), 3);

    assert_eq!(OrderPlaced::event_types(), ["order.placed"]);
    assert_eq!(OrderPlaced::current_version("order.placed"), Some(4));
    assert_eq!(OrderPlaced::current_version("OrderPlaced"), None);
}

#[test]
fn every_payload_shape_round_trips() -> TestResult {
    let opened = AccountEvent::Opened { owner: "ann".into(), nick_name: Some("an".into()) };
    round_trip(&opened, r#"{"owner":"ann","nickName":"an"}"#)?;
    round_trip(&AccountEvent::Deposited(5), "5")?;
    let moved = AccountEvent::Moved(Point { x: 1, y: 2 }, Point { x: 3, y: 4 });
    round_trip(&moved, r#"[{"x":1,"y":2},{"x":3,"y":4}]"#)?;
    round_trip(&AccountEvent::Closed, "{}")?;

    let order = OrderPlaced { item: "book".into(), quantity: 2 };
    let payload = order.to_payload()?;
    assert_eq!(payload, r#"{"item":"book","quantity":2}"#);
    assert_eq!(OrderPlaced::from_payload("order.placed", &payload)?, order);
    Ok(())
}

#[test]
fn a_unit_variant_decodes_from_an_empty_object_or_null() -> TestResult {
    assert_eq!(AccountEvent::from_payload("Closed", "{}")?, AccountEvent::Closed);
    assert_eq!(AccountEvent::from_payload("Closed", "null")?, AccountEvent::Closed);
    assert!(matches!(AccountEvent::from_payload("Closed", "5"), Err(DecodeError::Json(_))));
    Ok(())
}

#[test]
fn function_path_serde_attributes_apply() -> TestResult {
    let adjusted = AccountEvent::Adjusted { amount: 1234, reason: "typo".into(), fee: 0, tag: "x".into() };
    assert_eq!(adjusted.to_payload()?, r#"{"AMOUNT":"12.34","REASON":"TYPO","t":"x"}"#);
    let with_fee = AccountEvent::Adjusted { amount: 5, reason: "a".into(), fee: 7, tag: String::new() };
    assert_eq!(with_fee.to_payload()?, r#"{"AMOUNT":"0.05","REASON":"A","FEE":7,"t":""}"#);

    // `alias`, `default` and `skip_deserializing` on the way back; `deny_unknown_fields` holds.
    let back = AccountEvent::from_payload("Adjusted", r#"{"AMOUNT":"12.34","why":"TYPO"}"#)?;
    assert_eq!(back, AccountEvent::Adjusted { amount: 1234, reason: "TYPO".into(), fee: 0, tag: String::new() });
    let unknown = AccountEvent::from_payload("Adjusted", r#"{"AMOUNT":"1.00","REASON":"","extra":1}"#);
    assert!(matches!(unknown, Err(DecodeError::Json(_))));
    Ok(())
}

#[test]
fn a_payload_written_in_an_older_shape_decodes_with_serde_default() -> TestResult {
    // Written before `nick_name` existed.
    let old = AccountEvent::from_payload("Opened", r#"{"owner":"ann"}"#)?;
    assert_eq!(old, AccountEvent::Opened { owner: "ann".into(), nick_name: None });
    let opened = AccountEvent::Opened { owner: "bo".into(), nick_name: None };
    assert_eq!(opened.to_payload()?, r#"{"owner":"bo"}"#);
    Ok(())
}

#[test]
fn decoding_reports_unknown_types_and_bad_json() {
    let unknown = AccountEvent::from_payload("Deposited", "5");
    assert!(matches!(unknown, Err(DecodeError::UnknownType(ref name)) if name == "Deposited"));
    let unknown = OrderPlaced::from_payload("OrderPlaced", "{}");
    assert!(matches!(unknown, Err(DecodeError::UnknownType(ref name)) if name == "OrderPlaced"));
    assert!(matches!(AccountEvent::from_payload("MoneyDeposited", "\"five\""), Err(DecodeError::Json(_))));
    assert!(matches!(OrderPlaced::from_payload("order.placed", "{}"), Err(DecodeError::Json(_))));
}

#[test]
fn aggregate_calls_the_inherent_methods() -> TestResult {
    assert_eq!(BankAccount::TYPE, "bank_account");
    assert_eq!(BankAccount::SNAPSHOT_VERSION, 1);
    let mut account = BankAccount::default();
    assert_eq!(Aggregate::handle(&account, AccountCommand::Deposit(5)), Err(AccountError::NotOpen));
    for event in Aggregate::handle(&account, AccountCommand::Open)? {
        Aggregate::apply(&mut account, &event);
    }
    for event in Aggregate::handle(&account, AccountCommand::Deposit(5))? {
        Aggregate::apply(&mut account, &event);
    }
    assert!(account.open);
    assert_eq!(account.balance, 5);
    assert_eq!(Aggregate::handle(&account, AccountCommand::Open), Err(AccountError::AlreadyOpen));
    assert_eq!(BankAccount::stream_id("7")?.as_str(), "bank_account-7");

    assert_eq!(Order::TYPE, "order");
    assert_eq!(Order::SNAPSHOT_VERSION, 3);
    let mut order = Order::default();
    for event in Aggregate::handle(&order, ())? {
        Aggregate::apply(&mut order, &event);
    }
    assert_eq!(order, Order::Placed(2));
    Ok(())
}

#[test]
fn an_aggregate_declared_in_a_function_body_works() -> TestResult {
    #[derive(Aggregate, Default)]
    #[aggregate(command = u64, event = AccountEvent, error = AccountError)]
    struct Tally {
        total: u64,
    }

    impl Tally {
        fn handle(&self, amount: u64) -> Result<Vec<AccountEvent>, AccountError> {
            Ok(vec![AccountEvent::Deposited(amount)])
        }

        fn apply(&mut self, event: &AccountEvent) {
            if let AccountEvent::Deposited(amount) = event {
                self.total += amount;
            }
        }
    }

    let mut tally = Tally::default();
    let after =
        annals::testing::given::<Tally>([AccountEvent::Deposited(1)]).when(2).then([AccountEvent::Deposited(2)]);
    assert_eq!(after.total, 3);
    for event in Aggregate::handle(&tally, 3)? {
        Aggregate::apply(&mut tally, &event);
    }
    assert_eq!(tally.total, 3);
    assert_eq!(Tally::TYPE, "tally");
    Ok(())
}

#[test]
fn personal_data_names_its_subject_and_fields() {
    let joined = MemberEvent::Joined { member_id: 7, email: None };
    assert_eq!(joined.personal_data(), Some(annals::PersonalData::new("7", ["email"])));
    assert_eq!(MemberEvent::Left.personal_data(), None);
}
