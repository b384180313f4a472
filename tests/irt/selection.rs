//! Item selection rules, content balancing, enemy items and exposure control.
