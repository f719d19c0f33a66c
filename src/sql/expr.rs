//! SQL scalar expressions over rows: parsed with `sqlparser` (the generic
//! dialect), type-checked against the columns in scope, evaluated per row.
//!
//! Supported: column names, literals (`1` int, `1.5` exact decimal, `'x'`,
//! `TRUE`, `NULL`), `+ - * / %`, `||`, comparisons, `AND OR NOT`, `IS [NOT]
//! NULL`, `IS [NOT] TRUE/FALSE`, `[NOT] IN (…)`, `[NOT] BETWEEN`, `[NOT] LIKE`
//! (`%`, `_`), `CASE`, `CAST(x AS type)`, and the functions `lower`, `upper`,
//! `char_length`, `abs`, `coalesce`, `concat`.
//!
//! Semantics follow SQL (and Flink SQL): `NULL` propagates through
//! operators, `AND`/`OR` are three-valued, a filter keeps a row only when its
//! condition is `TRUE`. Numbers promote int → decimal → float; `INT / INT`
//! truncates; overflow and division by zero are errors of the row (it is
//! dead-lettered), never wrapped or saturated. Timestamps compare with
//! timestamps and ints (ms); `timestamp ± int` is a timestamp.

use std::cmp::Ordering;
use std::sync::Arc;

use sqlparser::ast::{self, BinaryOperator, UnaryOperator};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use streamforge_sources::row::{ColumnType, Decimal, Value};

/// The columns an expression can refer to: the row's own, in row order,
/// and names bound to an expression instead of a place in the row (see
/// [`Scope::bind`]).
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Column names, in row order.
    pub names: Vec<String>,
    /// Column types.
    pub types: Vec<ColumnType>,
    /// Names that are not in the row: each stands for an expression over
    /// the row (an alias of one of its columns, or a constant).
    bound: Vec<(String, ColumnType, Expr)>,
}

impl Scope {
    /// A scope of `(name, type)` columns.
    pub fn new(columns: impl IntoIterator<Item = (String, ColumnType)>) -> Scope {
        let (names, types) = columns.into_iter().unzip();
        Scope {
            names,
            types,
            bound: Vec::new(),
        }
    }

    /// Binds `name` to `expr` without a place in the row: expressions
    /// compiled later that name it get `expr` itself (a column of the row or
    /// a constant), so a computed column that only renames a column or
    /// holds a constant costs nothing per row. A name bound before (in any
    /// case) is rebound; `name` must not be a column of the row.
    ///
    /// # Examples
    /// ```
    /// use streamforge::sql::expr::{compile, Expr, Scope};
    /// use streamforge_sources::row::{ColumnType, Value};
    /// let mut scope = Scope::new([("OperationName".into(), ColumnType::String)]);
    /// scope.bind("operator_name", ColumnType::String, Expr::Column(0));
    /// scope.bind("operator_class", ColumnType::String, Expr::Literal(Value::str("span")));
    /// assert_eq!(scope.names.len(), 1);
    /// let (e, _) = compile("concat(operator_name, '/', operator_class)", &scope).unwrap();
    /// assert_eq!(e.eval(&vec![Value::str("GET /")]).unwrap(), Value::str("GET //span"));
    /// assert!(matches!(scope.resolve("Operator_Name"), Some(("operator_name", Expr::Column(0), ColumnType::String))));
    /// ```
    pub fn bind(&mut self, name: &str, ty: ColumnType, expr: Expr) {
        debug_assert!(!self.names.iter().any(|n| n == name));
        self.unbind(name);
        self.bound.push((name.to_string(), ty, expr));
    }

    /// Forgets a binding of `name`, matched case-insensitively as a step
    /// that computes a column of the row matches it (see [`Scope::bind`]).
    pub fn unbind(&mut self, name: &str) {
        self.bound.retain(|(n, ..)| !n.eq_ignore_ascii_case(name));
    }

    /// What `name` stands for — `Expr::Column(i)` for a column of the row,
    /// or the expression it is bound to — with its type and its name as
    /// declared; exact matches first, then case-insensitive ones (columns
    /// of the row before bound names).
    pub fn resolve(&self, name: &str) -> Option<(&str, Expr, ColumnType)> {
        let row = |eq: &dyn Fn(&str) -> bool| {
            self.names
                .iter()
                .position(|n| eq(n))
                .map(|i| (self.names[i].as_str(), Expr::Column(i), self.types[i]))
        };
        let bound = |eq: &dyn Fn(&str) -> bool| {
            self.bound
                .iter()
                .find(|(n, ..)| eq(n))
                .map(|(n, t, e)| (n.as_str(), e.clone(), *t))
        };
        let exact = |n: &str| n == name;
        let folded = |n: &str| n.eq_ignore_ascii_case(name);
        row(&exact)
            .or_else(|| bound(&exact))
            .or_else(|| row(&folded))
            .or_else(|| bound(&folded))
    }

    /// Adds a column.
    pub fn push(&mut self, name: &str, ty: ColumnType) {
        self.names.push(name.to_string());
        self.types.push(ty);
    }

    /// The index of `name` (exact match first, then case-insensitive).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names
            .iter()
            .position(|n| n == name)
            .or_else(|| self.names.iter().position(|n| n.eq_ignore_ascii_case(name)))
    }
}

/// Arithmetic operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arith {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// Scalar functions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Func {
    /// `lower(s)`
    Lower,
    /// `upper(s)`
    Upper,
    /// `char_length(s)`
    CharLength,
    /// `abs(x)`
    Abs,
    /// `coalesce(a, b, …)`
    Coalesce,
    /// `concat(a, b, …)` (strings; NULL if any is NULL, as `||`)
    Concat,
    /// `date_format(ts, 'yyyy-MM-dd HH:mm:ss')` (Flink's; the pattern in
    /// Java `SimpleDateFormat` letters, compiled to a chrono format; UTC)
    DateFormat(DatePattern),
    /// `k8s_workload(pod)`: a Kubernetes pod name without its ReplicaSet
    /// hash and pod suffix (`ts-order-service-6d4b8c7f9-x2x4z` →
    /// `ts-order-service`), as the span mapping's `k8s-pod` transform
    K8sWorkload,
}

/// A compiled, type-checked expression.
#[derive(Clone, Debug)]
pub enum Expr {
    /// A column of the row.
    Column(usize),
    /// A constant.
    Literal(Value),
    /// Arithmetic, with the result type.
    Arith(Arith, Box<Expr>, Box<Expr>, ColumnType),
    /// A comparison.
    Cmp(Cmp, Box<Expr>, Box<Expr>),
    /// `AND`
    And(Box<Expr>, Box<Expr>),
    /// `OR`
    Or(Box<Expr>, Box<Expr>),
    /// `NOT`
    Not(Box<Expr>),
    /// Unary minus.
    Neg(Box<Expr>),
    /// `IS NULL` (`true`) / `IS NOT NULL` (`false`).
    IsNull(Box<Expr>, bool),
    /// `IS TRUE`, `IS FALSE` (negated: `IS NOT …`): never NULL.
    IsBool(Box<Expr>, bool, bool),
    /// `[NOT] IN (list)`
    InList(Box<Expr>, Vec<Expr>, bool),
    /// `[NOT] LIKE pattern`
    Like(Box<Expr>, Arc<[LikeToken]>, bool),
    /// `CASE WHEN … THEN … [ELSE …] END`
    Case(Vec<(Expr, Expr)>, Option<Box<Expr>>),
    /// `CAST(x AS type)`
    Cast(Box<Expr>, ColumnType),
    /// A function call.
    Call(Func, Vec<Expr>),
}

/// A `LIKE` pattern, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LikeToken {
    /// Literal text.
    Text(String),
    /// `_`: one character.
    One,
    /// `%`: any characters.
    Any,
}

/// Parses `sql` as one expression (generic dialect).
///
/// # Errors
/// sqlparser's message, or trailing text.
pub fn parse(sql: &str) -> Result<ast::Expr, String> {
    let mut p = Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .map_err(|e| format!("`{sql}`: {e}"))?;
    let e = p.parse_expr().map_err(|e| format!("`{sql}`: {e}"))?;
    if p.peek_token().token != sqlparser::tokenizer::Token::EOF {
        return Err(format!(
            "`{sql}`: unexpected `{}` after the expression",
            p.peek_token()
        ));
    }
    Ok(e)
}

/// Parses one select item, `expr [AS alias]`, into the expression and its
/// output name: the alias, else a column's name, else the expression's text.
///
/// # Errors
/// sqlparser's message, trailing text, or a wildcard item.
pub fn parse_select_item(item: &str) -> Result<(ast::Expr, String), String> {
    let mut p = Parser::new(&GenericDialect {})
        .try_with_sql(item)
        .map_err(|e| e.to_string())?;
    let select = p.parse_select_item().map_err(|e| e.to_string())?;
    if p.peek_token().token != sqlparser::tokenizer::Token::EOF {
        return Err(format!("unexpected `{}`", p.peek_token()));
    }
    match select {
        ast::SelectItem::ExprWithAlias { expr, alias } => Ok((expr, alias.value)),
        ast::SelectItem::UnnamedExpr(e) => {
            let name = match &e {
                ast::Expr::Identifier(id) => id.value.clone(),
                other => other.to_string(),
            };
            Ok((e, name))
        }
        other => Err(format!("unsupported select item `{other}`")),
    }
}

/// Parses and compiles `sql` against `scope`; the type is `None` for a
/// constant `NULL`.
///
/// # Errors
/// A syntax error, an unknown column or function, or a type error.
///
/// # Examples
/// ```
/// use streamforge::sql::expr::{compile, Scope};
/// use streamforge_sources::row::{ColumnType, Value};
/// let scope = Scope::new([("status".into(), ColumnType::String), ("amount".into(), ColumnType::Decimal)]);
/// let (e, ty) = compile("status <> 'cancelled' AND amount * 2 > 10.5", &scope).unwrap();
/// assert_eq!(ty, Some(ColumnType::Bool));
/// let row = |s: &str, a: &str| vec![Value::str(s), Value::Decimal(a.parse().unwrap())];
/// assert_eq!(e.eval(&row("paid", "5.3")).unwrap(), Value::Bool(true));
/// assert_eq!(e.eval(&row("cancelled", "99")).unwrap(), Value::Bool(false));
/// assert_eq!(e.eval(&vec![Value::Null, Value::Decimal(1.into())]).unwrap(), Value::Bool(false));
/// assert!(compile("amount > 'x'", &scope).unwrap_err().contains("cannot compare"));
/// assert!(compile("price > 1", &scope).unwrap_err().contains("unknown column `price`"));
/// ```
pub fn compile(sql: &str, scope: &Scope) -> Result<(Expr, Option<ColumnType>), String> {
    let e = parse(sql)?;
    compile_ast(&e, scope).map_err(|m| format!("`{sql}`: {m}"))
}

/// Compiles a parsed expression against `scope`.
///
/// # Errors
/// As [`compile`].
pub fn compile_ast(e: &ast::Expr, scope: &Scope) -> Result<(Expr, Option<ColumnType>), String> {
    use ColumnType as T;
    Ok(match e {
        ast::Expr::Identifier(id) => column(&id.value, scope)?,
        ast::Expr::CompoundIdentifier(ids) => {
            let name = ids.last().map(|i| i.value.as_str()).unwrap_or_default();
            column(name, scope)?
        }
        ast::Expr::Nested(inner) => compile_ast(inner, scope)?,
        ast::Expr::Value(v) => literal(&v.value)?,
        ast::Expr::UnaryOp { op, expr } => {
            let (x, t) = compile_ast(expr, scope)?;
            match op {
                UnaryOperator::Not => {
                    want_bool(t, "NOT")?;
                    (Expr::Not(Box::new(x)), Some(T::Bool))
                }
                UnaryOperator::Minus => {
                    if !t.is_none_or(ColumnType::is_numeric) {
                        return Err(format!("cannot negate {}", show(t)));
                    }
                    (Expr::Neg(Box::new(x)), t)
                }
                UnaryOperator::Plus => (x, t),
                other => return Err(format!("unsupported operator {other}")),
            }
        }
        ast::Expr::BinaryOp { left, op, right } => {
            let (l, lt) = compile_ast(left, scope)?;
            let (r, rt) = compile_ast(right, scope)?;
            binary(op, l, lt, r, rt)?
        }
        ast::Expr::IsNull(x) | ast::Expr::IsNotNull(x) => {
            let (x, _) = compile_ast(x, scope)?;
            let is = matches!(e, ast::Expr::IsNull(_));
            (Expr::IsNull(Box::new(x), is), Some(T::Bool))
        }
        ast::Expr::IsTrue(x)
        | ast::Expr::IsFalse(x)
        | ast::Expr::IsNotTrue(x)
        | ast::Expr::IsNotFalse(x) => {
            let (x, t) = compile_ast(x, scope)?;
            want_bool(t, "IS TRUE/FALSE")?;
            let truth = matches!(e, ast::Expr::IsTrue(_) | ast::Expr::IsNotTrue(_));
            let negated = matches!(e, ast::Expr::IsNotTrue(_) | ast::Expr::IsNotFalse(_));
            (Expr::IsBool(Box::new(x), truth, negated), Some(T::Bool))
        }
        ast::Expr::In {
            expr,
            target: ast::InTarget::List(list),
            negated,
            ..
        } => {
            let (x, t) = compile_ast(expr, scope)?;
            let mut items = Vec::new();
            for item in list {
                let (i, it) = compile_ast(item, scope)?;
                comparable(t, it)?;
                items.push(i);
            }
            (Expr::InList(Box::new(x), items, *negated), Some(T::Bool))
        }
        ast::Expr::Between {
            expr,
            negated,
            low,
            high,
        } => {
            let (x, t) = compile_ast(expr, scope)?;
            let (lo, lt) = compile_ast(low, scope)?;
            let (hi, ht) = compile_ast(high, scope)?;
            comparable(t, lt)?;
            comparable(t, ht)?;
            let within = Expr::And(
                Box::new(Expr::Cmp(Cmp::Ge, Box::new(x.clone()), Box::new(lo))),
                Box::new(Expr::Cmp(Cmp::Le, Box::new(x), Box::new(hi))),
            );
            let e = if *negated {
                Expr::Not(Box::new(within))
            } else {
                within
            };
            (e, Some(T::Bool))
        }
        ast::Expr::Like {
            negated,
            expr,
            pattern,
            escape_char,
            any,
        } => {
            if *any || escape_char.is_some() {
                return Err("LIKE ANY and ESCAPE are not supported".into());
            }
            let (x, t) = compile_ast(expr, scope)?;
            if !t.is_none_or(|t| t == T::String) {
                return Err(format!("LIKE needs a string, not {}", show(t)));
            }
            let pattern = match compile_ast(pattern, scope)? {
                (Expr::Literal(Value::Str(p)), _) => like_pattern(&p),
                _ => return Err("LIKE needs a constant pattern".into()),
            };
            (Expr::Like(Box::new(x), pattern, *negated), Some(T::Bool))
        }
        ast::Expr::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            let operand = operand
                .as_ref()
                .map(|o| compile_ast(o, scope))
                .transpose()?;
            let mut ty: Option<ColumnType> = None;
            let mut unify = |t: Option<ColumnType>| -> Result<(), String> {
                ty = result_type(ty, t)?;
                Ok(())
            };
            let mut whens = Vec::new();
            for w in conditions {
                let (c, ct) = compile_ast(&w.condition, scope)?;
                let c = match &operand {
                    Some((o, ot)) => {
                        comparable(*ot, ct)?;
                        Expr::Cmp(Cmp::Eq, Box::new(o.clone()), Box::new(c))
                    }
                    None => {
                        want_bool(ct, "CASE WHEN")?;
                        c
                    }
                };
                let (r, rt) = compile_ast(&w.result, scope)?;
                unify(rt)?;
                whens.push((c, r));
            }
            let otherwise = match else_result {
                Some(x) => {
                    let (x, t) = compile_ast(x, scope)?;
                    unify(t)?;
                    Some(Box::new(x))
                }
                None => None,
            };
            (Expr::Case(whens, otherwise), ty)
        }
        ast::Expr::Cast {
            expr, data_type, ..
        } => {
            let (x, _) = compile_ast(expr, scope)?;
            let to = sql_type(&data_type.to_string())?;
            (Expr::Cast(Box::new(x), to), Some(to))
        }
        ast::Expr::Function(f) => {
            let name = f.name.to_string().to_ascii_lowercase();
            let args = plain_args(f)?;
            let mut xs = Vec::new();
            let mut ts = Vec::new();
            for a in &args {
                let (x, t) = compile_ast(a, scope)?;
                xs.push(x);
                ts.push(t);
            }
            let one = |ok: &dyn Fn(ColumnType) -> bool, what: &str| -> Result<(), String> {
                if ts.len() != 1 || !ts[0].is_none_or(ok) {
                    return Err(format!("{name}() takes one {what}"));
                }
                Ok(())
            };
            let (func, ty) = match name.as_str() {
                "lower" | "upper" => {
                    one(&|t| t == T::String, "string")?;
                    let f = if name == "lower" {
                        Func::Lower
                    } else {
                        Func::Upper
                    };
                    (f, Some(T::String))
                }
                "char_length" | "character_length" | "length" => {
                    one(&|t| t == T::String, "string")?;
                    (Func::CharLength, Some(T::Int))
                }
                "abs" => {
                    one(&ColumnType::is_numeric, "number")?;
                    (Func::Abs, ts[0])
                }
                "coalesce" => {
                    let mut ty = None;
                    for t in &ts {
                        ty = result_type(ty, *t)?;
                    }
                    (Func::Coalesce, ty)
                }
                "date_format" => {
                    let pattern = match args.get(1) {
                        Some(ast::Expr::Value(v)) => match &v.value {
                            ast::Value::SingleQuotedString(p) => p.clone(),
                            _ => String::new(),
                        },
                        _ => String::new(),
                    };
                    if ts.len() != 2
                        || !ts[0].is_none_or(|t| t == T::Timestamp || t == T::Int)
                        || pattern.is_empty()
                    {
                        return Err(
                            "date_format() takes a timestamp and a pattern literal such as \
                             'yyyy-MM-dd HH:mm:ss'"
                                .into(),
                        );
                    }
                    xs.truncate(1);
                    (
                        Func::DateFormat(DatePattern::new(&pattern)?),
                        Some(T::String),
                    )
                }
                "k8s_workload" => {
                    one(&|t| t == T::String, "string")?;
                    (Func::K8sWorkload, Some(T::String))
                }
                "concat" => {
                    if ts.iter().any(|t| !t.is_none_or(|t| t == T::String)) {
                        return Err("concat() takes strings (CAST others)".into());
                    }
                    (Func::Concat, Some(T::String))
                }
                _ if crate::sql::aggregate::is_aggregate(&name) => {
                    return Err(format!("aggregate {name}() outside a window's select"))
                }
                _ => return Err(format!("unknown function {name}()")),
            };
            (Expr::Call(func, xs), ty)
        }
        other => return Err(format!("unsupported expression `{other}`")),
    })
}

/// The plain positional arguments of a call (`*` is not one).
pub(crate) fn plain_args(f: &ast::Function) -> Result<Vec<ast::Expr>, String> {
    match &f.args {
        ast::FunctionArguments::None => Ok(Vec::new()),
        ast::FunctionArguments::List(list) => list
            .args
            .iter()
            .map(|a| match a {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Ok(e.clone()),
                other => Err(format!("unsupported argument `{other}` of {}", f.name)),
            })
            .collect(),
        ast::FunctionArguments::Subquery(_) => Err("subqueries are not supported".into()),
    }
}

fn column(name: &str, scope: &Scope) -> Result<(Expr, Option<ColumnType>), String> {
    let (_, e, t) = scope.resolve(name).ok_or_else(|| {
        let names: Vec<&str> = scope
            .names
            .iter()
            .chain(scope.bound.iter().map(|(n, ..)| n))
            .map(String::as_str)
            .collect();
        format!("unknown column `{name}` (columns: {})", names.join(", "))
    })?;
    Ok((e, Some(t)))
}

fn literal(v: &ast::Value) -> Result<(Expr, Option<ColumnType>), String> {
    use ColumnType as T;
    Ok(match v {
        // As in Flink SQL: a number with an exponent is a DOUBLE, one with a
        // point a DECIMAL, other numbers integers.
        ast::Value::Number(n, _) if n.contains(['e', 'E']) => {
            let f: f64 = n.parse().map_err(|_| format!("bad number {n}"))?;
            if !f.is_finite() {
                return Err(format!("number {n} does not fit a double"));
            }
            (Expr::Literal(Value::Float(f)), Some(T::Float))
        }
        ast::Value::Number(n, _) => {
            if let Ok(i) = n.parse::<i64>() {
                (Expr::Literal(Value::Int(i)), Some(T::Int))
            } else {
                let d = Decimal::from_str_exact(n)
                    .or_else(|_| Decimal::from_scientific(n))
                    .map_err(|_| format!("number {n} does not fit a decimal"))?;
                (Expr::Literal(Value::Decimal(d)), Some(T::Decimal))
            }
        }
        ast::Value::SingleQuotedString(s) => (Expr::Literal(Value::str(s)), Some(T::String)),
        ast::Value::Boolean(b) => (Expr::Literal(Value::Bool(*b)), Some(T::Bool)),
        ast::Value::Null => (Expr::Literal(Value::Null), None),
        other => return Err(format!("unsupported literal {other}")),
    })
}

/// Maps a SQL type name (`VARCHAR`, `BIGINT`, `DECIMAL(10, 2)`, …).
///
/// # Errors
/// An unknown type.
pub fn sql_type(name: &str) -> Result<ColumnType, String> {
    let base = name
        .split('(')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    Ok(match base.as_str() {
        "string" | "varchar" | "char" | "text" | "character varying" => ColumnType::String,
        "int" | "integer" | "bigint" | "smallint" | "tinyint" | "int64" => ColumnType::Int,
        "float" | "double" | "real" | "double precision" | "float64" => ColumnType::Float,
        "decimal" | "numeric" | "dec" => ColumnType::Decimal,
        "bool" | "boolean" => ColumnType::Bool,
        "timestamp" | "timestamp(3)" => ColumnType::Timestamp,
        _ => return Err(format!("unsupported type {name}")),
    })
}

fn show(t: Option<ColumnType>) -> String {
    t.map_or("NULL".to_string(), |t| t.to_string())
}

fn want_bool(t: Option<ColumnType>, what: &str) -> Result<(), String> {
    if t.is_none_or(|t| t == ColumnType::Bool) {
        Ok(())
    } else {
        Err(format!("{what} needs a bool, not {}", show(t)))
    }
}

/// The common type of two branches (CASE, COALESCE).
fn result_type(a: Option<ColumnType>, b: Option<ColumnType>) -> Result<Option<ColumnType>, String> {
    Ok(match (a, b) {
        (None, t) | (t, None) => t,
        (Some(a), Some(b)) if a == b => Some(a),
        (Some(a), Some(b)) if a.is_numeric() && b.is_numeric() => Some(numeric(a, b)),
        (Some(a), Some(b)) => {
            return Err(format!("branches of types {a} and {b} do not mix"));
        }
    })
}

/// Promotion: int → decimal → float.
fn numeric(a: ColumnType, b: ColumnType) -> ColumnType {
    use ColumnType as T;
    if a == T::Float || b == T::Float {
        T::Float
    } else if a == T::Decimal || b == T::Decimal {
        T::Decimal
    } else {
        T::Int
    }
}

fn comparable(a: Option<ColumnType>, b: Option<ColumnType>) -> Result<(), String> {
    use ColumnType as T;
    match (a, b) {
        (None, _) | (_, None) => Ok(()),
        (Some(a), Some(b))
            if a == b
                || (a.is_numeric() && b.is_numeric())
                || matches!((a, b), (T::Timestamp, T::Int) | (T::Int, T::Timestamp)) =>
        {
            Ok(())
        }
        (Some(a), Some(b)) => Err(format!("cannot compare {a} with {b}")),
    }
}

fn binary(
    op: &BinaryOperator,
    l: Expr,
    lt: Option<ColumnType>,
    r: Expr,
    rt: Option<ColumnType>,
) -> Result<(Expr, Option<ColumnType>), String> {
    use ColumnType as T;
    let (l, r) = (Box::new(l), Box::new(r));
    let cmp = |c: Cmp, l, r| -> Result<(Expr, Option<ColumnType>), String> {
        comparable(lt, rt)?;
        Ok((Expr::Cmp(c, l, r), Some(T::Bool)))
    };
    let arith = |a: Arith, l, r| -> Result<(Expr, Option<ColumnType>), String> {
        let ty = match (lt, rt) {
            (None, _) | (_, None) => return Ok((Expr::Literal(Value::Null), lt.or(rt))),
            (Some(T::Timestamp), Some(T::Int)) if matches!(a, Arith::Add | Arith::Sub) => {
                T::Timestamp
            }
            (Some(T::Int), Some(T::Timestamp)) if a == Arith::Add => T::Timestamp,
            (Some(T::Timestamp), Some(T::Timestamp)) if a == Arith::Sub => T::Int,
            (Some(x), Some(y)) if x.is_numeric() && y.is_numeric() => numeric(x, y),
            (Some(x), Some(y)) => return Err(format!("cannot apply {op} to {x} and {y}")),
        };
        Ok((Expr::Arith(a, l, r, ty), Some(ty)))
    };
    match op {
        BinaryOperator::Plus => arith(Arith::Add, l, r),
        BinaryOperator::Minus => arith(Arith::Sub, l, r),
        BinaryOperator::Multiply => arith(Arith::Mul, l, r),
        BinaryOperator::Divide => arith(Arith::Div, l, r),
        BinaryOperator::Modulo => arith(Arith::Rem, l, r),
        BinaryOperator::Eq => cmp(Cmp::Eq, l, r),
        BinaryOperator::NotEq => cmp(Cmp::Ne, l, r),
        BinaryOperator::Lt => cmp(Cmp::Lt, l, r),
        BinaryOperator::LtEq => cmp(Cmp::Le, l, r),
        BinaryOperator::Gt => cmp(Cmp::Gt, l, r),
        BinaryOperator::GtEq => cmp(Cmp::Ge, l, r),
        BinaryOperator::And | BinaryOperator::Or => {
            want_bool(lt, "AND/OR")?;
            want_bool(rt, "AND/OR")?;
            let e = if *op == BinaryOperator::And {
                Expr::And(l, r)
            } else {
                Expr::Or(l, r)
            };
            Ok((e, Some(T::Bool)))
        }
        BinaryOperator::StringConcat => {
            if ![lt, rt].iter().all(|t| t.is_none_or(|t| t == T::String)) {
                return Err("|| takes strings (CAST others)".into());
            }
            Ok((Expr::Call(Func::Concat, vec![*l, *r]), Some(T::String)))
        }
        other => Err(format!("unsupported operator {other}")),
    }
}

fn like_pattern(p: &str) -> Arc<[LikeToken]> {
    let mut out = Vec::new();
    let mut text = String::new();
    for c in p.chars() {
        let token = match c {
            '%' => LikeToken::Any,
            '_' => LikeToken::One,
            c => {
                text.push(c);
                continue;
            }
        };
        if !text.is_empty() {
            out.push(LikeToken::Text(std::mem::take(&mut text)));
        }
        out.push(token);
    }
    if !text.is_empty() {
        out.push(LikeToken::Text(text));
    }
    out.into()
}

fn like(s: &str, p: &[LikeToken]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((LikeToken::Text(t), rest)) => {
            s.strip_prefix(t.as_str()).is_some_and(|s| like(s, rest))
        }
        Some((LikeToken::One, rest)) => {
            let mut c = s.chars();
            c.next().is_some() && like(c.as_str(), rest)
        }
        Some((LikeToken::Any, rest)) => {
            let mut s = s;
            loop {
                if like(s, rest) {
                    return true;
                }
                let mut c = s.chars();
                if c.next().is_none() {
                    return false;
                }
                s = c.as_str();
            }
        }
    }
}

/// A `date_format` pattern, parsed once.
#[derive(Clone, Debug)]
pub struct DatePattern {
    /// The pattern as written.
    text: Arc<str>,
    items: Arc<[chrono::format::Item<'static>]>,
}

impl DatePattern {
    fn new(java: &str) -> Result<DatePattern, String> {
        let items = chrono::format::StrftimeItems::new(&java_date_pattern(java)?)
            .parse_to_owned()
            .map_err(|e| format!("date_format: {e}"))?;
        Ok(DatePattern {
            text: java.into(),
            items: items.into(),
        })
    }
}

impl PartialEq for DatePattern {
    fn eq(&self, other: &DatePattern) -> bool {
        self.text == other.text
    }
}

impl Eq for DatePattern {}

/// `k8s_workload(pod)`, memoised per thread: pods are few and repeat on
/// every record, so the stripped name is shared, not allocated each time.
/// The decoder interns strings, so the memo is looked up by the string's
/// address first (the memo holds the `Arc`, so an address it knows is never
/// another string's), and by its text for strings made elsewhere (one
/// TrainTicket day: −15 M of 1 969 M instructions against the text memo
/// alone).
fn k8s_workload(pod: Arc<str>) -> Value {
    use std::cell::RefCell;
    type Memo = (
        hashbrown::HashMap<usize, (Arc<str>, Value)>,
        hashbrown::HashMap<Arc<str>, Value>,
    );
    thread_local! {
        static SEEN: RefCell<Memo> = RefCell::default();
    }
    const CAP: usize = 1 << 14;
    SEEN.with_borrow_mut(|(by_ptr, by_text)| {
        let at = Arc::as_ptr(&pod) as *const u8 as usize;
        if let Some((_, v)) = by_ptr.get(&at) {
            return v.clone();
        }
        let v = match by_text.get(&*pod) {
            Some(v) => v.clone(),
            None => {
                let w = streamforge_sources::mapping::strip_pod_suffix(&pod);
                let v = if w.len() == pod.len() {
                    Value::Str(pod.clone())
                } else {
                    Value::str(w)
                };
                if by_text.len() < CAP {
                    by_text.insert(pod.clone(), v.clone());
                }
                v
            }
        };
        if by_ptr.len() < CAP {
            by_ptr.insert(at, (pod, v.clone()));
        }
        v
    })
}

/// A Java `SimpleDateFormat` pattern (the letters Flink's `DATE_FORMAT`
/// takes: `yyyy yy MM dd HH mm ss SSS`, text in single quotes) as a chrono
/// format string.
fn java_date_pattern(p: &str) -> Result<String, String> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let mut n = 1;
        while i + n < chars.len() && chars[i + n] == c {
            n += 1;
        }
        match (c, n) {
            ('\'', _) => {
                let close = chars[i + 1..]
                    .iter()
                    .position(|&x| x == '\'')
                    .ok_or("date_format: unclosed quote in the pattern")?;
                for &x in &chars[i + 1..i + 1 + close] {
                    if x == '%' {
                        out.push('%');
                    }
                    out.push(x);
                }
                i += close + 2;
                continue;
            }
            ('y', 4) => out.push_str("%Y"),
            ('y', 2) => out.push_str("%y"),
            ('M', 2) => out.push_str("%m"),
            ('d', 2) => out.push_str("%d"),
            ('H', 2) => out.push_str("%H"),
            ('m', 2) => out.push_str("%M"),
            ('s', 2) => out.push_str("%S"),
            ('S', 3) => out.push_str("%3f"),
            (c, _) if c.is_ascii_alphabetic() => {
                return Err(format!(
                "date_format: pattern letters `{}` are not supported (yyyy yy MM dd HH mm ss SSS)",
                String::from_iter(std::iter::repeat_n(c, n))
            ))
            }
            ('%', _) => out.push_str(&"%%".repeat(n)),
            (c, _) => out.extend(std::iter::repeat_n(c, n)),
        }
        i += n;
    }
    Ok(out)
}

/// A number as a decimal (ints exactly).
fn to_decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Int(i) => Some(Decimal::from(*i)),
        Value::Decimal(d) => Some(*d),
        _ => None,
    }
}

/// A number as a float.
pub(crate) fn to_f64(v: &Value) -> Option<f64> {
    use rust_decimal::prelude::ToPrimitive;
    match v {
        Value::Int(i) | Value::Timestamp(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Decimal(d) => d.to_f64(),
        _ => None,
    }
}

/// Compares two non-null values of comparable types (numbers promoted).
pub(crate) fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Int(x) | Value::Timestamp(x), Value::Int(y) | Value::Timestamp(y)) => x.cmp(y),
        (Value::Float(_), _) | (_, Value::Float(_)) => match (to_f64(a), to_f64(b)) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            _ => a.cmp(b),
        },
        (Value::Decimal(_), _) | (_, Value::Decimal(_)) => match (to_decimal(a), to_decimal(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => a.cmp(b),
        },
        _ => a.cmp(b),
    }
}

fn overflow(a: &Value, op: Arith, b: &Value) -> String {
    let sym = match op {
        Arith::Add => "+",
        Arith::Sub => "-",
        Arith::Mul => "*",
        Arith::Div => "/",
        Arith::Rem => "%",
    };
    match op {
        Arith::Div | Arith::Rem if to_f64(b) == Some(0.0) => {
            format!("division by zero: {a} {sym} {b}")
        }
        _ => format!("numeric overflow: {a} {sym} {b}"),
    }
}

fn arith(op: Arith, a: &Value, b: &Value, ty: ColumnType) -> Result<Value, String> {
    use ColumnType as T;
    let fail = || overflow(a, op, b);
    Ok(match ty {
        T::Int | T::Timestamp => {
            let (Some(x), Some(y)) = (int_of(a), int_of(b)) else {
                return Err(fail());
            };
            let r = int_op(op, x, y).ok_or_else(fail)?;
            if ty == T::Timestamp {
                if !(0..=streamforge_sources::row::MAX_TIMESTAMP_MS).contains(&r) {
                    return Err(format!("timestamp out of range: {a} {op:?} {b}"));
                }
                Value::Timestamp(r)
            } else {
                Value::Int(r)
            }
        }
        T::Decimal => {
            let (Some(x), Some(y)) = (to_decimal(a), to_decimal(b)) else {
                return Err(fail());
            };
            Value::Decimal(
                match op {
                    Arith::Add => x.checked_add(y),
                    Arith::Sub => x.checked_sub(y),
                    Arith::Mul => x.checked_mul(y),
                    Arith::Div => x.checked_div(y),
                    Arith::Rem => x.checked_rem(y),
                }
                .ok_or_else(fail)?,
            )
        }
        T::Float => {
            let (Some(x), Some(y)) = (to_f64(a), to_f64(b)) else {
                return Err(fail());
            };
            let r = float_op(op, x, y);
            if !r.is_finite() {
                return Err(fail());
            }
            Value::Float(r)
        }
        _ => return Err(fail()),
    })
}

/// `x op y` on integers; `None` on overflow or division by zero.
#[inline(always)]
fn int_op(op: Arith, x: i64, y: i64) -> Option<i64> {
    match op {
        Arith::Add => x.checked_add(y),
        Arith::Sub => x.checked_sub(y),
        Arith::Mul => x.checked_mul(y),
        Arith::Div => x.checked_div(y),
        Arith::Rem => x.checked_rem(y),
    }
}

/// `x op y` on floats (the caller rejects a non-finite result).
#[inline(always)]
fn float_op(op: Arith, x: f64, y: f64) -> f64 {
    match op {
        Arith::Add => x + y,
        Arith::Sub => x - y,
        Arith::Mul => x * y,
        Arith::Div => x / y,
        Arith::Rem => x % y,
    }
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) | Value::Timestamp(i) => Some(*i),
        _ => None,
    }
}

/// `CAST(v AS to)`: explicit conversions, errors when the value does not fit.
fn cast(v: Value, to: ColumnType) -> Result<Value, String> {
    use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
    use ColumnType as T;
    if v.is_null() || v.column_type() == Some(to) {
        return Ok(v);
    }
    let bad = || format!("cannot CAST {v} AS {to}");
    Ok(match (to, &v) {
        (T::String, _) => Value::str(&v.to_text()),
        (T::Int, Value::Str(s)) => Value::Int(s.trim().parse().map_err(|_| bad())?),
        (T::Int, Value::Timestamp(t)) => Value::Int(*t),
        (T::Int, Value::Float(f))
            if f.trunc() >= i64::MIN as f64 && f.trunc() < i64::MAX as f64 =>
        {
            Value::Int(f.trunc() as i64)
        }
        (T::Int, Value::Decimal(d)) => Value::Int(d.trunc().to_i64().ok_or_else(bad)?),
        (T::Int, Value::Bool(b)) => Value::Int(*b as i64),
        (T::Float, Value::Str(s)) => {
            let f: f64 = s.trim().parse().map_err(|_| bad())?;
            if !f.is_finite() {
                return Err(bad());
            }
            Value::Float(f)
        }
        (T::Float, _) => Value::Float(to_f64(&v).ok_or_else(bad)?),
        (T::Decimal, Value::Str(s)) => {
            Value::Decimal(Decimal::from_str_exact(s.trim()).map_err(|_| bad())?)
        }
        (T::Decimal, Value::Int(i)) => Value::Decimal(Decimal::from(*i)),
        (T::Decimal, Value::Float(f)) => Value::Decimal(Decimal::from_f64(*f).ok_or_else(bad)?),
        (T::Bool, Value::Str(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(bad()),
        },
        (T::Timestamp, Value::Int(i))
            if (0..=streamforge_sources::row::MAX_TIMESTAMP_MS).contains(i) =>
        {
            Value::Timestamp(*i)
        }
        _ => return Err(bad()),
    })
}

fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

impl Expr {
    /// Evaluates the expression over `row`.
    ///
    /// # Errors
    /// Overflow, division by zero, a failed CAST: the row's error.
    #[inline]
    pub fn eval(&self, row: &[Value]) -> Result<Value, String> {
        // The common shapes here, in a small frame; the rest in `eval_any`.
        match self {
            Expr::Column(i) => Ok(row[*i].clone()),
            Expr::Literal(v) => Ok(v.clone()),
            Expr::Arith(op, l, r, ty) => match (operand(l, row), operand(r, row)) {
                (Some(a), Some(b)) => match arith_fast(*op, a, b, *ty) {
                    Some(v) => Ok(v),
                    None => arith_nullable(*op, a, b, *ty),
                },
                _ => self.eval_any(row),
            },
            _ => self.eval_any(row),
        }
    }

    /// [`Expr::eval`] of any expression.
    #[inline(never)]
    fn eval_any(&self, row: &[Value]) -> Result<Value, String> {
        Ok(match self {
            Expr::Column(i) => row[*i].clone(),
            Expr::Literal(v) => v.clone(),
            // Column and constant operands were taken by `eval`.
            Expr::Arith(op, l, r, ty) => arith_nullable(*op, &l.eval(row)?, &r.eval(row)?, *ty)?,
            Expr::Cmp(op, l, r) => {
                if let (Some(a), Some(b)) = (operand(l, row), operand(r, row)) {
                    return Ok(cmp_nullable(*op, a, b));
                }
                cmp_nullable(*op, &l.eval(row)?, &r.eval(row)?)
            }
            Expr::And(l, r) => match truth(&l.eval(row)?) {
                Some(false) => Value::Bool(false),
                lv => match (lv, truth(&r.eval(row)?)) {
                    (_, Some(false)) => Value::Bool(false),
                    (Some(true), Some(true)) => Value::Bool(true),
                    _ => Value::Null,
                },
            },
            Expr::Or(l, r) => match truth(&l.eval(row)?) {
                Some(true) => Value::Bool(true),
                lv => match (lv, truth(&r.eval(row)?)) {
                    (_, Some(true)) => Value::Bool(true),
                    (Some(false), Some(false)) => Value::Bool(false),
                    _ => Value::Null,
                },
            },
            Expr::Not(x) => match truth(&x.eval(row)?) {
                Some(b) => Value::Bool(!b),
                None => Value::Null,
            },
            Expr::Neg(x) => match x.eval(row)? {
                Value::Null => Value::Null,
                Value::Int(i) => Value::Int(i.checked_neg().ok_or("numeric overflow: -i64::MIN")?),
                Value::Float(f) => Value::Float(-f),
                Value::Decimal(d) => Value::Decimal(-d),
                v => return Err(format!("cannot negate {v}")),
            },
            Expr::IsNull(x, is) => Value::Bool(x.eval(row)?.is_null() == *is),
            Expr::IsBool(x, want, negated) => {
                Value::Bool((truth(&x.eval(row)?) == Some(*want)) != *negated)
            }
            Expr::InList(x, list, negated) => {
                let v = x.eval(row)?;
                if v.is_null() {
                    return Ok(Value::Null);
                }
                let mut saw_null = false;
                for item in list {
                    let i = item.eval(row)?;
                    if i.is_null() {
                        saw_null = true;
                    } else if compare(&v, &i).is_eq() {
                        return Ok(Value::Bool(!negated));
                    }
                }
                if saw_null {
                    Value::Null
                } else {
                    Value::Bool(*negated)
                }
            }
            Expr::Like(x, p, negated) => match x.eval(row)? {
                Value::Str(s) => Value::Bool(like(&s, p) != *negated),
                _ => Value::Null,
            },
            Expr::Case(whens, otherwise) => {
                for (c, r) in whens {
                    if truth(&c.eval(row)?) == Some(true) {
                        return r.eval(row);
                    }
                }
                match otherwise {
                    Some(x) => x.eval(row)?,
                    None => Value::Null,
                }
            }
            Expr::Cast(x, to) => cast(x.eval(row)?, *to)?,
            Expr::Call(f, args) => {
                let mut vs = Vec::with_capacity(args.len());
                for a in args {
                    vs.push(a.eval(row)?);
                }
                call(f, vs)?
            }
        })
    }

    /// Evaluates a condition: `true` only when it is `TRUE` (SQL `WHERE`).
    ///
    /// # Errors
    /// As [`Expr::eval`].
    pub fn holds(&self, row: &[Value]) -> Result<bool, String> {
        Ok(truth(&self.eval(row)?) == Some(true))
    }
}

fn call(f: &Func, mut vs: Vec<Value>) -> Result<Value, String> {
    Ok(match f {
        Func::Coalesce => vs.into_iter().find(|v| !v.is_null()).unwrap_or(Value::Null),
        _ if vs.iter().any(Value::is_null) => Value::Null,
        Func::Lower | Func::Upper => match vs.pop() {
            Some(Value::Str(s)) => Value::str(&if *f == Func::Lower {
                s.to_lowercase()
            } else {
                s.to_uppercase()
            }),
            v => return Err(format!("{f:?} of {v:?}")),
        },
        Func::CharLength => match vs.pop() {
            Some(Value::Str(s)) => Value::Int(s.chars().count() as i64),
            v => return Err(format!("char_length of {v:?}")),
        },
        Func::Abs => match vs.pop() {
            Some(Value::Int(i)) => Value::Int(i.checked_abs().ok_or("numeric overflow: abs")?),
            Some(Value::Float(x)) => Value::Float(x.abs()),
            Some(Value::Decimal(d)) => Value::Decimal(d.abs()),
            v => return Err(format!("abs of {v:?}")),
        },
        Func::DateFormat(pattern) => match vs.pop() {
            Some(Value::Timestamp(ms) | Value::Int(ms)) => {
                let t = chrono::DateTime::from_timestamp_millis(ms)
                    .ok_or_else(|| format!("date_format: {ms} ms is out of range"))?;
                Value::str(&t.format_with_items(pattern.items.iter()).to_string())
            }
            v => return Err(format!("date_format of {v:?}")),
        },
        Func::K8sWorkload => match vs.pop() {
            Some(Value::Str(s)) => k8s_workload(s),
            v => return Err(format!("k8s_workload of {v:?}")),
        },
        Func::Concat => {
            let mut s = String::new();
            for v in &vs {
                s.push_str(&v.to_text());
            }
            Value::str(&s)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_number() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            any::<i64>().prop_map(Value::Int),
            (-3i64..3).prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            Just(Value::Float(0.0)),
            Just(Value::Null),
            (0i64..2_000_000_000_000).prop_map(Value::Timestamp),
            (-1000i64..1000).prop_map(|i| Value::Decimal(Decimal::new(i, 2))),
        ]
    }

    proptest::proptest! {
        #[test]
        fn the_arithmetic_fast_path_agrees_with_arith(a in any_number(), b in any_number(),
                                                      op in 0..5usize, float in proptest::bool::ANY) {
            let op = [Arith::Add, Arith::Sub, Arith::Mul, Arith::Div, Arith::Rem][op];
            let ty = if float { ColumnType::Float } else { ColumnType::Int };
            if let Some(v) = arith_fast(op, &a, &b, ty) {
                let slow = arith_nullable(op, &a, &b, ty).expect("the fast path only takes what succeeds");
                proptest::prop_assert!(v == slow || matches!((&v, &slow), (Value::Float(x), Value::Float(y)) if x.to_bits() == y.to_bits()),
                                       "{a:?} {op:?} {b:?}: fast {v:?}, arith {slow:?}");
            }
        }
    }

    fn scope() -> Scope {
        Scope::new([
            ("i".into(), ColumnType::Int),
            ("f".into(), ColumnType::Float),
            ("d".into(), ColumnType::Decimal),
            ("s".into(), ColumnType::String),
            ("b".into(), ColumnType::Bool),
            ("ts".into(), ColumnType::Timestamp),
        ])
    }

    fn row() -> Vec<Value> {
        vec![
            Value::Int(7),
            Value::Float(0.5),
            Value::Decimal("19.99".parse().unwrap()),
            Value::str("Paid"),
            Value::Null,
            Value::Timestamp(60_000),
        ]
    }

    fn eval(sql: &str) -> Result<Value, String> {
        compile(sql, &scope())?.0.eval(&row())
    }

    #[test]
    fn sql_semantics() {
        let dec = |s: &str| Value::Decimal(s.parse().unwrap());
        let cases: Vec<(&str, Value)> = vec![
            ("i / 2", Value::Int(3)),
            ("i % 4", Value::Int(3)),
            ("d * 3", dec("59.97")),
            ("d + 0.01", dec("20.00")),
            ("i + f", Value::Float(7.5)),
            ("-i", Value::Int(-7)),
            ("i + NULL", Value::Null),
            ("b AND FALSE", Value::Bool(false)),
            ("b AND TRUE", Value::Null),
            ("b OR TRUE", Value::Bool(true)),
            ("NOT b", Value::Null),
            ("b IS NULL", Value::Bool(true)),
            ("b IS NOT TRUE", Value::Bool(true)),
            ("i IN (1, 7)", Value::Bool(true)),
            ("i NOT IN (1, NULL)", Value::Null),
            ("i BETWEEN 7 AND 8", Value::Bool(true)),
            ("d > 19.98 AND d < 20", Value::Bool(true)),
            ("s LIKE 'P_i%'", Value::Bool(true)),
            ("s NOT LIKE '%x%'", Value::Bool(true)),
            ("lower(s) = 'paid'", Value::Bool(true)),
            ("char_length(s)", Value::Int(4)),
            ("s || '!'", Value::str("Paid!")),
            ("coalesce(b, i > 3)", Value::Bool(true)),
            (
                "CASE WHEN i > 5 THEN 'big' ELSE 'small' END",
                Value::str("big"),
            ),
            ("CASE s WHEN 'Paid' THEN 1 END", Value::Int(1)),
            ("CAST(d AS INT)", Value::Int(19)),
            ("CAST(i AS VARCHAR)", Value::str("7")),
            ("CAST('2.50' AS DECIMAL(10, 2))", dec("2.50")),
            ("ts - 1000", Value::Timestamp(59_000)),
            ("ts >= 60000", Value::Bool(true)),
            ("abs(-2.5)", dec("2.5")),
            // As in Flink: an exponent makes a DOUBLE literal, a point a DECIMAL.
            ("i / 2e0", Value::Float(3.5)),
            ("i / 2.0", dec("3.5")),
            (
                "date_format(ts + 1675079400123, 'yyyy-MM-dd HH:mm:ss.SSS')",
                Value::str("2023-01-30 11:51:00.123"),
            ),
            (
                "date_format(ts, 'yy/MM/dd ''T''HH')",
                Value::str("70/01/01 T00"),
            ),
            (
                "k8s_workload('ts-order-service-6d4b8c7f9-x2x4z')",
                Value::str("ts-order-service"),
            ),
            ("k8s_workload('redis-cart-0')", Value::str("redis-cart-0")),
        ];
        for (sql, want) in cases {
            assert_eq!(eval(sql).unwrap(), want, "{sql}");
        }
    }

    #[test]
    fn errors_are_reported_not_wrapped() {
        assert!(eval("i / 0").unwrap_err().contains("division by zero"));
        assert!(eval("9223372036854775807 + i")
            .unwrap_err()
            .contains("overflow"));
        assert!(eval("CAST(s AS INT)").unwrap_err().contains("cannot CAST"));
        assert!(eval("f / 0").unwrap_err().contains("division by zero"));
        for bad in [
            "s + 1",
            "i > 'x'",
            "NOT i",
            "sum(i)",
            "nope(i)",
            "x > 1",
            "i >",
            "i > 1 2",
            "date_format(ts, 'YYYY')",
            "date_format(ts, s)",
            "date_format(s, 'yyyy')",
            "1e999",
        ] {
            assert!(compile(bad, &scope()).is_err(), "{bad}");
        }
    }
}

/// A column or a constant, borrowed from the row or the expression.
#[inline]
fn operand<'a>(e: &'a Expr, row: &'a [Value]) -> Option<&'a Value> {
    match e {
        Expr::Column(i) => Some(&row[*i]),
        Expr::Literal(v) => Some(v),
        _ => None,
    }
}

/// `a op b` for the common cases — ints to an int, ints and floats to a
/// float — when it succeeds; `None` sends every other case (nulls,
/// decimals, timestamps, overflow, division by zero, a non-finite float)
/// to [`arith`], which gives the same results and the errors.
#[inline(always)]
fn arith_fast(op: Arith, a: &Value, b: &Value, ty: ColumnType) -> Option<Value> {
    match ty {
        ColumnType::Int => {
            let (Value::Int(x), Value::Int(y)) = (a, b) else {
                return None;
            };
            int_op(op, *x, *y).map(Value::Int)
        }
        ColumnType::Float => {
            let num = |v: &Value| match v {
                Value::Int(i) => Some(*i as f64),
                Value::Float(f) => Some(*f),
                _ => None,
            };
            let r = float_op(op, num(a)?, num(b)?);
            r.is_finite().then_some(Value::Float(r))
        }
        _ => None,
    }
}

/// `a op b`, NULL when either is NULL.
#[inline]
fn arith_nullable(op: Arith, a: &Value, b: &Value, ty: ColumnType) -> Result<Value, String> {
    if a.is_null() || b.is_null() {
        Ok(Value::Null)
    } else {
        arith(op, a, b, ty)
    }
}

/// `a op b` for a comparison, NULL when either is NULL.
#[inline]
fn cmp_nullable(op: Cmp, a: &Value, b: &Value) -> Value {
    if a.is_null() || b.is_null() {
        return Value::Null;
    }
    let o = compare(a, b);
    Value::Bool(match op {
        Cmp::Eq => o.is_eq(),
        Cmp::Ne => o.is_ne(),
        Cmp::Lt => o.is_lt(),
        Cmp::Le => o.is_le(),
        Cmp::Gt => o.is_gt(),
        Cmp::Ge => o.is_ge(),
    })
}
