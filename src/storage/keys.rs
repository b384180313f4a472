//! Every Redis key and channel name the service uses, in one place, so that nothing but
//! engine states can ever land under `{prefix}:` (which `clearEngineCache` deletes
//! wholesale and `KEYS {prefix}:*` lists as the live exams, as the contract says):
//!
//! | name | standalone (the contract's) | cluster | what |
//! | --- | --- | --- | --- |
//! | state | `{prefix}:{exam}` | `{prefix}:` + `{` + exam + `}` | one live exam's engine state (JSON, TTL) |
//! | completion marker | `{prefix}-completed:{exam}` | `{prefix}-completed:` + `{` + exam + `}` | short-lived marker: the exam completed, refuse late writes |
//! | exposure | `{prefix}-exposure:{bank}` | `{prefix}-exposure:` + `{` + bank + `}` | fleet-wide exposure counts of a bank (hash) |
//! | events | `{prefix}-events` | the same | pub/sub channel of exam events |
//!
//! For exam 123 of bank 5 with the default prefix: `adaptive_engine:123`,
//! `adaptive_engine-completed:123`, `adaptive_engine-exposure:5` standalone;
//! `adaptive_engine:{123}`, `adaptive_engine-completed:{123}`,
//! `adaptive_engine-exposure:{5}` on a cluster.
//!
//! In a Redis Cluster ([`KeyForm::HashTagged`]) the id is wrapped in a hash tag
//! (`adaptive_engine:{123}`): Redis hashes only the part between the braces, so an exam's
//! state and its completion marker live in the same slot, which the Lua scripts that touch
//! both require, while different exams still spread over every master. Standalone keys
//! ([`KeyForm::Plain`]) are exactly the contract's (`adaptive_engine:123`).
//!
//! Owns the names; must not issue commands.

/// How ids appear in key names, decided by the Redis deployment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyForm {
    /// One Redis server: `{prefix}:{id}`, the contract's form.
    #[default]
    Plain,
    /// A Redis Cluster: `adaptive_engine:{123}`, so the keys of one exam (or bank) share a
    /// slot.
    HashTagged,
}

/// The names under one key prefix (`REDIS_KEY_PREFIX`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    /// Whether ids are hash-tagged (cluster) or plain (standalone).
    form: KeyForm,
}

impl Keys {
    /// The standalone names under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self::with_form(prefix, KeyForm::Plain)
    }

    /// The names under `prefix` in the given form.
    pub fn with_form(prefix: &str, form: KeyForm) -> Self {
        Self {
            prefix: prefix.to_owned(),
            form,
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The form of the ids in these names.
    pub fn form(&self) -> KeyForm {
        self.form
    }

    /// `{kind}:{id}`, with the id hash-tagged in cluster form.
    fn name(&self, kind: &str, id: i64) -> String {
        match self.form {
            KeyForm::Plain => format!("{kind}:{id}"),
            KeyForm::HashTagged => format!("{kind}:{{{id}}}"),
        }
    }

    /// `{prefix}:{exam}` (cluster: `adaptive_engine:{123}`): one exam's engine state.
    pub fn state(&self, exam_session_id: i64) -> String {
        self.name(&self.prefix, exam_session_id)
    }

    /// The exam id of a state key, or `None` for any other key.
    pub fn exam_of_state(&self, key: &str) -> Option<i64> {
        let id = key.strip_prefix(self.prefix.as_str())?.strip_prefix(':')?;
        let id = match self.form {
            KeyForm::Plain => id,
            KeyForm::HashTagged => id.strip_prefix('{')?.strip_suffix('}')?,
        };
        id.parse().ok()
    }

    /// `SCAN` pattern matching every state key (the prefix's glob characters escaped).
    pub fn state_pattern(&self) -> String {
        let mut escaped = String::with_capacity(self.prefix.len() + 4);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        escaped.push_str(match self.form {
            KeyForm::Plain => ":*",
            KeyForm::HashTagged => ":{*}",
        });
        escaped
    }

    /// `{prefix}-completed:{exam}`: the completion marker (same slot as the state).
    pub fn completed(&self, exam_session_id: i64) -> String {
        self.name(&format!("{}-completed", self.prefix), exam_session_id)
    }

    /// `{prefix}-exposure:{bank}`: a bank's exposure counts.
    pub fn exposure(&self, bank_id: i64) -> String {
        self.name(&format!("{}-exposure", self.prefix), bank_id)
    }

    /// `{prefix}-events`: the event channel.
    pub fn events(&self) -> String {
        format!("{}-events", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;

    /// Redis's glob matching, for the subset the patterns use (`*` and `\` escapes).
    fn glob_matches(pattern: &[u8], key: &[u8]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((b'*', rest)) => (0..=key.len()).any(|skip| glob_matches(rest, &key[skip..])),
            Some((b'\\', rest)) => match (rest.split_first(), key.split_first()) {
                (Some((p, rest)), Some((k, key))) => p == k && glob_matches(rest, key),
                _ => false,
            },
            Some((p, rest)) => key.first() == Some(p) && glob_matches(rest, &key[1..]),
        }
    }

    fn matches(keys: &Keys, key: &str) -> bool {
        glob_matches(keys.state_pattern().as_bytes(), key.as_bytes())
    }

    #[test]
    fn only_engine_states_match_the_state_pattern() {
        for form in [KeyForm::Plain, KeyForm::HashTagged] {
            let keys = Keys::with_form("ae", form);
            for exam in [7, 123_456_789] {
                let state = keys.state(exam);
                assert!(matches(&keys, &state), "{state} must be listed ({form:?})");
                assert_eq!(keys.exam_of_state(&state), Some(exam));
            }
            for other in [keys.completed(7), keys.exposure(3), keys.events()] {
                assert!(
                    !other.starts_with("ae:"),
                    "{other} would be listed as a live exam ({form:?})"
                );
                assert!(!matches(&keys, &other), "{other} matches ({form:?})");
                assert_eq!(keys.exam_of_state(&other), None);
            }
            let odd = Keys::with_form("a*b", form);
            assert!(matches(&odd, &odd.state(1)));
            assert!(!matches(&odd, "axxb:1") && !matches(&odd, "axxb:{1}"));
        }
        assert_eq!(Keys::new("a*b").state_pattern(), "a\\*b:*");
        assert_eq!(
            Keys::with_form("a*b", KeyForm::HashTagged).state_pattern(),
            "a\\*b:{*}"
        );
    }

    #[test]
    fn standalone_keys_are_the_contracts_and_cluster_keys_are_hash_tagged() {
        let plain = Keys::new("adaptive_engine");
        assert_eq!(plain.state(123), "adaptive_engine:123");
        assert_eq!(plain.completed(123), "adaptive_engine-completed:123");
        assert_eq!(plain.exposure(5), "adaptive_engine-exposure:5");
        let tagged = Keys::with_form("adaptive_engine", KeyForm::HashTagged);
        assert_eq!(tagged.state(123), "adaptive_engine:{123}");
        assert_eq!(tagged.completed(123), "adaptive_engine-completed:{123}");
        assert_eq!(tagged.exposure(5), "adaptive_engine-exposure:{5}");
        assert_eq!(tagged.events(), plain.events());
        // Each form reads only its own keys.
        assert_eq!(tagged.exam_of_state("adaptive_engine:123"), None);
        assert_eq!(plain.exam_of_state("adaptive_engine:{123}"), None);
    }

    #[test]
    fn an_exams_state_and_marker_share_a_slot_and_exams_spread_over_slots() {
        let keys = Keys::with_form("adaptive_engine", KeyForm::HashTagged);
        let mut slots = std::collections::HashSet::new();
        for exam in 1..=200 {
            let slot = Slot::for_key(keys.state(exam));
            assert_eq!(slot, Slot::for_key(keys.completed(exam)), "exam {exam}");
            assert_eq!(slot, Slot::for_key(exam.to_string()), "exam {exam}");
            slots.insert(format!("{slot:?}"));
        }
        assert!(slots.len() > 150, "exams pile up in {} slots", slots.len());
        // Without the tag the two keys of most exams would land in different slots.
        let plain = Keys::new("adaptive_engine");
        assert!(
            (1..=200)
                .filter(|&e| Slot::for_key(plain.state(e)) != Slot::for_key(plain.completed(e)))
                .count()
                > 190
        );
    }
}
