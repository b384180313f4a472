//! Every Redis key and channel name the service uses, in one place, so that nothing but
//! engine states can ever land under `{prefix}:` (which `clearEngineCache` deletes
//! wholesale and `KEYS {prefix}:*` lists as the live exams, as the contract says):
//!
//! | name | what |
//! | --- | --- |
//! | `{prefix}:{exam}` | one live exam's engine state (JSON, TTL) |
//! | `{prefix}-completed:{exam}` | short-lived marker: the exam completed, refuse late writes |
//! | `{prefix}-exposure:{bank}` | fleet-wide exposure counts of a bank (hash) |
//! | `{prefix}-events` | pub/sub channel of exam events |
//!
//! Owns the names; must not issue commands.

/// The names under one key prefix (`REDIS_KEY_PREFIX`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The names under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}:{exam}`: one exam's engine state.
    pub fn state(&self, exam_session_id: i64) -> String {
        format!("{}:{exam_session_id}", self.prefix)
    }

    /// The exam id of a state key, or `None` for any other key.
    pub fn exam_of_state(&self, key: &str) -> Option<i64> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix(':')?
            .parse()
            .ok()
    }

    /// `SCAN` pattern matching every state key (the prefix's glob characters escaped).
    pub fn state_pattern(&self) -> String {
        let mut escaped = String::with_capacity(self.prefix.len() + 2);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        escaped.push_str(":*");
        escaped
    }

    /// `{prefix}-completed:{exam}`: the completion marker.
    pub fn completed(&self, exam_session_id: i64) -> String {
        format!("{}-completed:{exam_session_id}", self.prefix)
    }

    /// `{prefix}-exposure:{bank}`: a bank's exposure counts.
    pub fn exposure(&self, bank_id: i64) -> String {
        format!("{}-exposure:{bank_id}", self.prefix)
    }

    /// `{prefix}-events`: the event channel.
    pub fn events(&self) -> String {
        format!("{}-events", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_engine_states_match_the_state_pattern() {
        let keys = Keys::new("ae");
        assert_eq!(keys.state(7), "ae:7");
        assert_eq!(keys.exam_of_state(&keys.state(7)), Some(7));
        assert_eq!(keys.state_pattern(), "ae:*");
        for other in [keys.completed(7), keys.exposure(3), keys.events()] {
            assert!(
                !other.starts_with("ae:"),
                "{other} would be listed as a live exam"
            );
            assert_eq!(keys.exam_of_state(&other), None);
        }
        assert_eq!(Keys::new("a*b").state_pattern(), "a\\*b:*");
    }
}
