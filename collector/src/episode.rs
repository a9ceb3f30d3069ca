//! A failure episode: how the agent logs a repeating failure once when it
//! starts and once when it ends, not once per tick.

/// Whether a repeating failure is in progress.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Episode {
    /// Set by the first failure, cleared by the first success after it.
    open: bool,
}

impl Episode {
    /// Records a failure; `true` if it starts an episode (log it now).
    pub(crate) fn fail(&mut self) -> bool {
        !std::mem::replace(&mut self.open, true)
    }

    /// Records a success; `true` if it ends an episode (log the recovery).
    pub(crate) fn recover(&mut self) -> bool {
        std::mem::replace(&mut self.open, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_failure_and_the_first_success_after_it_are_news() {
        let mut e = Episode::default();
        assert!(!e.recover(), "no episode to end yet");
        assert!(e.fail());
        assert!(!e.fail());
        assert!(!e.fail());
        assert!(e.recover());
        assert!(!e.recover());
        assert!(e.fail(), "a new episode");
    }
}
