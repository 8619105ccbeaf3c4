use super::{Outcome, OutcomeError};

/// Pairs two outcomes.
///
/// Both `Ok` give `Ok((a, b))`. Otherwise the more serious variant wins,
/// `Err` > `Cancelled` > `Retry` > `Pending`, and on a tie the first argument
/// wins. Two batches are zipped element by element (stopping at the shorter);
/// a batch and an `Ok` pair the value with every element (hence `Clone`).
///
/// ```
/// use batpak::outcome::{zip, Outcome};
/// assert_eq!(zip(Outcome::ok(1), Outcome::ok("a")), Outcome::ok((1, "a")));
/// let z = zip(Outcome::<u8>::retry(10, 1, 3, "busy"), Outcome::<u8>::cancelled("stop"));
/// assert!(z.is_cancelled());
/// ```
pub fn zip<A: Clone, B: Clone>(a: Outcome<A>, b: Outcome<B>) -> Outcome<(A, B)> {
    use Outcome::{Batch, Cancelled, Err, Ok, Pending, Retry};
    // Arm order encodes the priority; within an or-pattern the left side (the
    // first argument) is tried first, so it wins ties.
    match (a, b) {
        (Ok(x), Ok(y)) => Ok((x, y)),
        (Err(e), _) | (_, Err(e)) => Err(e),
        (Cancelled { reason }, _) | (_, Cancelled { reason }) => Cancelled { reason },
        (
            Retry {
                after_ms,
                attempt,
                max_attempts,
                reason,
            },
            _,
        )
        | (
            _,
            Retry {
                after_ms,
                attempt,
                max_attempts,
                reason,
            },
        ) => Retry {
            after_ms,
            attempt,
            max_attempts,
            reason,
        },
        (
            Pending {
                condition,
                resume_token,
            },
            _,
        )
        | (
            _,
            Pending {
                condition,
                resume_token,
            },
        ) => Pending {
            condition,
            resume_token,
        },
        (Batch(xs), Batch(ys)) => Batch(xs.into_iter().zip(ys).map(|(x, y)| zip(x, y)).collect()),
        (Batch(xs), Ok(y)) => Batch(xs.into_iter().map(|x| zip(x, Ok(y.clone()))).collect()),
        (Ok(x), Batch(ys)) => Batch(ys.into_iter().map(|y| zip(Ok(x.clone()), y)).collect()),
    }
}

/// Collects every `Ok` value in order.
///
/// The first `Err`, `Cancelled`, `Retry` or `Pending` ends the walk and is
/// returned. A nested batch is joined recursively and its values spliced in.
/// An empty vec gives `Ok(vec![])`.
///
/// ```
/// use batpak::outcome::{join_all, Outcome};
/// let all = join_all(vec![Outcome::ok(1), Outcome::batch(vec![Outcome::ok(2), Outcome::ok(3)])]);
/// assert_eq!(all, Outcome::ok(vec![1, 2, 3]));
/// assert!(join_all(vec![Outcome::ok(1), Outcome::cancelled("x")]).is_cancelled());
/// ```
pub fn join_all<T>(outcomes: Vec<Outcome<T>>) -> Outcome<Vec<T>> {
    let mut values = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        match outcome.shape() {
            super::Shape::Value(v) => values.push(v),
            super::Shape::Batch(inner) => match join_all(inner) {
                Outcome::Ok(vs) => values.extend(vs),
                stop => return stop,
            },
            super::Shape::Other(stop) => return stop,
        }
    }
    Outcome::Ok(values)
}

/// The first `Ok` wins.
///
/// `Err`s are skipped, and the last one is returned when nothing succeeds.
/// `Retry`, `Pending`, `Cancelled` and `Batch` are returned as soon as they are
/// met. An empty vec gives an `Internal` error `"join_any called with empty vec"`.
///
/// ```
/// use batpak::outcome::{join_any, ErrorKind, Outcome, OutcomeError};
/// let e = |m: &str| Outcome::<u8>::err(OutcomeError::new(ErrorKind::NotFound, m));
/// assert_eq!(join_any(vec![e("a"), Outcome::ok(7), e("b")]), Outcome::ok(7));
/// assert_eq!(join_any(vec![e("a"), e("b")]), e("b"));
/// ```
pub fn join_any<T>(outcomes: Vec<Outcome<T>>) -> Outcome<T> {
    let mut last_err = None;
    for outcome in outcomes {
        match outcome {
            Outcome::Ok(v) => return Outcome::Ok(v),
            Outcome::Err(e) => last_err = Some(e),
            other => return other,
        }
    }
    Outcome::Err(
        last_err.unwrap_or_else(|| OutcomeError::internal("join_any called with empty vec")),
    )
}
