//! `QBENCH_DATA_DIR` overrides where datasets are found. Alone in its own test binary
//! because it sets a process-wide environment variable.

use qbench_models::data::{self, mnist, DataError, Split, DATA_DIR_ENV};

#[test]
fn data_dir_env_var_overrides_the_default() {
    let default = data::data_dir();
    assert!(default.join("mnist").is_dir(), "{}", default.display());

    let elsewhere = std::env::temp_dir().join(format!("qbench-no-data-{}", std::process::id()));
    std::env::set_var(DATA_DIR_ENV, &elsewhere);
    assert_eq!(data::data_dir(), elsewhere);
    let err = mnist(Split::Test).unwrap_err();
    assert!(matches!(err, DataError::Idx(_)), "{err}");
    assert!(
        err.to_string().contains(&elsewhere.display().to_string()),
        "{err}"
    );

    // An empty value means "unset", so a blank export in CI does not hide the data.
    std::env::set_var(DATA_DIR_ENV, "");
    assert_eq!(data::data_dir(), default);
    std::env::remove_var(DATA_DIR_ENV);
}
