//! Scopes: where in an execution a step runs. The top level is `""`; child `i` of the
//! fan-out of state `S` in scope `P` is `P/S/i` (`S/i` at the top), with `%` and `/` in
//! state names escaped, so a scope names the branch or item processor whose states the
//! step runs in.

use std::collections::BTreeMap;

use nimbus_flows::definition::{State, StateMachine};

fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

fn unescape(seg: &str) -> String {
    seg.replace("%2F", "/").replace("%25", "%")
}

/// The fan-out key of state `state` in `scope`.
pub fn join_key(scope: &str, state: &str) -> String {
    if scope.is_empty() {
        escape(state)
    } else {
        format!("{scope}/{}", escape(state))
    }
}

/// A child scope's fan-out key, the fan-out state's name and the child's index.
pub fn parent_of(scope: &str) -> Option<(&str, String, u32)> {
    let (key, index) = scope.rsplit_once('/')?;
    let index = index.parse().ok()?;
    let state = key.rsplit_once('/').map_or(key, |(_, s)| s);
    Some((key, unescape(state), index))
}

/// The states a step of `scope` runs in.
pub fn states_of<'a>(top: &'a StateMachine, scope: &str) -> Option<&'a BTreeMap<String, State>> {
    let mut states = &top.states;
    if scope.is_empty() {
        return Some(states);
    }
    let segs: Vec<&str> = scope.split('/').collect();
    if !segs.len().is_multiple_of(2) {
        return None;
    }
    for pair in segs.chunks(2) {
        let index: usize = pair[1].parse().ok()?;
        states = match states.get(&unescape(pair[0]))? {
            State::Parallel(p) => &p.branches.get(index)?.states,
            State::Map(m) => processor(m)?.1,
            _ => return None,
        };
    }
    Some(states)
}

/// Whether a step of `scope` runs inside a DISTRIBUTED Map's iteration (its events stay
/// out of the parent's history, as a map run's child executions keep their own).
pub fn in_distributed_map(top: &StateMachine, scope: &str) -> bool {
    if scope.is_empty() {
        return false;
    }
    let segs: Vec<&str> = scope.split('/').collect();
    let mut states = &top.states;
    for pair in segs.chunks(2) {
        let Some(index) = pair.get(1).and_then(|i| i.parse::<usize>().ok()) else {
            return false;
        };
        states = match states.get(&unescape(pair[0])) {
            Some(State::Parallel(p)) => match p.branches.get(index) {
                Some(b) => &b.states,
                None => return false,
            },
            Some(State::Map(m)) => {
                if m.mode() == nimbus_flows::definition::ProcessorMode::Distributed {
                    return true;
                }
                match processor(m) {
                    Some((_, s)) => s,
                    None => return false,
                }
            }
            _ => return false,
        };
    }
    false
}

/// A Map's item processor: its start state and states.
pub fn processor(m: &nimbus_flows::definition::Map) -> Option<(&str, &BTreeMap<String, State>)> {
    if let Some(p) = &m.item_processor {
        return Some((&p.start_at, &p.states));
    }
    m.iterator
        .as_ref()
        .map(|i| (i.start_at.as_str(), &i.states))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_through_names_with_slashes() {
        let def = StateMachine::parse(
            r#"{"StartAt":"a/b","States":{"a/b":{"Type":"Parallel","End":true,"Branches":[
                {"StartAt":"x","States":{"x":{"Type":"Pass","End":true}}},
                {"StartAt":"M","States":{"M":{"Type":"Map","End":true,"ItemProcessor":{
                    "StartAt":"in","States":{"in":{"Type":"Pass","End":true}}}}}}]}}}"#,
        )
        .unwrap();
        let key = join_key("", "a/b");
        assert_eq!(key, "a%2Fb");
        let branch = format!("{key}/1");
        assert!(states_of(&def, &branch).unwrap().contains_key("M"));
        let inner = format!("{}/7", join_key(&branch, "M"));
        assert!(states_of(&def, &inner).unwrap().contains_key("in"));
        assert_eq!(parent_of(&inner), Some(("a%2Fb/1/M", "M".to_string(), 7)));
        assert_eq!(parent_of(&branch), Some(("a%2Fb", "a/b".to_string(), 1)));
        assert!(states_of(&def, "a%2Fb/2").is_none());
        assert!(states_of(&def, "nope/0").is_none());
    }
}
