//! The store conformance suite: every property in `docs/guarantees.md` marked *conformance*, checked
//! against every [`EventStore`](annals::EventStore) implementation with the very same code.
//!
//! Each check in `tests/conformance/` is written once, generic over the store; the `conformance_suite!`
//! macro below makes one test per check and backend, named `<backend>::<property>`. Run one backend
//! with `cargo test --test store_conformance sled_store::`. To add a backend, implement
//! `conformance::Backend` for it in `tests/conformance/backends.rs` and add one
//! `conformance_suite!` line at the bottom of this file.
#![allow(missing_docs)]

mod conformance;
#[cfg(feature = "postgres")]
mod common {
    #[path = "../common/postgres.rs"]
    pub(crate) mod postgres;
}

/// One test per check, for the backend `$backend`, in a module named `$module`.
///
/// `store:` checks get a fresh, empty store with the default config; `backend:` checks open their own
/// stores (to configure them differently).
macro_rules! conformance_suite {
    ($module:ident, $backend:ty) => {
        mod $module {
            conformance_suite!(@tests $backend;
                store: append::a_new_stream_accepts_no_stream_exact_zero_and_any,
                store: append::versions_start_at_1_per_stream_and_positions_are_gap_free_across_streams,
                store: append::each_append_continues_at_the_version_the_previous_one_returned,
                store: optimistic_concurrency::a_wrong_exact_version_is_rejected_with_the_actual_version,
                store: optimistic_concurrency::no_stream_is_rejected_when_the_stream_exists,
                store: optimistic_concurrency::stream_exists_is_rejected_when_the_stream_is_missing,
                store: optimistic_concurrency::a_stream_prefix_of_another_does_not_share_its_version,
                store: multi_stream::a_multi_stream_append_with_one_failing_expectation_writes_nothing,
                store: multi_stream::a_multi_stream_append_answers_per_stream_in_order_with_contiguous_positions,
                store: bad_input::an_append_without_events_is_rejected,
                store: bad_input::a_multi_stream_append_without_streams_is_rejected,
                store: bad_input::a_stream_named_twice_in_one_multi_stream_append_is_rejected,
                store: bad_input::invalid_stream_names_are_rejected_and_the_longest_valid_one_is_stored,
                store: bad_input::invalid_event_types_are_rejected,
                store: bad_input::stream_names_event_types_and_checkpoint_names_follow_one_rule,
                backend: bad_input::events_over_the_maximum_size_are_rejected,
                store: bad_input::payloads_that_are_not_json_are_rejected,
                store: bad_input::payloads_that_do_not_read_back_are_rejected,
                store: bad_input::an_event_id_repeated_within_one_append_is_rejected,
                store: idempotency::a_retried_append_returns_the_original_result_and_stores_nothing,
                store: idempotency::a_retry_is_recognised_even_when_its_expected_version_no_longer_holds,
                store: idempotency::a_retried_multi_stream_append_returns_the_original_results,
                store: idempotency::a_retry_of_part_of_an_earlier_append_returns_the_stored_part,
                store: idempotency::an_append_reusing_a_stored_id_among_new_ids_is_rejected,
                store: idempotency::an_append_reusing_stored_ids_in_another_stream_is_rejected,
                store: stream_reads::reading_a_missing_stream_yields_nothing,
                store: stream_reads::a_stream_reads_forward_and_backward_from_a_version_with_a_limit,
                store: stream_reads::until_version_and_until_position_bound_a_stream_read_in_both_directions,
                store: stream_reads::until_recorded_bounds_a_stream_read_to_what_was_recorded_by_then,
                store: stream_reads::until_occurred_filters_by_business_time_and_reads_past_later_events,
                store: stream_reads::stream_reads_page_past_512_events,
                store: stream_reads::list_streams_gives_every_stream_with_its_version_by_name_and_filters_by_prefix,
                store: log_reads::log_reads_start_at_a_position_and_stop_at_a_limit_or_position,
                store: log_reads::log_filters_select_by_event_type_stream_prefix_or_both,
                store: log_reads::log_reads_respect_until_recorded_and_until_occurred,
                store: log_reads::log_reads_page_past_512_events,
                store: log_reads::a_type_filtered_read_pages_past_512_matching_events,
                store: log_reads::a_filtered_log_read_crosses_more_non_matching_events_than_one_scan_looks_at,
                store: envelope::every_envelope_field_round_trips_exactly,
                store: envelope::recorded_at_never_decreases_along_the_log,
                store: envelope::an_append_is_recorded_no_earlier_than_the_last_stored_event,
                store: head_and_time::an_empty_store_has_head_zero_and_nothing_to_read,
                store: head_and_time::head_and_stream_version_follow_every_append,
                store: head_and_time::seek_recorded_finds_the_first_event_recorded_at_or_after_a_time,
                store: live::a_head_watch_wakes_on_an_append_from_another_task,
                store: live::many_watchers_are_all_woken_by_one_append,
                store: live::a_task_woken_by_the_head_watch_reads_the_events_at_once,
                store: races::racers_expecting_the_same_version_have_exactly_one_winner,
                store: races::racers_retrying_exact_appends_fill_one_stream_without_gaps_or_duplicates,
                store: races::many_appenders_over_many_streams_keep_log_and_streams_gap_free,
                store: checkpoints::a_saved_checkpoint_loads_back_exactly_and_a_missing_one_is_none,
                store: checkpoints::one_save_applies_saves_and_deletes_together_and_lists_by_prefix_in_name_order,
                store: checkpoints::a_bad_checkpoint_name_is_rejected_and_its_batch_writes_nothing,
                store: restore::an_export_imports_into_an_empty_store_exactly_and_a_second_import_adds_nothing,
                store: restore::restoring_events_that_do_not_continue_the_log_is_refused_and_writes_nothing,
                store: restore::a_restored_batch_is_written_as_one_atomic_append_per_run_of_streams,
                store: restore::an_import_restores_whole_original_groups_and_stops_only_between_them,
                store: snapshots::a_snapshot_loads_back_exactly_and_every_one_is_kept_by_default,
                backend: snapshots::a_save_keeps_the_newest_n_snapshots_of_its_stream_and_deletes_the_others,
                backend: snapshots::readers_and_concurrent_saves_never_find_the_newest_snapshot_gone,
                store: snapshots::an_export_with_snapshots_imports_every_snapshot_exactly,
                store: snapshots::an_imported_snapshot_past_its_stream_is_left_out_and_one_not_json_is_refused,
                backend: snapshots::a_copy_and_an_import_keep_only_what_the_target_retains,
                store: lifecycle::a_soft_deleted_stream_reads_as_missing_and_starts_again_at_the_next_version,
                store: lifecycle::a_delete_checks_the_expected_version_and_changes_nothing_when_it_fails,
                store: lifecycle::a_hard_deleted_stream_refuses_every_read_and_append_forever,
                store: lifecycle::truncation_hides_versions_below_it_only_moves_forward_and_keeps_snapshots,
                store: lifecycle::a_scavenge_removes_what_reads_no_longer_show_and_positions_never_change,
                store: lifecycle::scavenge_steps_resume_anywhere_and_one_stream_can_be_scavenged_alone,
                store: lifecycle::retention_rules_by_count_and_age_are_applied_by_a_scavenge,
                store: lifecycle::a_scavenge_interrupted_between_steps_resumes_from_its_checkpoint,
            );
        }
    };
    (@tests $backend:ty; $($kind:ident : $group:ident :: $check:ident),* $(,)?) => {
        $(conformance_suite!(@test $kind $backend; $group::$check);)*
    };
    (@test store $backend:ty; $group:ident :: $check:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $check() -> crate::conformance::TestResult {
            let fixture = <$backend as crate::conformance::Backend>::open(None).await?;
            crate::conformance::$group::$check(&fixture.store).await
        }
    };
    (@test backend $backend:ty; $group:ident :: $check:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $check() -> crate::conformance::TestResult {
            crate::conformance::$group::$check::<$backend>().await
        }
    };
}

conformance_suite!(memory_store, crate::conformance::backends::Memory);
conformance_suite!(sled_store, crate::conformance::backends::Sled);
#[cfg(feature = "postgres")]
conformance_suite!(postgres_store, crate::conformance::backends::Postgres);
