//! A bound on how deeply a query nests: the evaluator recurses once per level, so a query nested
//! thousands of levels deep (`((((1))))...`, `1+1+1+...`) would overflow the stack. Measured and,
//! when too deep, taken apart without recursion (dropping the tree recursively would overflow
//! too).

use promql_parser::parser::Expr;

/// The deepest nesting the simulator evaluates. Flagger's templates nest a handful of levels;
/// Prometheus itself sets no bound.
pub(super) const MAX_DEPTH: usize = 64;

fn children(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::Aggregate(a) => std::iter::once(&*a.expr)
            .chain(a.param.as_deref())
            .collect(),
        Expr::Unary(u) => vec![&u.expr],
        Expr::Binary(b) => vec![&b.lhs, &b.rhs],
        Expr::Paren(p) => vec![&p.expr],
        Expr::Subquery(s) => vec![&s.expr],
        Expr::Call(c) => c.args.args.iter().map(|a| &**a).collect(),
        _ => Vec::new(),
    }
}

/// Whether `expr` nests deeper than [`MAX_DEPTH`], found without recursion.
pub(super) fn too_deep(expr: &Expr) -> bool {
    let mut stack = vec![(expr, 1)];
    while let Some((e, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return true;
        }
        stack.extend(children(e).into_iter().map(|c| (c, depth + 1)));
    }
    false
}

/// Drops `expr` node by node, without recursion.
pub(super) fn dismantle(expr: Expr) {
    let leaf = || {
        Box::new(Expr::NumberLiteral(promql_parser::parser::NumberLiteral {
            val: 0.0,
        }))
    };
    let mut stack = vec![Box::new(expr)];
    while let Some(mut e) = stack.pop() {
        match &mut *e {
            Expr::Aggregate(a) => {
                stack.push(std::mem::replace(&mut a.expr, leaf()));
                stack.extend(a.param.take());
            }
            Expr::Unary(u) => stack.push(std::mem::replace(&mut u.expr, leaf())),
            Expr::Binary(b) => {
                stack.push(std::mem::replace(&mut b.lhs, leaf()));
                stack.push(std::mem::replace(&mut b.rhs, leaf()));
            }
            Expr::Paren(p) => stack.push(std::mem::replace(&mut p.expr, leaf())),
            Expr::Subquery(s) => stack.push(std::mem::replace(&mut s.expr, leaf())),
            Expr::Call(c) => stack.append(&mut c.args.args),
            _ => {}
        }
        // `e` now holds leaves only: dropping it is shallow.
    }
}
