//! SQL aggregates over rows (a window's `select`), as one
//! [`AggregateFunction`] computing all of them in one pass.
//!
//! | call | result | notes |
//! |---|---|---|
//! | `count(*)` | int | rows |
//! | `count(x)` | int | non-null values |
//! | `count(DISTINCT x)` | int | exact (a set per window) |
//! | `approx_count_distinct(x)` | int | HyperLogLog: exact up to 512 distinct values, then ~1.6 % standard error |
//! | `count_if(cond)` | int | rows where `cond` is TRUE |
//! | `sum(x)` | type of `x` | ints exact (i128), decimals exact, floats in input order |
//! | `avg(x)` | float (decimal for decimals) | |
//! | `min(x)`, `max(x)` | type of `x` | |
//! | `quantile(x, q)` | float | DDSketch, 1 % relative error |
//! | `first_value(x)`, `last_value(x)` | type of `x` | by event time; ties: smallest / largest value |
//!
//! Every aggregate takes `FILTER (WHERE cond)`. Nulls follow SQL: aggregates
//! skip them, `count(*)` counts rows, and an aggregate over no values is
//! NULL (`count` is 0). Arguments may be any expression; they are evaluated
//! before the window (a failing evaluation dead-letters the row). All
//! results except float sums and averages are independent of the order of
//! inputs, hence identical at any parallelism.

use serde::{Deserialize, Serialize};
use sqlparser::ast::{self, DuplicateTreatment, FunctionArg, FunctionArgExpr, FunctionArguments};
use streamforge_operators::hll::DistinctSketch;
use streamforge_operators::{AggregateFunction, QuantileSketch};
use streamforge_sources::row::{ColumnType, Decimal, Row, Value};

use super::expr::{compare, compile_ast, parse_select_item, plain_args, to_f64, Expr, Scope};

/// Aggregate kinds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AggKind {
    /// `count(*)` / `count_if(cond)` (with the condition as filter).
    CountRows,
    /// `count(x)`
    Count,
    /// `count(DISTINCT x)`
    CountDistinct,
    /// `approx_count_distinct(x)`
    ApproxCountDistinct,
    /// `sum(x)`
    Sum,
    /// `avg(x)`
    Avg,
    /// `min(x)`
    Min,
    /// `max(x)`
    Max,
    /// `quantile(x, q)`
    Quantile(f64),
    /// `first_value(x)`
    First,
    /// `last_value(x)`
    Last,
}

/// Whether `name` (lower case) is an aggregate function.
pub fn is_aggregate(name: &str) -> bool {
    matches!(
        name,
        "count"
            | "count_if"
            | "sum"
            | "avg"
            | "min"
            | "max"
            | "approx_count_distinct"
            | "quantile"
            | "percentile_approx"
            | "first_value"
            | "last_value"
    )
}

/// One aggregate of a select.
#[derive(Clone, Debug)]
pub struct AggCall {
    /// Output column name (the alias, or the call's text).
    pub name: String,
    /// What it computes.
    pub kind: AggKind,
    /// Input position of the argument.
    pub arg: Option<usize>,
    /// Input position of the filter condition.
    pub filter: Option<usize>,
    /// The argument's type.
    pub arg_type: Option<ColumnType>,
    /// The result's type.
    pub out_type: ColumnType,
}

/// A compiled select: the argument expressions that are not plain columns
/// (evaluated per row before the window and appended to it) and the
/// aggregates over the extended row.
#[derive(Clone, Debug)]
pub struct AggPlan {
    /// Evaluated on every row before the window, appended in order.
    pub inputs: Vec<Expr>,
    /// The aggregates.
    pub calls: Vec<AggCall>,
    /// The event-time column (first/last value).
    pub event_time: usize,
}

/// Compiles select items (`count(*) AS cnt`, `sum(amount) AS gmv_total`, …)
/// over `scope`; `event_time` is the event-time column (first/last value).
///
/// # Errors
/// A syntax error, a non-aggregate item, an unknown column, a type error.
///
/// # Examples
/// ```
/// use streamforge::sql::aggregate::compile_select;
/// use streamforge::sql::expr::Scope;
/// use streamforge_operators::AggregateFunction;
/// use streamforge_sources::row::{ColumnType, Value};
/// let scope = Scope::new([("ts".into(), ColumnType::Timestamp), ("user_id".into(), ColumnType::String),
///                         ("amount".into(), ColumnType::Decimal)]);
/// let plan = compile_select(&["count(*) AS order_cnt".into(), "sum(amount) AS gmv_total".into(),
///                             "count(DISTINCT user_id) AS user_cnt".into()], &scope, 0).unwrap();
/// let agg = streamforge::sql::aggregate::RowAggregate::new(&plan);
/// let mut acc = agg.create_accumulator();
/// for (u, a) in [("u1", "10.10"), ("u2", "0.20"), ("u1", "5")] {
///     let mut row = vec![Value::Timestamp(1), Value::str(u), Value::Decimal(a.parse().unwrap())];
///     plan.project(&mut row).unwrap();
///     agg.add(&mut acc, &row);
/// }
/// let out = agg.get_result(&acc);
/// assert_eq!(out[0], Value::Int(3));
/// assert_eq!(out[1].to_text(), "15.30");
/// assert_eq!(out[2], Value::Int(2));
/// ```
pub fn compile_select(
    items: &[String],
    scope: &Scope,
    event_time: usize,
) -> Result<AggPlan, String> {
    let mut plan = AggPlan {
        inputs: Vec::new(),
        calls: Vec::new(),
        event_time,
    };
    for item in items {
        let call =
            compile_item(item, scope, &mut plan.inputs).map_err(|e| format!("`{item}`: {e}"))?;
        if plan.calls.iter().any(|c| c.name == call.name) {
            return Err(format!(
                "`{item}`: two aggregates are named `{}`",
                call.name
            ));
        }
        plan.calls.push(call);
    }
    Ok(plan)
}

fn compile_item(item: &str, scope: &Scope, inputs: &mut Vec<Expr>) -> Result<AggCall, String> {
    let (expr, name) = parse_select_item(item)?;
    let ast::Expr::Function(f) = &expr else {
        return Err("a window's select items are aggregate calls, e.g. `count(*) AS cnt`".into());
    };
    let fname = f.name.to_string().to_ascii_lowercase();
    if !is_aggregate(&fname) {
        return Err(format!("{fname}() is not an aggregate"));
    }
    let distinct = matches!(
        &f.args,
        FunctionArguments::List(l) if l.duplicate_treatment == Some(DuplicateTreatment::Distinct)
    );
    let star = matches!(
        &f.args,
        FunctionArguments::List(l) if matches!(l.args.as_slice(), [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)])
    );
    let base = scope.names.len();
    let mut input = |e: &ast::Expr| -> Result<(usize, Option<ColumnType>), String> {
        match compile_ast(e, scope)? {
            (Expr::Column(i), t) => Ok((i, t)),
            (x, t) => {
                inputs.push(x);
                Ok((base + inputs.len() - 1, t))
            }
        }
    };
    let mut filter = match &f.filter {
        Some(cond) => {
            let (i, t) = input(cond)?;
            if !t.is_none_or(|t| t == ColumnType::Bool) {
                return Err("FILTER (WHERE …) needs a bool".into());
            }
            Some(i)
        }
        None => None,
    };
    let args = if star { Vec::new() } else { plain_args(f)? };
    let (kind, arg, arg_type) = match (fname.as_str(), args.as_slice(), star) {
        ("count", [], true) => (AggKind::CountRows, None, None),
        ("count", [x], false) => {
            let (i, t) = input(x)?;
            let k = if distinct {
                AggKind::CountDistinct
            } else {
                AggKind::Count
            };
            (k, Some(i), t)
        }
        ("count_if", [c], false) => {
            if filter.is_some() {
                return Err("count_if takes no FILTER".into());
            }
            let (i, t) = input(c)?;
            if !t.is_none_or(|t| t == ColumnType::Bool) {
                return Err("count_if needs a bool condition".into());
            }
            filter = Some(i);
            (AggKind::CountRows, None, None)
        }
        ("quantile" | "percentile_approx", [x, q], false) => {
            let q = match q {
                ast::Expr::Value(v) => match &v.value {
                    ast::Value::Number(n, _) => n.parse::<f64>().ok(),
                    _ => None,
                },
                _ => None,
            }
            .filter(|q| (0.0..=1.0).contains(q))
            .ok_or("the quantile is a number literal in [0, 1]")?;
            let (i, t) = input(x)?;
            (AggKind::Quantile(q), Some(i), t)
        }
        (name, [x], false) => {
            let k = match name {
                "approx_count_distinct" => AggKind::ApproxCountDistinct,
                "sum" => AggKind::Sum,
                "avg" => AggKind::Avg,
                "min" => AggKind::Min,
                "max" => AggKind::Max,
                "first_value" => AggKind::First,
                "last_value" => AggKind::Last,
                _ => return Err(format!("wrong arguments for {name}()")),
            };
            if distinct && k != AggKind::Count {
                return Err(format!(
                    "DISTINCT is supported in count() only, not {name}()"
                ));
            }
            let (i, t) = input(x)?;
            (k, Some(i), t)
        }
        (name, _, _) => return Err(format!("wrong arguments for {name}()")),
    };
    let numeric = || {
        arg_type
            .filter(|t| t.is_numeric())
            .ok_or(format!("{fname}() needs a number, not {arg_type:?}"))
    };
    let out_type = match kind {
        AggKind::CountRows
        | AggKind::Count
        | AggKind::CountDistinct
        | AggKind::ApproxCountDistinct => ColumnType::Int,
        AggKind::Sum => numeric()?,
        AggKind::Avg => match numeric()? {
            ColumnType::Decimal => ColumnType::Decimal,
            _ => ColumnType::Float,
        },
        AggKind::Quantile(_) => {
            numeric()?;
            ColumnType::Float
        }
        AggKind::Min | AggKind::Max | AggKind::First | AggKind::Last => {
            arg_type.ok_or(format!("{fname}() of NULL"))?
        }
    };
    Ok(AggCall {
        name,
        kind,
        arg,
        filter,
        arg_type,
        out_type,
    })
}

impl AggPlan {
    /// Appends the inputs evaluated on `row` (the aggregate's input row).
    ///
    /// # Errors
    /// An input expression fails (overflow, CAST): the row is dead-lettered.
    pub fn project(&self, row: &mut Row) -> Result<(), String> {
        let n = row.len();
        for e in &self.inputs {
            match e.eval(&row[..n]) {
                Ok(v) => row.push(v),
                Err(reason) => {
                    row.truncate(n);
                    return Err(reason);
                }
            }
        }
        Ok(())
    }

    /// `(name, type)` of the results, in order.
    pub fn outputs(&self) -> impl Iterator<Item = (String, ColumnType)> + '_ {
        self.calls.iter().map(|c| (c.name.clone(), c.out_type))
    }
}

/// Accumulator of one aggregate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AccState {
    /// Counts.
    Count(u64),
    /// An exact integer sum and the number of values.
    IntSum(i128, u64),
    /// A float sum and the number of values.
    FloatSum(f64, u64),
    /// A decimal sum (None: overflowed) and the number of values.
    DecimalSum(Option<Value>, u64),
    /// Min or max so far (Null: none).
    Extreme(Value),
    /// Exact distinct values (a hash set: the result is its size, so
    /// the order of the values does not matter).
    Distinct(hashbrown::HashSet<Value>),
    /// Approximate distinct values.
    Sketch(DistinctSketch),
    /// Quantile sketch (boxed: a DDSketch is ~200 bytes, and every
    /// accumulator of a window entry is as large as its largest variant).
    Quantiles(Box<QuantileSketch>),
    /// First/last (event time, value).
    Pick(Option<(i64, Value)>),
}

/// All aggregates of a plan as one [`AggregateFunction`] over projected rows.
#[derive(Clone, Debug)]
pub struct RowAggregate {
    calls: std::sync::Arc<[AggCall]>,
    time: usize,
}

impl RowAggregate {
    /// The aggregate of `plan` (apply it to [`AggPlan::project`]ed rows).
    pub fn new(plan: &AggPlan) -> RowAggregate {
        RowAggregate {
            calls: plan.calls.clone().into(),
            time: plan.event_time,
        }
    }
}

fn decimal_add(a: &Option<Value>, b: &Value) -> Option<Value> {
    match (a, b) {
        (Some(Value::Decimal(x)), Value::Decimal(y)) => x.checked_add(*y).map(Value::Decimal),
        (Some(Value::Decimal(x)), Value::Int(y)) => {
            x.checked_add(Decimal::from(*y)).map(Value::Decimal)
        }
        _ => None,
    }
}

impl AggregateFunction<Row> for RowAggregate {
    type Acc = Vec<AccState>;
    type Out = Row;

    fn create_accumulator(&self) -> Vec<AccState> {
        self.calls
            .iter()
            .map(|c| match c.kind {
                AggKind::CountRows | AggKind::Count => AccState::Count(0),
                AggKind::Sum | AggKind::Avg => match c.arg_type {
                    Some(ColumnType::Int) => AccState::IntSum(0, 0),
                    Some(ColumnType::Decimal) => {
                        AccState::DecimalSum(Some(Value::Decimal(Decimal::ZERO)), 0)
                    }
                    _ => AccState::FloatSum(0.0, 0),
                },
                AggKind::Min | AggKind::Max => AccState::Extreme(Value::Null),
                AggKind::CountDistinct => AccState::Distinct(hashbrown::HashSet::new()),
                AggKind::ApproxCountDistinct => AccState::Sketch(DistinctSketch::default()),
                AggKind::Quantile(_) => AccState::Quantiles(Box::default()),
                AggKind::First | AggKind::Last => AccState::Pick(None),
            })
            .collect()
    }

    #[inline]
    fn add(&self, acc: &mut Vec<AccState>, row: &Row) {
        for (c, a) in self.calls.iter().zip(acc.iter_mut()) {
            if let Some(f) = c.filter {
                if !matches!(row[f], Value::Bool(true)) {
                    continue;
                }
            }
            let v = match c.arg {
                Some(i) if row[i].is_null() => continue,
                Some(i) => &row[i],
                None => &Value::Null,
            };
            match (a, c.kind) {
                (AccState::Count(n), _) => *n += 1,
                (AccState::IntSum(s, n), _) => {
                    if let Value::Int(i) = v {
                        *s += *i as i128;
                        *n += 1;
                    }
                }
                (AccState::FloatSum(s, n), _) => {
                    *s += to_f64(v).unwrap_or(f64::NAN);
                    *n += 1;
                }
                (AccState::DecimalSum(s, n), _) => {
                    *s = decimal_add(s, v);
                    *n += 1;
                }
                // Integers (the common case) compare in place.
                (AccState::Extreme(Value::Int(m)), kind) if matches!(v, Value::Int(_)) => {
                    let Value::Int(x) = *v else { unreachable!() };
                    if (kind == AggKind::Min && x < *m) || (kind != AggKind::Min && x > *m) {
                        *m = x;
                    }
                }
                (AccState::Extreme(m), kind) => {
                    let better = m.is_null()
                        || match kind {
                            AggKind::Min => compare(v, m).is_lt(),
                            _ => compare(v, m).is_gt(),
                        };
                    if better {
                        *m = v.clone();
                    }
                }
                (AccState::Distinct(set), _) => {
                    set.get_or_insert_with(v, Value::clone);
                }
                (AccState::Sketch(s), _) => s.add(v),
                (AccState::Quantiles(q), _) => q.add(to_f64(v).unwrap_or(f64::NAN)),
                (AccState::Pick(p), kind) => {
                    let t = match row[self.time] {
                        Value::Timestamp(t) | Value::Int(t) => t,
                        _ => 0,
                    };
                    pick(p, kind, (t, v.clone()));
                }
            }
        }
    }

    fn merge(&self, acc: &mut Vec<AccState>, other: Vec<AccState>) {
        for ((c, a), b) in self.calls.iter().zip(acc.iter_mut()).zip(other) {
            match (a, b) {
                (AccState::Count(x), AccState::Count(y)) => *x += y,
                (AccState::IntSum(s, n), AccState::IntSum(t, m)) => {
                    *s += t;
                    *n += m;
                }
                (AccState::FloatSum(s, n), AccState::FloatSum(t, m)) => {
                    *s += t;
                    *n += m;
                }
                (AccState::DecimalSum(s, n), AccState::DecimalSum(t, m)) => {
                    *s = t.and_then(|t| decimal_add(s, &t));
                    *n += m;
                }
                (AccState::Extreme(x), AccState::Extreme(y)) => {
                    if !y.is_null() {
                        let better = x.is_null()
                            || match c.kind {
                                AggKind::Min => compare(&y, x).is_lt(),
                                _ => compare(&y, x).is_gt(),
                            };
                        if better {
                            *x = y;
                        }
                    }
                }
                (AccState::Distinct(x), AccState::Distinct(y)) => x.extend(y),
                (AccState::Sketch(x), AccState::Sketch(y)) => x.merge(&y),
                (AccState::Quantiles(x), AccState::Quantiles(y)) => x.merge(&y),
                (AccState::Pick(x), AccState::Pick(Some(y))) => pick(x, c.kind, y),
                (AccState::Pick(_), AccState::Pick(None)) => {}
                _ => unreachable!("accumulators of one plan"),
            }
        }
    }

    fn get_result(&self, acc: &Vec<AccState>) -> Row {
        self.calls
            .iter()
            .zip(acc)
            .map(|(c, a)| match (a, c.kind) {
                (AccState::Count(n), _) => Value::Int(*n as i64),
                (
                    _,
                    AggKind::Sum
                    | AggKind::Avg
                    | AggKind::Min
                    | AggKind::Max
                    | AggKind::Quantile(_)
                    | AggKind::First
                    | AggKind::Last,
                ) if count_of(a) == Some(0) => Value::Null,
                (AccState::IntSum(s, _), AggKind::Sum) => match i64::try_from(*s) {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::Decimal(Decimal::from_i128_with_scale(*s, 0)),
                },
                (AccState::IntSum(s, n), _) => Value::Float(*s as f64 / *n as f64),
                (AccState::FloatSum(s, _), AggKind::Sum) => Value::Float(*s),
                (AccState::FloatSum(s, n), _) => Value::Float(*s / *n as f64),
                (AccState::DecimalSum(None, _), _) => Value::Null,
                (AccState::DecimalSum(Some(s), _), AggKind::Sum) => s.clone(),
                (AccState::DecimalSum(Some(Value::Decimal(s)), n), _) => s
                    .checked_div(Decimal::from(*n))
                    .map_or(Value::Null, Value::Decimal),
                (AccState::Extreme(v), _) => v.clone(),
                (AccState::Distinct(set), _) => Value::Int(set.len() as i64),
                (AccState::Sketch(s), _) => Value::Int(s.estimate() as i64),
                (AccState::Quantiles(q), AggKind::Quantile(p)) => {
                    q.quantile(p).map_or(Value::Null, Value::Float)
                }
                (AccState::Pick(p), _) => p.as_ref().map_or(Value::Null, |(_, v)| v.clone()),
                _ => Value::Null,
            })
            .collect()
    }
}

fn count_of(a: &AccState) -> Option<u64> {
    match a {
        AccState::IntSum(_, n) | AccState::FloatSum(_, n) | AccState::DecimalSum(_, n) => Some(*n),
        AccState::Quantiles(q) => Some(q.count()),
        _ => None,
    }
}

fn pick(p: &mut Option<(i64, Value)>, kind: AggKind, new: (i64, Value)) {
    let replace = match p {
        None => true,
        Some(old) => {
            let o = old.0.cmp(&new.0).then_with(|| old.1.cmp(&new.1));
            if kind == AggKind::First {
                o.is_gt()
            } else {
                o.is_lt()
            }
        }
    };
    if replace {
        *p = Some(new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope::new([
            ("ts".into(), ColumnType::Timestamp),
            ("d".into(), ColumnType::Int),
            ("e".into(), ColumnType::Bool),
            ("u".into(), ColumnType::String),
            ("a".into(), ColumnType::Decimal),
        ])
    }

    #[test]
    fn aggregates_follow_sql_nulls_and_merge_in_any_order() {
        let items: Vec<String> = [
            "count(*) AS n",
            "count(a) AS na",
            "count_if(e) AS errs",
            "count(*) FILTER (WHERE d > 2) AS big",
            "sum(d) AS sd",
            "avg(d) AS ad",
            "min(u) AS mu",
            "max(d) AS md",
            "count(DISTINCT u) AS du",
            "approx_count_distinct(u) AS au",
            "sum(a) AS sa",
            "avg(a) AS aa",
            "first_value(u) AS fu",
            "last_value(u) AS lu",
            "quantile(d, 0.5) AS q",
            "sum(a) FILTER (WHERE FALSE) AS none",
        ]
        .map(String::from)
        .to_vec();
        let plan = compile_select(&items, &scope(), 0).unwrap();
        let agg = RowAggregate::new(&plan);
        let dec = |s: &str| Value::Decimal(s.parse().unwrap());
        let rows = vec![
            vec![
                Value::Timestamp(30),
                Value::Int(1),
                Value::Bool(true),
                Value::str("b"),
                dec("0.10"),
            ],
            vec![
                Value::Timestamp(10),
                Value::Int(3),
                Value::Bool(false),
                Value::str("c"),
                Value::Null,
            ],
            vec![
                Value::Timestamp(20),
                Value::Int(5),
                Value::Null,
                Value::str("b"),
                dec("0.20"),
            ],
        ];
        let projected: Vec<Row> = rows
            .iter()
            .map(|r| {
                let mut r = r.clone();
                plan.project(&mut r).unwrap();
                r
            })
            .collect();
        let mut results = Vec::new();
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
            // one row alone, merged with the other two
            let mut a = agg.create_accumulator();
            agg.add(&mut a, &projected[order[0]]);
            let mut b = agg.create_accumulator();
            agg.add(&mut b, &projected[order[1]]);
            agg.add(&mut b, &projected[order[2]]);
            agg.merge(&mut a, b);
            results.push(agg.get_result(&a));
        }
        let want = vec![
            Value::Int(3),
            Value::Int(2),
            Value::Int(1),
            Value::Int(2),
            Value::Int(9),
            Value::Float(3.0),
            Value::str("b"),
            Value::Int(5),
            Value::Int(2),
            Value::Int(2),
            dec("0.30"),
            dec("0.15"),
            Value::str("c"),
            Value::str("b"),
            results[0][14].clone(),
            Value::Null,
        ];
        assert!(matches!(results[0][14], Value::Float(q) if (q - 3.0).abs() <= 0.03));
        for r in &results {
            assert_eq!(r, &want);
        }
    }

    #[test]
    fn select_errors() {
        for bad in [
            "d AS x",
            "sum(u)",
            "avg(*)",
            "lower(u)",
            "sum(DISTINCT d)",
            "quantile(d, 2)",
            "count_if(d)",
            "sum(nope)",
        ] {
            assert!(compile_select(&[bad.into()], &scope(), 0).is_err(), "{bad}");
        }
        let twice = ["count(*) AS n".to_string(), "sum(d) AS n".to_string()];
        assert!(compile_select(&twice, &scope(), 0)
            .unwrap_err()
            .contains("two aggregates"));
    }
}
