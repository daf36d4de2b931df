//! `QBENCH_MAX_MEMORY` sets the memory budget; a bad value is an error naming the
//! variable, at the first check. Alone in its own test binary because it sets a
//! process-wide environment variable and the budget is read once per process.

use qbench_models::budget::{MemoryBudget, Origin, ENV};
use qbench_models::tensor::Tensor;

#[test]
fn the_env_var_sets_the_budget_and_bad_values_name_it() {
    std::env::set_var(ENV, "512M");
    let b = MemoryBudget::from_env().unwrap();
    assert_eq!((b.limit(), b.origin()), (512 << 20, Origin::Env));

    std::env::set_var(ENV, "lots");
    let e = MemoryBudget::from_env().unwrap_err().to_string();
    assert!(e.contains(ENV) && e.contains("lots"), "{e}");
    // The first check of the process reads it: every sized allocation then reports it.
    let e = Tensor::try_zeros(vec![2]).unwrap_err().to_string();
    assert!(e.contains(ENV), "{e}");

    // `--max-memory` (the harness's setter) wins over the environment.
    MemoryBudget::bytes(1 << 20).set_global();
    assert_eq!(MemoryBudget::global().unwrap().limit(), 1 << 20);
    assert!(Tensor::try_zeros(vec![1 << 10]).is_ok());
    let e = Tensor::try_zeros(vec![1 << 20]).unwrap_err().to_string();
    assert!(
        e.contains("4194304 bytes") && e.contains("--max-memory"),
        "{e}"
    );
    std::env::remove_var(ENV);
}
