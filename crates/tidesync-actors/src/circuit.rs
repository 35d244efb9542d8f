//! The circuit per server (DESIGN invariant 11): during a push cycle, it watches whether the
//! server answers at all. One request that never left (connect refused, DNS, TLS) or a few
//! failures in a row with no answer in between (a hung server times every request out alike)
//! open it: the cycle stops sending, the engine goes offline, and a probe with backoff decides
//! when to resume. A cycle that starts while offline is a probe (half-open): one request goes
//! out, and only an answer lets the others follow.

/// Failures in a row without any answer in between that open the circuit: two, so that a
/// hung server costs a cycle about two request timeouts, whatever the queue length.
pub const UNANSWERED_TO_OPEN: u32 = 2;

/// The push cycle's view of the server.
#[derive(Debug, Clone, Default)]
pub struct Circuit {
    open: bool,
    /// The cycle started while offline: one request at a time until the server answers.
    probing: bool,
    unanswered_in_a_row: u32,
    answers: u64,
}

impl Circuit {
    /// A closed circuit; `probing` when the cycle starts while the engine is offline.
    pub fn new(probing: bool) -> Self {
        Circuit {
            probing,
            ..Circuit::default()
        }
    }

    /// The server answered a request (any HTTP status: it is reachable and alive).
    pub fn answered(&mut self) {
        self.answers += 1;
        self.unanswered_in_a_row = 0;
        self.probing = false;
    }

    /// A request got no answer. `certain`: it never reached the server. Returns whether the
    /// circuit is open now.
    pub fn unanswered(&mut self, certain: bool) -> bool {
        self.unanswered_in_a_row += 1;
        if certain || self.probing || self.unanswered_in_a_row >= UNANSWERED_TO_OPEN {
            self.open = true;
        }
        self.open
    }

    /// Sending stopped: the server looks unreachable.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The server answered at least one request of this cycle.
    pub fn server_answering(&self) -> bool {
        self.answers > 0 && !self.open
    }

    /// How many requests may be in flight: `concurrency`; one while probing, and one after a
    /// request got no answer, until an answer comes (so a freed slot is not refilled while
    /// the server may be gone: the requests already on their way tell).
    pub fn allowed_in_flight(&self, concurrency: usize) -> usize {
        if self.open {
            0
        } else if self.probing || self.unanswered_in_a_row > 0 {
            1
        } else {
            concurrency
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_that_never_left_opens_at_once() {
        let mut circuit = Circuit::new(false);
        circuit.answered();
        assert!(circuit.unanswered(true));
        assert_eq!(circuit.allowed_in_flight(8), 0);
        assert!(!circuit.server_answering());
    }

    #[test]
    fn failures_in_a_row_open_and_an_answer_between_them_resets() {
        let mut circuit = Circuit::new(false);
        assert!(!circuit.unanswered(false));
        assert_eq!(circuit.allowed_in_flight(8), 1, "no refill until an answer");
        circuit.answered();
        assert_eq!(circuit.allowed_in_flight(8), 8);
        assert!(!circuit.unanswered(false), "an answer came between them");
        assert!(circuit.unanswered(false));
        assert!(circuit.is_open());
    }

    #[test]
    fn a_probe_sends_one_request_until_the_server_answers() {
        let mut circuit = Circuit::new(true);
        assert_eq!(circuit.allowed_in_flight(8), 1);
        assert!(!circuit.server_answering());
        circuit.answered();
        assert_eq!(circuit.allowed_in_flight(8), 8);
        assert!(circuit.server_answering());

        let mut failed_probe = Circuit::new(true);
        assert!(
            failed_probe.unanswered(false),
            "a probe's one failure is enough"
        );
    }
}
