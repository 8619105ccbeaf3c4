use super::*;
use proptest::collection::vec;
use proptest::prelude::*;
use std::cell::RefCell;

fn arb_kind() -> impl Strategy<Value = ErrorKind> {
    prop_oneof![
        Just(ErrorKind::NotFound),
        Just(ErrorKind::Conflict),
        Just(ErrorKind::Validation),
        Just(ErrorKind::PolicyRejection),
        Just(ErrorKind::StorageError),
        Just(ErrorKind::Timeout),
        Just(ErrorKind::Serialization),
        Just(ErrorKind::Internal),
        any::<u16>().prop_map(ErrorKind::Custom),
    ]
}

fn arb_compensation() -> impl Strategy<Value = CompensationAction> {
    prop_oneof![
        vec(any::<u128>(), 0..3).prop_map(|event_ids| CompensationAction::Rollback { event_ids }),
        (any::<u128>(), ".{0,8}")
            .prop_map(|(target_id, message)| CompensationAction::Notify { target_id, message }),
        vec(any::<u128>(), 0..3)
            .prop_map(|resource_ids| CompensationAction::Release { resource_ids }),
        (".{0,8}", vec(any::<u8>(), 0..4))
            .prop_map(|(action_type, data)| CompensationAction::Custom { action_type, data }),
    ]
}

fn arb_error() -> impl Strategy<Value = OutcomeError> {
    (
        arb_kind(),
        ".{0,8}",
        proptest::option::of(arb_compensation()),
        any::<bool>(),
    )
        .prop_map(|(kind, message, compensation, retryable)| OutcomeError {
            kind,
            message,
            compensation,
            retryable,
        })
}

fn arb_wait() -> impl Strategy<Value = WaitCondition> {
    let leaf = prop_oneof![
        any::<u64>().prop_map(|resume_at_ms| WaitCondition::Timeout { resume_at_ms }),
        any::<u128>().prop_map(|event_id| WaitCondition::Event { event_id }),
        (any::<u16>(), vec(any::<u8>(), 0..4))
            .prop_map(|(tag, data)| WaitCondition::Custom { tag, data }),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(WaitCondition::All),
            vec(inner, 0..3).prop_map(WaitCondition::Any),
        ]
    })
}

/// Every variant except `Batch`.
fn arb_leaf() -> impl Strategy<Value = Outcome<i32>> {
    prop_oneof![
        3 => any::<i32>().prop_map(Outcome::Ok),
        1 => arb_error().prop_map(Outcome::Err),
        1 => (any::<u64>(), any::<u32>(), any::<u32>(), ".{0,6}").prop_map(|(a, b, c, r)| Outcome::retry(a, b, c, r)),
        1 => (arb_wait(), any::<u128>()).prop_map(|(c, t)| Outcome::pending(c, t)),
        1 => ".{0,6}".prop_map(Outcome::cancelled),
    ]
}

fn arb_outcome() -> impl Strategy<Value = Outcome<i32>> {
    arb_leaf().prop_recursive(3, 24, 4, |inner| vec(inner, 0..4).prop_map(Outcome::Batch))
}

/// A family of binds covering every variant, so the laws are exercised on
/// functions that fail, wait and fan out, not only on ones that succeed.
fn bind(k: u8) -> impl Fn(i32) -> Outcome<i32> + Clone {
    move |x: i32| {
        let k32 = i32::from(k);
        match x.wrapping_mul(31).wrapping_add(k32).rem_euclid(6) {
            0 => Outcome::ok(x.wrapping_add(k32)),
            1 => Outcome::ok(x.wrapping_mul(3)),
            2 => Outcome::err(OutcomeError::new(
                ErrorKind::Custom(u16::from(k)),
                format!("f{k}({x})"),
            )),
            3 => Outcome::retry(u64::from(x.unsigned_abs()), 1, 3, "busy"),
            4 => Outcome::cancelled(format!("c{x}")),
            _ => Outcome::batch(vec![
                Outcome::ok(x),
                Outcome::pending(
                    WaitCondition::Timeout {
                        resume_at_ms: u64::from(k),
                    },
                    u128::from(x.unsigned_abs()),
                ),
            ]),
        }
    }
}

fn pure(k: u8) -> impl Fn(i32) -> i32 + Clone {
    move |x: i32| x.wrapping_mul(i32::from(k) + 1).wrapping_sub(7)
}

fn rank<T>(o: &Outcome<T>) -> u8 {
    match o {
        Outcome::Err(_) => 4,
        Outcome::Cancelled { .. } => 3,
        Outcome::Retry { .. } => 2,
        Outcome::Pending { .. } => 1,
        _ => 0,
    }
}

fn leaves(o: Outcome<i32>, out: &mut Vec<Outcome<i32>>) {
    match o {
        Outcome::Batch(items) => items.into_iter().for_each(|i| leaves(i, out)),
        leaf => out.push(leaf),
    }
}

fn round_trip<T>(o: &Outcome<T>) -> Outcome<T>
where
    T: Serialize + for<'de> Deserialize<'de>,
{
    let json = serde_json::to_string(o).unwrap();
    serde_json::from_str(&json).unwrap()
}

proptest! {
    #[test]
    fn monad_left_identity(a in any::<i32>(), k in any::<u8>()) {
        prop_assert_eq!(Outcome::ok(a).and_then(bind(k)), bind(k)(a));
    }

    #[test]
    fn monad_right_identity(m in arb_outcome()) {
        prop_assert_eq!(m.clone().and_then(Outcome::ok), m);
    }

    #[test]
    fn monad_associativity(m in arb_outcome(), k1 in any::<u8>(), k2 in any::<u8>()) {
        let (f, g) = (bind(k1), bind(k2));
        let left = m.clone().and_then(f.clone()).and_then(g.clone());
        let right = m.and_then(move |x| f(x).and_then(g.clone()));
        prop_assert_eq!(left, right);
    }

    #[test]
    fn functor_identity(m in arb_outcome()) {
        prop_assert_eq!(m.clone().map(|x| x), m);
    }

    #[test]
    fn functor_composition(m in arb_outcome(), k1 in any::<u8>(), k2 in any::<u8>()) {
        let (f, g) = (pure(k1), pure(k2));
        let left = m.clone().map(f.clone()).map(g.clone());
        let right = m.map(move |x| g(f(x)));
        prop_assert_eq!(left, right);
    }

    #[test]
    fn map_is_bind_of_ok(m in arb_outcome(), k in any::<u8>()) {
        let f = pure(k);
        prop_assert_eq!(m.clone().map(f.clone()), m.and_then(move |x| Outcome::ok(f(x))));
    }

    #[test]
    fn flatten_is_bind_of_identity(m in arb_outcome(), k in any::<u8>()) {
        prop_assert_eq!(m.clone().map(bind(k)).flatten(), m.and_then(bind(k)));
    }

    #[test]
    fn zip_priority(a in arb_leaf(), b in arb_leaf()) {
        let z = zip(a.clone(), b.clone());
        match (&a, &b) {
            (Outcome::Ok(x), Outcome::Ok(y)) => prop_assert_eq!(z, Outcome::ok((*x, *y))),
            _ => {
                let winner = if rank(&a) >= rank(&b) { a } else { b };
                prop_assert_eq!(z.map(|_| ()), winner.map(|_| ()));
            }
        }
    }

    #[test]
    fn zip_batches_pairwise(xs in vec(arb_leaf(), 0..5), ys in vec(arb_leaf(), 0..5)) {
        let z = zip(Outcome::Batch(xs.clone()), Outcome::Batch(ys.clone()));
        let expected: Vec<_> = xs.into_iter().zip(ys).map(|(x, y)| zip(x, y)).collect();
        prop_assert_eq!(z, Outcome::Batch(expected));
    }

    #[test]
    fn zip_batch_with_ok(xs in vec(arb_leaf(), 0..5), y in any::<i32>()) {
        let left = zip(Outcome::Batch(xs.clone()), Outcome::ok(y));
        let right = zip(Outcome::ok(y), Outcome::Batch(xs.clone()));
        prop_assert_eq!(left.clone(), Outcome::Batch(xs.iter().cloned().map(|x| zip(x, Outcome::ok(y))).collect()));
        prop_assert_eq!(right.map(|(a, b)| (b, a)), left);
    }

    #[test]
    fn join_all_returns_first_stop_or_every_value(xs in vec(arb_outcome(), 0..5)) {
        let mut flat = Vec::new();
        leaves(Outcome::Batch(xs.clone()), &mut flat);
        let result = join_all(xs);
        match flat.iter().position(|o| !o.is_ok()) {
            None => {
                let values: Vec<i32> = flat.into_iter().map(|o| o.unwrap_or(0)).collect();
                prop_assert_eq!(result, Outcome::ok(values));
            }
            Some(i) => {
                let stop = flat.swap_remove(i);
                prop_assert_eq!(result.map(|_| ()), stop.map(|_| ()));
            }
        }
    }

    #[test]
    fn join_any_priority(xs in vec(arb_outcome(), 0..5)) {
        let result = join_any(xs.clone());
        match xs.iter().position(|o| !o.is_err()) {
            Some(i) => prop_assert_eq!(result, xs[i].clone()),
            None => match xs.last() {
                Some(last) => prop_assert_eq!(&result, last),
                None => {
                    let e = result.into_result().unwrap_err();
                    prop_assert_eq!(e.kind, ErrorKind::Internal);
                    prop_assert_eq!(e.message, "join_any called with empty vec");
                }
            },
        }
    }

    #[test]
    fn serde_round_trip_any_outcome(m in arb_outcome()) {
        prop_assert_eq!(round_trip(&m), m.clone());
        let strings = m.map(|x| x.to_string());
        prop_assert_eq!(round_trip(&strings), strings);
    }

    #[test]
    fn map_err_or_else_leave_non_errors(m in arb_outcome()) {
        let mut flat_before = Vec::new();
        leaves(m.clone(), &mut flat_before);
        let recovered = m.or_else(|e| Outcome::ok(e.message.len() as i32));
        let mut flat_after = Vec::new();
        leaves(recovered, &mut flat_after);
        prop_assert_eq!(flat_before.len(), flat_after.len());
        for (before, after) in flat_before.into_iter().zip(flat_after) {
            if before.is_err() { prop_assert!(after.is_ok()); } else { prop_assert_eq!(before, after); }
        }
    }
}

#[test]
fn constructors_and_predicates() {
    let cases: Vec<(Outcome<u8>, [bool; 7])> = vec![
        (
            Outcome::ok(1),
            [true, false, false, false, false, false, true],
        ),
        (
            Outcome::err(OutcomeError::new(ErrorKind::Conflict, "c")),
            [false, true, false, false, false, false, true],
        ),
        (
            Outcome::retry(5, 1, 3, "r"),
            [false, false, true, false, false, false, false],
        ),
        (
            Outcome::pending(WaitCondition::Event { event_id: 9 }, 1),
            [false, false, false, true, false, false, false],
        ),
        (
            Outcome::cancelled("x"),
            [false, false, false, false, true, false, true],
        ),
        (
            Outcome::batch(vec![]),
            [false, false, false, false, false, true, false],
        ),
    ];
    for (o, want) in cases {
        let got = [
            o.is_ok(),
            o.is_err(),
            o.is_retry(),
            o.is_pending(),
            o.is_cancelled(),
            o.is_batch(),
            o.is_terminal(),
        ];
        assert_eq!(got, want, "{o:?}");
    }
}

#[test]
fn error_kind_groups() {
    use ErrorKind::*;
    let table = [
        (NotFound, false, true, false),
        (Conflict, false, true, false),
        (Validation, false, true, false),
        (PolicyRejection, false, true, false),
        (StorageError, true, false, true),
        (Timeout, true, false, true),
        (Serialization, false, false, true),
        (Internal, false, false, true),
        (Custom(7), false, false, false),
    ];
    for (kind, retry, domain, operational) in table {
        assert_eq!(
            (kind.is_retryable(), kind.is_domain(), kind.is_operational()),
            (retry, domain, operational),
            "{kind:?}"
        );
    }
}

#[test]
fn outcome_error_builders_and_display() {
    let e = OutcomeError::new(ErrorKind::Custom(3), "boom")
        .with_compensation(CompensationAction::Release {
            resource_ids: vec![1],
        })
        .with_retryable(true);
    assert_eq!(e.to_string(), "[Custom(3)] boom");
    assert!(e.retryable);
    assert!(!OutcomeError::new(ErrorKind::Validation, "v").retryable);
    assert!(OutcomeError::new(ErrorKind::StorageError, "s").retryable);
    let as_error: &dyn std::error::Error = &e;
    assert!(as_error.source().is_none());
}

#[test]
fn into_result_and_unwraps() {
    assert_eq!(Outcome::ok(3).into_result(), Ok(3));
    let e = OutcomeError::new(ErrorKind::NotFound, "nf");
    assert_eq!(Outcome::<u8>::err(e.clone()).into_result(), Err(e));
    let c = Outcome::<u8>::cancelled("user left")
        .into_result()
        .unwrap_err();
    assert_eq!(
        (c.kind, c.message.as_str(), c.retryable),
        (ErrorKind::Internal, "cancelled: user left", false)
    );
    for o in [
        Outcome::<u8>::retry(1, 1, 2, "r"),
        Outcome::pending(WaitCondition::Timeout { resume_at_ms: 1 }, 2),
        Outcome::batch(vec![Outcome::ok(1)]),
    ] {
        let e = o.into_result().unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::Internal, "outcome is not terminal")
        );
        assert!(e.compensation.is_none());
    }
    assert_eq!(Outcome::ok(1).unwrap_or(2), 1);
    assert_eq!(Outcome::<u8>::cancelled("c").unwrap_or(2), 2);
    assert_eq!(Outcome::<u8>::retry(1, 1, 1, "").unwrap_or_else(|| 9), 9);
    assert_eq!(Outcome::from(Ok::<u8, OutcomeError>(4)), Outcome::ok(4));
}

#[test]
fn combinators_recurse_into_batches() {
    let e = |m: &str| Outcome::<i32>::err(OutcomeError::new(ErrorKind::Validation, m));
    let m = Outcome::batch(vec![
        Outcome::ok(1),
        e("a"),
        Outcome::batch(vec![Outcome::ok(2), e("b")]),
    ]);

    let seen = RefCell::new(Vec::new());
    let errs = RefCell::new(Vec::new());
    let same = m
        .clone()
        .inspect(|v| seen.borrow_mut().push(*v))
        .inspect_err(|e| errs.borrow_mut().push(e.message.clone()));
    assert_eq!(same, m);
    assert_eq!(*seen.borrow(), [1, 2]);
    assert_eq!(*errs.borrow(), ["a", "b"]);

    let upper = m.clone().map_err(|mut e| {
        e.message = e.message.to_uppercase();
        e
    });
    let messages = RefCell::new(Vec::new());
    let _ = upper.inspect_err(|e| messages.borrow_mut().push(e.message.clone()));
    assert_eq!(*messages.borrow(), ["A", "B"]);

    assert_eq!(
        m.clone().or_else(|e| Outcome::ok(e.message.len() as i32)),
        Outcome::batch(vec![
            Outcome::ok(1),
            Outcome::ok(1),
            Outcome::batch(vec![Outcome::ok(2), Outcome::ok(1)])
        ])
    );
    assert!(Outcome::<i32>::cancelled("c")
        .or_else(|_| Outcome::ok(0))
        .is_cancelled());
}

#[test]
fn and_then_if_is_shallow() {
    let m = Outcome::batch(vec![
        Outcome::ok(1),
        Outcome::ok(2),
        Outcome::batch(vec![Outcome::ok(2)]),
    ]);
    let out = m.and_then_if(|v| *v == 2, |v| Outcome::ok(v * 100));
    assert_eq!(
        out,
        Outcome::batch(vec![
            Outcome::ok(1),
            Outcome::ok(200),
            Outcome::batch(vec![Outcome::ok(2)])
        ])
    );
    assert_eq!(
        Outcome::ok(2).and_then_if(|v| *v > 1, |_| Outcome::cancelled("big")),
        Outcome::cancelled("big")
    );
    assert_eq!(
        Outcome::ok(1).and_then_if(|v| *v > 1, |_| Outcome::cancelled("big")),
        Outcome::ok(1)
    );
}

#[test]
fn zip_and_joins_examples() {
    let err = |m: &str| Outcome::<u8>::err(OutcomeError::new(ErrorKind::Conflict, m));
    assert_eq!(
        zip(err("first"), err("second")).map(|_| ()),
        err("first").map(|_| ())
    );
    assert!(zip(
        Outcome::<u8>::pending(WaitCondition::All(vec![]), 1),
        Outcome::<u8>::retry(1, 1, 1, "")
    )
    .is_retry());
    assert!(zip(Outcome::batch(vec![Outcome::ok(1u8)]), err("e")).is_err());
    assert_eq!(join_all(Vec::<Outcome<u8>>::new()), Outcome::ok(vec![]));
    assert_eq!(
        join_all(vec![
            Outcome::ok(1u8),
            err("x"),
            Outcome::cancelled("later")
        ])
        .map(|_| ()),
        err("x").map(|_| ())
    );
    let batch = Outcome::batch(vec![Outcome::ok(1u8)]);
    assert_eq!(
        join_any(vec![err("a"), batch.clone(), Outcome::ok(2)]),
        batch
    );
}

#[test]
fn serde_shape_of_every_variant() {
    let id = 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10_u128;
    let cases: Vec<(Outcome<u32>, serde_json::Value)> = vec![
        (Outcome::ok(5), serde_json::json!({"type": "Ok", "data": 5})),
        (
            Outcome::err(OutcomeError::new(ErrorKind::Custom(9), "m")),
            serde_json::json!({"type": "Err", "data": {"kind": {"Custom": 9}, "message": "m", "compensation": null, "retryable": false}}),
        ),
        (
            Outcome::retry(100, 2, 5, "busy"),
            serde_json::json!({"type": "Retry", "data": {"after_ms": 100, "attempt": 2, "max_attempts": 5, "reason": "busy"}}),
        ),
        (
            Outcome::pending(WaitCondition::Event { event_id: id }, 1),
            serde_json::json!({"type": "Pending", "data": {
                "condition": {"Event": {"event_id": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}},
                "resume_token": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1]}}),
        ),
        (
            Outcome::cancelled("bye"),
            serde_json::json!({"type": "Cancelled", "data": {"reason": "bye"}}),
        ),
        (
            Outcome::batch(vec![Outcome::ok(1), Outcome::cancelled("c")]),
            serde_json::json!({"type": "Batch", "data": [{"type": "Ok", "data": 1}, {"type": "Cancelled", "data": {"reason": "c"}}]}),
        ),
    ];
    for (o, want) in cases {
        assert_eq!(serde_json::to_value(&o).unwrap(), want);
        assert_eq!(serde_json::from_value::<Outcome<u32>>(want).unwrap(), o);
        assert_eq!(round_trip(&o), o);
    }
}

#[test]
fn serde_data_before_type_and_nested_types() {
    let json = r#"{"data":{"condition":{"Timeout":{"resume_at_ms":7}},"resume_token":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,2]},"type":"Pending"}"#;
    let o: Outcome<u8> = serde_json::from_str(json).unwrap();
    assert_eq!(
        o,
        Outcome::pending(WaitCondition::Timeout { resume_at_ms: 7 }, 2)
    );

    let waits = vec![
        WaitCondition::Timeout { resume_at_ms: 1 },
        WaitCondition::Event {
            event_id: u128::MAX,
        },
        WaitCondition::All(vec![WaitCondition::Any(vec![WaitCondition::Custom {
            tag: 3,
            data: vec![1, 2],
        }])]),
    ];
    let comps = vec![
        CompensationAction::Rollback {
            event_ids: vec![1, u128::MAX],
        },
        CompensationAction::Notify {
            target_id: 5,
            message: "hi".into(),
        },
        CompensationAction::Release {
            resource_ids: vec![],
        },
        CompensationAction::Custom {
            action_type: "refund".into(),
            data: vec![0],
        },
    ];
    for w in waits {
        let back: WaitCondition =
            serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
        assert_eq!(back, w);
    }
    for c in comps {
        let e = OutcomeError::new(ErrorKind::Internal, "x").with_compensation(c);
        let back: OutcomeError = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }
    let bad = r#"{"type":"Pending","data":{"condition":{"Timeout":{"resume_at_ms":7}},"resume_token":[1,2]}}"#;
    assert!(serde_json::from_str::<Outcome<u8>>(bad).is_err());
}
