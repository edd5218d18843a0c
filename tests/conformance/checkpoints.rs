//! Checkpoints: named consumers' progress and saved state, written atomically beside the log.

use annals::{Checkpoint, CheckpointWrite, Error, Position, MAX_CHECKPOINT_NAME_LEN};

use super::{TestResult, TestStore};

pub(crate) async fn a_saved_checkpoint_loads_back_exactly_and_a_missing_one_is_none<S: TestStore>(
    store: &S,
) -> TestResult {
    assert_eq!(store.load_checkpoint("orders").await?, None);
    let bare = Checkpoint::new("orders", Position::new(41));
    let with_state = Checkpoint::new("totals", Position::new(7)).with_state(r#"{"count":3,"name":"é"}"#);
    store
        .save_checkpoints(vec![CheckpointWrite::Save(bare.clone()), CheckpointWrite::Save(with_state.clone())])
        .await?;
    assert_eq!(store.load_checkpoint("orders").await?, Some(bare));
    assert_eq!(store.load_checkpoint("totals").await?, Some(with_state));

    let moved = Checkpoint::new("orders", Position::new(99)).with_state("[]");
    store.save_checkpoints(vec![CheckpointWrite::Save(moved.clone())]).await?;
    assert_eq!(store.load_checkpoint("orders").await?, Some(moved));
    Ok(())
}

pub(crate) async fn one_save_applies_saves_and_deletes_together_and_lists_by_prefix_in_name_order<S: TestStore>(
    store: &S,
) -> TestResult {
    let save = |name: &str, at: u64| CheckpointWrite::Save(Checkpoint::new(name, Position::new(at)));
    store.save_checkpoints(vec![save("sub/b/1", 1), save("sub/b/0", 2), save("sub/a/0", 3), save("sub", 4)]).await?;
    store.save_checkpoints(vec![CheckpointWrite::Delete("sub/b/1".into()), save("sub/b/2", 5)]).await?;
    // Deleting what does not exist is not an error.
    store.save_checkpoints(vec![CheckpointWrite::Delete("nothing".into())]).await?;

    let names = |list: Vec<Checkpoint>| list.into_iter().map(|c| c.name).collect::<Vec<_>>();
    assert_eq!(names(store.list_checkpoints("sub/b/").await?), ["sub/b/0", "sub/b/2"]);
    assert_eq!(names(store.list_checkpoints("").await?), ["sub", "sub/a/0", "sub/b/0", "sub/b/2"]);
    assert_eq!(names(store.list_checkpoints("zzz").await?), Vec::<String>::new());
    Ok(())
}

pub(crate) async fn a_bad_checkpoint_name_is_rejected_and_its_batch_writes_nothing<S: TestStore>(
    store: &S,
) -> TestResult {
    let longest = "n".repeat(MAX_CHECKPOINT_NAME_LEN);
    for bad in [String::new(), "n".repeat(MAX_CHECKPOINT_NAME_LEN + 1), "a\nb".to_owned()] {
        let batch = vec![
            CheckpointWrite::Save(Checkpoint::new("good", Position::new(1))),
            CheckpointWrite::Save(Checkpoint::new(bad.clone(), Position::new(1))),
        ];
        let result = store.save_checkpoints(batch).await;
        assert!(matches!(result, Err(Error::InvalidCheckpointName { ref name, .. }) if *name == bad), "{result:?}");
        assert!(matches!(store.load_checkpoint(&bad).await, Err(Error::InvalidCheckpointName { .. })));
    }
    assert_eq!(store.load_checkpoint("good").await?, None);
    store.save_checkpoints(vec![CheckpointWrite::Save(Checkpoint::new(longest.clone(), Position::new(2)))]).await?;
    assert_eq!(store.load_checkpoint(&longest).await?.map(|c| c.position), Some(Position::new(2)));
    Ok(())
}
