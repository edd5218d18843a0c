//! `on_every_store!(check, ...)`: one test per check and store (memory, sled, and PostgreSQL with the
//! `postgres` feature), in modules `memory_store`, `sled_store` and `postgres_store`. Each check is
//! an `async fn check<S: EventStore ...>(store: S) -> TestResult` of the including file, which also
//! declares `TestResult` and a `postgres_support` module (`common/postgres.rs`).
//! `on_every_store!(multi_thread; check, ...)` runs them on a 4-thread runtime.

macro_rules! on_every_store {
    (@emit $test:meta; $($name:ident),*) => {
        mod memory_store {
            $(
                #[$test]
                async fn $name() -> super::TestResult {
                    super::$name(annals::MemoryStore::new()).await
                }
            )*
        }
        mod sled_store {
            $(
                #[$test]
                async fn $name() -> super::TestResult {
                    let dir = tempfile::tempdir()?;
                    super::$name(annals::SledStore::open(dir.path())?).await
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres_store {
            $(
                #[$test]
                async fn $name() -> super::TestResult {
                    super::$name(crate::postgres_support::fresh_config()?.open().await?).await
                }
            )*
        }
    };
    (multi_thread; $($name:ident),* $(,)?) => {
        on_every_store!(@emit tokio::test(flavor = "multi_thread", worker_threads = 4); $($name),*);
    };
    ($($name:ident),* $(,)?) => {
        on_every_store!(@emit tokio::test; $($name),*);
    };
}
