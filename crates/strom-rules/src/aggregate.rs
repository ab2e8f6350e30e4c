//! Aggregate accumulators: add one value, merge two (session windows), read the result.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::rule::AggregateFunction;

/// Distinct values one count_distinct keeps per window. Values are kept as 64-bit hashes, so
/// the count is exact up to this many (a collision among 10^5 values has a chance of about
/// 3 in 10^10); beyond it the set stops growing and the result is reported as this bound
/// with `<name>_saturated: true` beside it.
pub const COUNT_DISTINCT_MAX: usize = 100_000;

/// One aggregate's running state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accumulator {
    Count(u64),
    CountDistinct {
        hashes: BTreeSet<u64>,
        saturated: bool,
    },
    /// Integers are summed exactly while every value is one.
    Sum {
        int: i64,
        float: f64,
        all_int: bool,
        values: u64,
    },
    Min(Option<Json>),
    Max(Option<Json>),
    Avg {
        sum: f64,
        values: u64,
    },
    /// (event time, value): the earliest time wins, the first arrival among equal times.
    First(Option<(i64, Json)>),
    /// The latest time wins, the last arrival among equal times.
    Last(Option<(i64, Json)>),
}

impl Accumulator {
    pub fn new(function: AggregateFunction) -> Accumulator {
        match function {
            AggregateFunction::Count => Accumulator::Count(0),
            AggregateFunction::CountDistinct => {
                Accumulator::CountDistinct { hashes: BTreeSet::new(), saturated: false }
            }
            AggregateFunction::Sum => Accumulator::Sum { int: 0, float: 0.0, all_int: true, values: 0 },
            AggregateFunction::Min => Accumulator::Min(None),
            AggregateFunction::Max => Accumulator::Max(None),
            AggregateFunction::Avg => Accumulator::Avg { sum: 0.0, values: 0 },
            AggregateFunction::First => Accumulator::First(None),
            AggregateFunction::Last => Accumulator::Last(None),
        }
    }

    /// Adds one event's value (`None` for `count()`, or when the argument gave no value).
    /// Values of the wrong type (a string to sum) are ignored; the result says how many
    /// values were summed only through its own value.
    pub fn add(&mut self, time_ms: i64, value: Option<&Json>) {
        match self {
            Accumulator::Count(count) => *count += 1,
            Accumulator::CountDistinct { hashes, saturated } => {
                if let Some(value) = value {
                    let hash = xxhash_rust::xxh3::xxh3_64(value.to_string().as_bytes());
                    if hashes.len() < COUNT_DISTINCT_MAX || hashes.contains(&hash) {
                        hashes.insert(hash);
                    } else {
                        *saturated = true;
                    }
                }
            }
            Accumulator::Sum { int, float, all_int, values } => {
                let Some(Json::Number(n)) = value else { return };
                *values += 1;
                match n.as_i64() {
                    Some(i) if *all_int => match int.checked_add(i) {
                        Some(sum) => *int = sum,
                        None => {
                            *all_int = false;
                            *float = *int as f64 + i as f64;
                        }
                    },
                    _ => {
                        if *all_int {
                            *all_int = false;
                            *float = *int as f64;
                        }
                        *float += n.as_f64().unwrap_or(0.0);
                    }
                }
            }
            Accumulator::Min(best) => {
                if let Some(value) = value.filter(|v| v.is_number())
                    && best.as_ref().is_none_or(|b| number(value) < number(b))
                {
                    *best = Some(value.clone());
                }
            }
            Accumulator::Max(best) => {
                if let Some(value) = value.filter(|v| v.is_number())
                    && best.as_ref().is_none_or(|b| number(value) > number(b))
                {
                    *best = Some(value.clone());
                }
            }
            Accumulator::Avg { sum, values } => {
                if let Some(Json::Number(n)) = value {
                    *sum += n.as_f64().unwrap_or(0.0);
                    *values += 1;
                }
            }
            Accumulator::First(first) => {
                if let Some(value) = value
                    && first.as_ref().is_none_or(|(t, _)| time_ms < *t)
                {
                    *first = Some((time_ms, value.clone()));
                }
            }
            Accumulator::Last(last) => {
                if let Some(value) = value
                    && last.as_ref().is_none_or(|(t, _)| time_ms >= *t)
                {
                    *last = Some((time_ms, value.clone()));
                }
            }
        }
    }

    /// Folds `other` (a later-started session) into this one.
    pub fn merge(&mut self, other: Accumulator) {
        match (self, other) {
            (Accumulator::Count(a), Accumulator::Count(b)) => *a += b,
            (
                Accumulator::CountDistinct { hashes, saturated },
                Accumulator::CountDistinct { hashes: more, saturated: s },
            ) => {
                *saturated |= s;
                for hash in more {
                    if hashes.len() < COUNT_DISTINCT_MAX || hashes.contains(&hash) {
                        hashes.insert(hash);
                    } else {
                        *saturated = true;
                    }
                }
            }
            (
                Accumulator::Sum { int, float, all_int, values },
                Accumulator::Sum { int: int2, float: float2, all_int: all_int2, values: values2 },
            ) => {
                *values += values2;
                let exact = if *all_int && all_int2 { int.checked_add(int2) } else { None };
                match exact {
                    Some(sum) => *int = sum,
                    None => {
                        let a = if *all_int { *int as f64 } else { *float };
                        let b = if all_int2 { int2 as f64 } else { float2 };
                        *all_int = false;
                        *float = a + b;
                    }
                }
            }
            (me @ Accumulator::Min(_), Accumulator::Min(Some(value))) => me.add(0, Some(&value)),
            (me @ Accumulator::Max(_), Accumulator::Max(Some(value))) => me.add(0, Some(&value)),
            (Accumulator::Avg { sum, values }, Accumulator::Avg { sum: sum2, values: values2 }) => {
                *sum += sum2;
                *values += values2;
            }
            (me @ Accumulator::First(_), Accumulator::First(Some((t, value)))) => me.add(t, Some(&value)),
            (me @ Accumulator::Last(_), Accumulator::Last(Some((t, value)))) => {
                // The other session started later: among equal times its value arrived later.
                me.add(t, Some(&value))
            }
            _ => {}
        }
    }

    /// The result; `null` when no value was aggregated (min of nothing).
    pub fn result(&self) -> Json {
        match self {
            Accumulator::Count(count) => Json::from(*count),
            Accumulator::CountDistinct { hashes, .. } => Json::from(hashes.len() as u64),
            Accumulator::Sum { int, float, all_int, .. } => {
                if *all_int {
                    Json::from(*int)
                } else {
                    serde_json::Number::from_f64(*float).map_or(Json::Null, Json::Number)
                }
            }
            Accumulator::Min(value) | Accumulator::Max(value) => value.clone().unwrap_or(Json::Null),
            Accumulator::Avg { sum, values } => {
                if *values == 0 {
                    Json::Null
                } else {
                    serde_json::Number::from_f64(sum / *values as f64).map_or(Json::Null, Json::Number)
                }
            }
            Accumulator::First(value) | Accumulator::Last(value) => {
                value.as_ref().map_or(Json::Null, |(_, value)| value.clone())
            }
        }
    }

    /// The result as a number, for anomaly detection (`None`: no value).
    pub fn number(&self) -> Option<f64> {
        match self.result() {
            Json::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    pub fn saturated(&self) -> bool {
        matches!(self, Accumulator::CountDistinct { saturated: true, .. })
    }

    /// The value of an aggregate over an empty window, when it has one (a count is 0; a
    /// minimum of nothing is nothing).
    pub fn empty_value(function: AggregateFunction) -> Option<f64> {
        match function {
            AggregateFunction::Count | AggregateFunction::CountDistinct | AggregateFunction::Sum => Some(0.0),
            _ => None,
        }
    }
}

fn number(value: &Json) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(function: AggregateFunction, values: &[(i64, Json)]) -> Accumulator {
        let mut acc = Accumulator::new(function);
        for (t, v) in values {
            acc.add(*t, Some(v));
        }
        acc
    }

    #[test]
    fn each_function_and_its_merge_agree_with_one_pass() {
        let values: Vec<(i64, Json)> =
            vec![(5, json!(3)), (1, json!(2.5)), (9, json!("x")), (1, json!(7)), (3, json!(3)), (8, json!(-1))];
        let expected = [
            (AggregateFunction::Count, json!(6)),
            (AggregateFunction::CountDistinct, json!(5)),
            (AggregateFunction::Sum, json!(14.5)),
            (AggregateFunction::Min, json!(-1)),
            (AggregateFunction::Max, json!(7)),
            (AggregateFunction::Avg, json!(14.5 / 5.0)),
            (AggregateFunction::First, json!(2.5)),
            (AggregateFunction::Last, json!("x")),
        ];
        for (function, result) in expected {
            assert_eq!(run(function, &values).result(), result, "{function:?}");
            let mut merged = run(function, &values[..3]);
            merged.merge(run(function, &values[3..]));
            assert_eq!(merged.result(), result, "{function:?} merged");
        }
        assert_eq!(
            run(AggregateFunction::Sum, &[(0, json!(i64::MAX)), (0, json!(1))]).result(),
            json!(9.223372036854776e18)
        );
        assert_eq!(run(AggregateFunction::Sum, &[(0, json!(2)), (0, json!(3))]).result(), json!(5));
    }

    #[test]
    fn count_distinct_saturates_at_its_bound() {
        let mut acc = Accumulator::new(AggregateFunction::CountDistinct);
        for i in 0..COUNT_DISTINCT_MAX + 10 {
            acc.add(0, Some(&json!(i)));
        }
        acc.add(0, Some(&json!(0)));
        assert_eq!(acc.result(), json!(COUNT_DISTINCT_MAX));
        assert!(acc.saturated());
    }
}
