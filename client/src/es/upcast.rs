//! Schema evolution by upcasting: functions that turn the data of an old
//! schema version of an event type into the next version, applied in a
//! chain (v1 -> v2 -> v3) as events are read. Stored events are never
//! rewritten: an event written under v1 is upcast every time it is read.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::typed::EventError;

type Step = Arc<dyn Fn(Value) -> Result<(String, Value), String> + Send + Sync>;

/// Upcasters by (event type, schema version they read).
///
/// ```
/// use logbook_client::es::Upcasters;
/// use serde_json::json;
///
/// // v1 `Deposited {amount}` in whole units; v2 in cents, with a currency.
/// let upcasters = Upcasters::new().register("Deposited", 1, |mut v| {
///     let units = v["amount"].as_i64().ok_or("amount is not a number")?;
///     v["amount"] = json!(units * 100);
///     v["currency"] = json!("EUR");
///     Ok(v)
/// });
/// let (ty, version, data) = upcasters
///     .upcast("Deposited".into(), 1, json!({"amount": 3}))
///     .unwrap();
/// assert_eq!((ty.as_str(), version), ("Deposited", 2));
/// assert_eq!(data, json!({"amount": 300, "currency": "EUR"}));
/// ```
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<(String, u32), Step>,
}

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<_> = self.steps.keys().collect();
        keys.sort();
        f.debug_struct("Upcasters").field("steps", &keys).finish()
    }
}

/// Most steps one event is taken through (a chain that loops, say a
/// renaming back and forth, is an error, not a hang).
const MAX_STEPS: usize = 1000;

impl Upcasters {
    /// No upcasters: events are read as written.
    pub fn new() -> Upcasters {
        Upcasters::default()
    }

    /// Registers `step`, which turns data of `event_type` at schema
    /// `from_version` into data of schema `from_version + 1`.
    pub fn register(
        self,
        event_type: &str,
        from_version: u32,
        step: impl Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Upcasters {
        let name = event_type.to_owned();
        self.register_renaming(event_type, from_version, move |v| {
            step(v).map(|v| (name.clone(), v))
        })
    }

    /// Registers `step`, which turns data of `event_type` at schema
    /// `from_version` into an event of the type it returns (a renamed or
    /// split type) at schema `from_version + 1`.
    pub fn register_renaming(
        mut self,
        event_type: &str,
        from_version: u32,
        step: impl Fn(Value) -> Result<(String, Value), String> + Send + Sync + 'static,
    ) -> Upcasters {
        self.steps
            .insert((event_type.to_owned(), from_version), Arc::new(step));
        self
    }

    /// Applies the chain to data of `event_type` at schema `version` as far
    /// as it goes; returns the type, version and data reached.
    pub fn upcast(
        &self,
        mut event_type: String,
        mut version: u32,
        mut data: Value,
    ) -> Result<(String, u32, Value), EventError> {
        for _ in 0..MAX_STEPS {
            let Some(step) = self.steps.get(&(event_type.clone(), version)) else {
                return Ok((event_type, version, data));
            };
            let (ty, next) = step(data).map_err(|reason| EventError::Upcast {
                event_type: event_type.clone(),
                from: version,
                reason,
            })?;
            event_type = ty;
            data = next;
            version = version.checked_add(1).ok_or_else(|| EventError::Upcast {
                event_type: event_type.clone(),
                from: version,
                reason: "schema version overflows".into(),
            })?;
        }
        Err(EventError::Upcast {
            event_type,
            from: version,
            reason: format!("more than {MAX_STEPS} upcasting steps"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A renaming chain that loops is an error after a bounded number of
    /// steps, never a hang; a failing step names the type and version.
    #[test]
    fn loops_and_failures_are_errors() {
        let looping = Upcasters::new()
            .register_renaming("A", 1, |v| Ok(("B".into(), v)))
            .register_renaming("B", 2, |v| Ok(("A".into(), v)));
        // A1 -> B2 -> A3: the chain stops where no step is registered.
        let (t, v, _) = looping.upcast("A".into(), 1, json!(1)).unwrap();
        assert_eq!((t.as_str(), v), ("A", 3));
        let cycle = Upcasters::new().register("C", u32::MAX, Ok);
        assert!(cycle.upcast("C".into(), u32::MAX, json!(1)).is_err());
        let failing = Upcasters::new().register("D", 1, |_| Err("bad".into()));
        let err = failing.upcast("D".into(), 1, json!(1)).unwrap_err();
        assert!(err.to_string().contains("D from schema 1: bad"), "{err}");
    }
}
