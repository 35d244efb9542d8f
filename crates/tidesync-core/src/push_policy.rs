//! What the server's answer to one pushed entry means for that entry: the push policy
//! (DESIGN invariants 8 and 11), as one pure function.
//!
//! | answer                                                        | verdict                 | counts toward the dead-letter budget |
//! |---------------------------------------------------------------|-------------------------|--------------------------------------|
//! | 2xx                                                           | acknowledge             | –                                    |
//! | 409, 412 (or what a route's rules call a conflict)            | the table's strategy    | no                                   |
//! | 401, 403                                                      | pause pushing for auth  | no                                   |
//! | 426 (the client is too old)                                   | pause pushing until an upgrade | no                            |
//! | never sent: connect refused, DNS, TLS, connect timeout        | server unreachable      | no                                   |
//! | timeout or reset, while no request of the cycle was answered  | server unreachable      | no                                   |
//! | timeout or reset, while the server answers other requests     | retry later             | yes                                  |
//! | 429                                                           | retry later             | no (the server throttles everyone)   |
//! | 5xx, 408, 425                                                 | retry later             | yes                                  |
//! | any other refusal (other 4xx, an answer that does not decode) | dead letter             | –                                    |
//!
//! An entry is dead-lettered for retryable answers only once `max_failures` answers refused it
//! ([`crate::OutboxEntry::failures`]). An unreachable or hung server is never the entry's
//! fault: however long the network is gone, nothing is dead-lettered for it. The engine stops
//! sending instead (the circuit opens) and probes until the server answers again.

use crate::error::{Error, ErrorKind};

/// What the engine knows when it judges one failed answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judging {
    /// Answers that already refused this entry for now (its [`crate::OutboxEntry::failures`]).
    pub failures: u32,
    /// How many such answers make it a dead letter (at least 1).
    pub max_failures: u32,
    /// The server answered another request of this cycle (so it is reachable and alive).
    pub server_answering: bool,
}

/// What to do with an entry whose push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A version conflict: the table's conflict strategy decides.
    Conflict,
    /// The server refused the credentials: pushing pauses until new ones arrive; the entry
    /// waits, uncharged.
    PauseForAuth,
    /// The server says this client is too old: pushing pauses until a newer version of the
    /// application runs; the entry waits, uncharged.
    PauseForUpgrade,
    /// The server could not be reached or did not answer: the entry goes back uncharged and is
    /// not sent again in this cycle. `certain`: the request never left (connect refused, DNS,
    /// TLS), so one such failure is proof enough that the server is unreachable.
    Unreachable {
        /// The request never reached the server.
        certain: bool,
    },
    /// Send it again after a delay. `charged`: the answer counts toward its budget.
    Retry {
        /// The failure counts toward the entry's dead-letter budget.
        charged: bool,
    },
    /// Retryable answers refused it `max_failures` times: to the dead-letter queue.
    RetriesExhausted,
    /// The server refused it for good (other 4xx, an answer that cannot be decoded).
    Refused,
}

/// Judges one failed push (see the module docs for the table this implements).
pub fn judge(error: &Error, judging: Judging) -> Verdict {
    let charged_retry = || {
        if judging.failures.saturating_add(1) >= judging.max_failures.max(1) {
            Verdict::RetriesExhausted
        } else {
            Verdict::Retry { charged: true }
        }
    };
    match error.kind() {
        ErrorKind::Conflict => Verdict::Conflict,
        ErrorKind::Auth => Verdict::PauseForAuth,
        ErrorKind::UpgradeRequired => Verdict::PauseForUpgrade,
        ErrorKind::Network | ErrorKind::Timeout if error.was_unsent() => {
            Verdict::Unreachable { certain: true }
        }
        ErrorKind::Network | ErrorKind::Timeout if judging.server_answering => charged_retry(),
        ErrorKind::Network | ErrorKind::Timeout => Verdict::Unreachable { certain: false },
        ErrorKind::RateLimited => Verdict::Retry { charged: false },
        ErrorKind::Server => charged_retry(),
        _ => Verdict::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judging(failures: u32, server_answering: bool) -> Judging {
        Judging {
            failures,
            max_failures: 3,
            server_answering,
        }
    }

    fn err(kind: ErrorKind) -> Error {
        Error::new(kind, "test")
    }

    #[test]
    fn conflicts_go_to_the_strategy_and_auth_pauses() {
        for answering in [false, true] {
            let j = judging(0, answering);
            assert_eq!(judge(&err(ErrorKind::Conflict), j), Verdict::Conflict);
            assert_eq!(judge(&err(ErrorKind::Auth), j), Verdict::PauseForAuth);
            assert_eq!(
                judge(&err(ErrorKind::UpgradeRequired), j),
                Verdict::PauseForUpgrade
            );
        }
    }

    #[test]
    fn a_request_that_never_left_is_an_outage_whatever_else_happened() {
        let unsent = err(ErrorKind::Network).unsent();
        for failures in [0, 2, 100] {
            for answering in [false, true] {
                assert_eq!(
                    judge(&unsent, judging(failures, answering)),
                    Verdict::Unreachable { certain: true }
                );
            }
        }
        let connect_timeout = err(ErrorKind::Timeout).unsent();
        assert_eq!(
            judge(&connect_timeout, judging(9, true)),
            Verdict::Unreachable { certain: true }
        );
    }

    #[test]
    fn timeouts_and_resets_count_only_while_the_server_answers_others() {
        for kind in [ErrorKind::Timeout, ErrorKind::Network] {
            // A hung or vanished server: never the entry's fault, however often.
            assert_eq!(
                judge(&err(kind), judging(100, false)),
                Verdict::Unreachable { certain: false }
            );
            // The server answers other requests: this one is singled out.
            assert_eq!(
                judge(&err(kind), judging(0, true)),
                Verdict::Retry { charged: true }
            );
            assert_eq!(
                judge(&err(kind), judging(2, true)),
                Verdict::RetriesExhausted
            );
        }
    }

    #[test]
    fn server_errors_count_and_exhaust_the_budget() {
        let server = err(ErrorKind::Server).status(503);
        assert_eq!(
            judge(&server, judging(0, false)),
            Verdict::Retry { charged: true }
        );
        assert_eq!(
            judge(&server, judging(1, true)),
            Verdict::Retry { charged: true }
        );
        assert_eq!(judge(&server, judging(2, true)), Verdict::RetriesExhausted);
        let single = Judging {
            failures: 0,
            max_failures: 1,
            server_answering: true,
        };
        assert_eq!(judge(&server, single), Verdict::RetriesExhausted);
    }

    #[test]
    fn throttling_never_counts() {
        let throttled = err(ErrorKind::RateLimited).status(429);
        assert_eq!(
            judge(&throttled, judging(1_000, true)),
            Verdict::Retry { charged: false }
        );
    }

    #[test]
    fn refusals_are_dead_letters_at_once() {
        for kind in [
            ErrorKind::Permanent,
            ErrorKind::Decode,
            ErrorKind::InvalidInput,
            ErrorKind::NotFound,
            ErrorKind::Config,
        ] {
            assert_eq!(judge(&err(kind), judging(0, true)), Verdict::Refused);
        }
    }
}
