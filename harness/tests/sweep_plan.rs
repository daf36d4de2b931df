//! The sweep's plan, tested as a library call: what the built-in grid, `--quick`, the
//! flags and `--shard` turn into, and what is refused before any model is loaded.

use std::collections::BTreeSet;

use qbench::results::{Backend, CellKey, Method};
use qbench::sweep::{plan, SweepArgs};

fn quick() -> SweepArgs {
    SweepArgs {
        quick: true,
        out: Some("unused-out-dir".into()),
        ..SweepArgs::default()
    }
}

fn zoo_models() -> Vec<String> {
    let mut names: Vec<String> = qbench_models::zoo::list(&qbench_models::zoo::zoo_dir())
        .expect("the zoo lists")
        .into_iter()
        .map(|e| e.manifest.name)
        .collect();
    names.sort();
    names
}

#[test]
fn the_default_grid_is_every_zoo_model_by_every_method_backend_and_batch() {
    let p = plan(&quick()).expect("the default plan");
    let models = zoo_models();
    assert_eq!(p.config.models, models);
    assert_eq!(p.config.methods, Method::ALL.to_vec());
    assert_eq!(p.config.backends, Backend::ALL.to_vec());
    assert_eq!(p.config.batch, vec![1, 32]);
    assert_eq!(p.config.threads, vec![1]);
    assert_eq!(p.cells.len(), models.len() * 5 * 3 * 2);
    let unique: BTreeSet<&CellKey> = p.cells.iter().collect();
    assert_eq!(unique.len(), p.cells.len(), "a cell is planned twice");
    // Grouped by (model, backend), in grid order: a group's cells are contiguous.
    let groups: Vec<(String, Backend)> = p
        .cells
        .iter()
        .map(|k| (k.model.clone(), k.backend))
        .collect::<Vec<_>>()
        .chunk_by(|a, b| a == b)
        .map(|g| g[0].clone())
        .collect();
    let expected: Vec<(String, Backend)> = models
        .iter()
        .flat_map(|m| Backend::ALL.map(|b| (m.clone(), b)))
        .collect();
    assert_eq!(groups, expected);
}

#[test]
fn quick_caps_the_eval_slice_calibration_qat_and_time_budgets() {
    let p = plan(&quick()).expect("the quick plan");
    let c = &p.config;
    assert!(c.quick);
    assert_eq!(c.eval_limit, Some(500));
    assert!(c.calib_samples <= 256, "{}", c.calib_samples);
    assert_eq!(c.qat_train_samples, Some(1000));
    assert!(c.warmup_ms <= 20 && c.budget_ms <= 120);
    let full = plan(&SweepArgs {
        out: Some("unused".into()),
        ..SweepArgs::default()
    })
    .expect("the full plan");
    assert!(!full.config.quick);
    assert_eq!(full.config.eval_limit, None);
    assert_eq!(full.cells, p.cells, "--quick changes budgets, not cells");
}

#[test]
fn flags_narrow_the_grid() {
    let p = plan(&SweepArgs {
        models: Some(vec!["digit-cnn".into()]),
        methods: Some(vec!["fp32".into(), " static".into()]),
        backends: Some(vec!["vnni".into()]),
        batch: Some(vec![4]),
        ..quick()
    })
    .expect("a narrowed plan");
    let keys: Vec<(Method, Backend, u32)> = p
        .cells
        .iter()
        .map(|k| (k.method, k.backend, k.batch))
        .collect();
    assert_eq!(
        keys,
        [
            (Method::Fp32, Backend::Vnni, 4),
            (Method::Static, Backend::Vnni, 4)
        ]
    );
    assert!(p.skips.is_empty(), "{:?}", p.skips);
}

#[test]
fn unknown_names_fail_naming_the_flag_and_the_valid_names() {
    let e = plan(&SweepArgs {
        methods: Some(vec!["int4".into()]),
        ..quick()
    })
    .err()
    .expect("int4 is no method");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("--methods") && msg.contains("\"int4\""),
        "{msg}"
    );
    assert!(msg.contains("fp32, fp16, dynamic, static, qat"), "{msg}");

    let e = plan(&SweepArgs {
        backends: Some(vec!["mlas".into()]),
        ..quick()
    })
    .err()
    .expect("mlas is no backend");
    assert!(format!("{e:#}").contains("--backends"), "{e:#}");

    let e = plan(&SweepArgs {
        models: Some(vec!["no-such-model".into()]),
        ..quick()
    })
    .err()
    .expect("an unknown model");
    assert!(format!("{e:#}").contains("no-such-model"), "{e:#}");
}

#[test]
fn shards_partition_the_grid_by_model_and_backend() {
    let all = plan(&quick()).expect("the whole plan");
    let n = 3;
    let mut seen: Vec<CellKey> = Vec::new();
    let mut owner = std::collections::BTreeMap::new();
    for i in 0..n {
        let p = plan(&SweepArgs {
            shard: Some(format!("{i}/{n}")),
            ..quick()
        })
        .expect("a shard's plan");
        assert_eq!(p.shard.map(|s| (s.index, s.count)), Some((i, n)));
        for k in &p.cells {
            // A (model, backend) group belongs to one shard only: its fp32 baseline is
            // measured beside its int8 cells.
            let prev = owner.insert((k.model.clone(), k.backend), i);
            assert!(prev.is_none() || prev == Some(i), "{k} in two shards");
        }
        seen.extend(p.cells);
    }
    seen.sort();
    let mut expected = all.cells.clone();
    expected.sort();
    assert_eq!(seen, expected, "the shards' union is not the grid");

    for bad in ["3/3", "1", "a/b", "0/0", "-1/2"] {
        let e = plan(&SweepArgs {
            shard: Some(bad.into()),
            ..quick()
        })
        .err()
        .unwrap_or_else(|| panic!("--shard {bad} accepted"));
        assert!(format!("{e:#}").contains("--shard"), "{e:#}");
    }
}

#[test]
fn qat_is_skipped_with_the_reason_for_a_model_without_an_eval_set() {
    let p = plan(&SweepArgs {
        models: Some(vec!["resnet50".into(), "digit-cnn".into()]),
        methods: Some(vec!["static".into(), "qat".into()]),
        batch: Some(vec![1]),
        ..quick()
    })
    .expect("the plan");
    for k in &p.cells {
        let skip = p.skips.get(k);
        if k.model == "resnet50" && k.method == Method::Qat {
            let why = skip.expect("resnet50's qat cell is skipped");
            assert!(why.contains("no eval set"), "{why}");
        } else {
            assert!(skip.is_none(), "{k} skipped: {skip:?}");
        }
    }
}

#[test]
fn thread_counts_above_the_cores_and_two_output_dirs_are_refused() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as u32;
    let e = plan(&SweepArgs {
        threads: Some(vec![1, cores + 1]),
        ..quick()
    })
    .err()
    .expect("more threads than cores");
    assert!(format!("{e:#}").contains("cores"), "{e:#}");

    let e = plan(&SweepArgs {
        resume: Some("a".into()),
        ..quick()
    })
    .err()
    .expect("--resume and --out together");
    assert!(format!("{e:#}").contains("--resume"), "{e:#}");
}
