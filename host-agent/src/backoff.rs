//! Capped exponential backoff with jitter, on tokio's clock so tests can
//! pause time.

use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            current: initial,
        }
    }

    /// The next delay: the current step with up to 20% jitter removed (so
    /// many hosts do not retry in lockstep), then the step doubles up to max.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        let jitter = rand::rng().random_range(0.0..0.2);
        step.mul_f64(1.0 - jitter)
    }

    /// Back to the initial step after a success.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_bounded_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let steps = [100u64, 200, 400, 700, 700];
        for step in steps {
            let d = b.next_delay();
            let step = Duration::from_millis(step);
            assert!(d <= step && d >= step.mul_f64(0.8), "{d:?} vs {step:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
