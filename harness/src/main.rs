//! `qbench`: the command-line front end. Parsing, validation and every command live in the
//! library ([`qbench::cli`]); this is the process entry point only.

fn main() -> anyhow::Result<()> {
    // Rust starts with SIGPIPE ignored, so printing into a closed pipe (`| head`) panics;
    // the default action ends the process quietly, which is what users of a CLI expect.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    qbench::cli::run()
}
