//! Every policy passes the testkit's conflict strategy suite with the rules its docs promise.

use tidesync_conflict_policies::{
    ClientWins, LastWriteWins, ParkForApp, async_strategy_fn, by_name, strategy_fn,
};
use tidesync_core::{Error, Resolution};
use tidesync_testkit::conflict_suite::{self, Rules, Side, TimeRule};

/// What `ClientWins`, `LastWriteWins` and the server-wins default promise alike.
fn converges_and_ignores_detection(time: TimeRule) -> Rules {
    Rules {
        always: None,
        converged: Some(Resolution::TakeRemote),
        ignores_detected_by: true,
        time,
    }
}

#[test]
fn server_wins_by_name() {
    let strategy =
        by_name("server_wins", &serde_json::Value::Null).expect("server_wins is registered");
    conflict_suite::run_all(
        strategy.as_ref(),
        &Rules {
            always: Some(Resolution::TakeRemote),
            ..converges_and_ignores_detection(TimeRule::Ignored)
        },
    );
}

#[test]
fn client_wins() {
    conflict_suite::run_all(
        &ClientWins,
        &converges_and_ignores_detection(TimeRule::Ignored),
    );
}

#[test]
fn park_for_app() {
    conflict_suite::run_all(
        &ParkForApp,
        &Rules {
            always: Some(Resolution::Park),
            converged: Some(Resolution::Park),
            ignores_detected_by: true,
            time: TimeRule::Ignored,
        },
    );
}

#[test]
fn last_write_wins_ties_and_unknown_times_go_to_the_server() {
    conflict_suite::run_all(
        &LastWriteWins::new(),
        &converges_and_ignores_detection(TimeRule::LastWriteWins {
            tie: Side::Remote,
            unknown: Some(Side::Remote),
        }),
    );
}

/// With a fallback field an unknown `remote_time_ms` is read from the record, so only the tie
/// rule is declared.
#[test]
fn last_write_wins_with_a_timestamp_field() {
    conflict_suite::run_all(
        &LastWriteWins::new().timestamp_field("updatedAt"),
        &converges_and_ignores_detection(TimeRule::LastWriteWins {
            tie: Side::Remote,
            unknown: None,
        }),
    );
    conflict_suite::run_all(
        &LastWriteWins::new().timestamp_field("meta.updatedAt"),
        &converges_and_ignores_detection(TimeRule::LastWriteWins {
            tie: Side::Remote,
            unknown: None,
        }),
    );
}

#[test]
fn custom_strategies() {
    // The example of the docs: local drafts stay, the server wins everything else.
    let drafts_stay = strategy_fn("drafts_stay", |c| {
        let is_draft = |r: &Option<tidesync_core::Record>| {
            r.as_ref()
                .and_then(|r| r.get("draft"))
                .and_then(|v| v.as_bool())
                == Some(true)
        };
        Ok(if is_draft(&c.local) {
            Resolution::KeepLocal
        } else {
            Resolution::TakeRemote
        })
    });
    conflict_suite::run_all(
        &drafts_stay,
        &Rules {
            ignores_detected_by: true,
            time: TimeRule::Ignored,
            ..Rules::default()
        },
    );

    // A closure that panics on some inputs and fails on others: the strategy turns both into
    // errors naming the table and key, and the suite sees no panic.
    let brittle = strategy_fn("brittle", |c| match c.local_hlc % 3 {
        0 => panic!("brittle strategy panics on purpose"),
        1 => Err(Error::internal("brittle strategy fails on purpose")),
        _ => Ok(Resolution::Park),
    });
    conflict_suite::run_all(&brittle, &Rules::default());

    let ask = async_strategy_fn("ask", |conflict| async move {
        tokio::task::yield_now().await;
        Ok(if conflict.remote.is_none() {
            Resolution::Park
        } else {
            Resolution::TakeRemote
        })
    });
    conflict_suite::run_all(
        &ask,
        &Rules {
            ignores_detected_by: true,
            time: TimeRule::Ignored,
            ..Rules::default()
        },
    );
}
