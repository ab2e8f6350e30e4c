//! A circuit breaker per destination: after `failures_max` failures in a row it opens and no
//! attempt is made for `open_ms`; then one probe is let through (half open). The probe's
//! success closes it; its failure opens it again for twice as long, up to `open_ms_max`.
//! Time is passed in as milliseconds on any monotonic scale.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    /// The gauge value of `strom_webhooks_circuit_state`.
    pub fn gauge(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::Open => 1.0,
            CircuitState::HalfOpen => 2.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permit {
    /// Go ahead.
    Go,
    /// Go ahead as the one probe of a half-open circuit; report its result.
    Probe,
    /// Ask again at this time.
    WaitUntil(u64),
}

#[derive(Debug)]
pub struct Circuit {
    failures_max: u32,
    open_ms: u64,
    open_ms_max: u64,
    failures: u32,
    state: CircuitState,
    open_until_ms: u64,
    /// How long the circuit opens next time (doubles after each failed probe).
    next_open_ms: u64,
}

/// How often a waiter asks again while the probe of a half-open circuit is out.
const PROBE_POLL_MS: u64 = 100;

impl Circuit {
    pub fn new(failures_max: u32, open_ms: u64, open_ms_max: u64) -> Circuit {
        Circuit {
            failures_max: failures_max.max(1),
            open_ms,
            open_ms_max: open_ms_max.max(open_ms),
            failures: 0,
            state: CircuitState::Closed,
            open_until_ms: 0,
            next_open_ms: open_ms,
        }
    }

    pub fn state(&self) -> CircuitState {
        self.state
    }

    pub fn acquire(&mut self, now_ms: u64) -> Permit {
        match self.state {
            CircuitState::Closed => Permit::Go,
            CircuitState::Open if now_ms >= self.open_until_ms => {
                self.state = CircuitState::HalfOpen;
                Permit::Probe
            }
            CircuitState::Open => Permit::WaitUntil(self.open_until_ms),
            CircuitState::HalfOpen => Permit::WaitUntil(now_ms + PROBE_POLL_MS),
        }
    }

    pub fn success(&mut self) {
        self.state = CircuitState::Closed;
        self.failures = 0;
        self.next_open_ms = self.open_ms;
    }

    pub fn failure(&mut self, now_ms: u64, probe: bool) {
        self.failures = self.failures.saturating_add(1);
        let open = match self.state {
            CircuitState::HalfOpen => probe,
            CircuitState::Closed => self.failures >= self.failures_max,
            // Attempts that started before the circuit opened end while it is open.
            CircuitState::Open => false,
        };
        if open {
            self.state = CircuitState::Open;
            self.open_until_ms = now_ms + self.next_open_ms;
            self.next_open_ms = (self.next_open_ms * 2).min(self.open_ms_max);
        }
    }

    /// The probe ended without an answer (shutdown): let the next waiter probe.
    pub fn abandon_probe(&mut self, now_ms: u64) {
        if self.state == CircuitState::HalfOpen {
            self.state = CircuitState::Open;
            self.open_until_ms = now_ms;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_probes_and_backs_off() {
        let mut circuit = Circuit::new(3, 1000, 4000);
        for _ in 0..2 {
            assert_eq!(circuit.acquire(0), Permit::Go);
            circuit.failure(0, false);
        }
        assert_eq!(circuit.state(), CircuitState::Closed);
        circuit.failure(10, false);
        assert_eq!(circuit.state(), CircuitState::Open);
        assert_eq!(circuit.acquire(500), Permit::WaitUntil(1010));
        assert_eq!(circuit.acquire(1010), Permit::Probe);
        assert_eq!(circuit.acquire(1011), Permit::WaitUntil(1111));
        circuit.failure(1200, true);
        assert_eq!(circuit.acquire(1300), Permit::WaitUntil(3200));
        assert_eq!(circuit.acquire(3200), Permit::Probe);
        circuit.failure(3300, true);
        assert_eq!(circuit.acquire(3300), Permit::WaitUntil(7300));
        assert_eq!(circuit.acquire(7300), Permit::Probe);
        circuit.success();
        assert_eq!(circuit.acquire(7301), Permit::Go);
        // A success resets the count of failures in a row.
        circuit.failure(8000, false);
        circuit.failure(8000, false);
        circuit.success();
        circuit.failure(8000, false);
        assert_eq!(circuit.state(), CircuitState::Closed);
    }

    #[test]
    fn an_abandoned_probe_lets_another_probe() {
        let mut circuit = Circuit::new(1, 1000, 1000);
        circuit.failure(0, false);
        assert_eq!(circuit.acquire(1000), Permit::Probe);
        circuit.abandon_probe(1001);
        assert_eq!(circuit.acquire(1001), Permit::Probe);
    }
}
