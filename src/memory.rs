//! How the process allocates memory.
//!
//! **Rust's allocations go to jemalloc** (the binary's global allocator, with
//! the settings in [`JEMALLOC`]). A batch is built of many small allocations
//! (a record's key, value and headers, its decoded fields, Arrow and Parquet
//! buffers) made and freed by several threads at once: the run loop decodes
//! the next batch while the runtime's workers commit the one before. With
//! glibc's malloc shared by two arenas, malloc and free took about a fifth
//! of the writer's CPU in a profile of the full-dataset benchmark (`perf
//! record -e cpu-clock`: `_int_malloc`, `_int_free`, `malloc_consolidate`,
//! `unlink_chunk`), and the writer used ~6.4 s of CPU for the dataset;
//! with jemalloc ~5 s, for the same peak RSS (BENCHMARKS.md, session 23).
//! jemalloc hands pages freed for a second back to the system from a
//! background thread, so a live writer's RSS follows what it holds.
//!
//! **librdkafka's allocations (C) stay with glibc's malloc**, tuned here as
//! before: glibc gives threads heaps of their own (arenas), up to 8 per core,
//! and memory freed in an arena stays there for that arena's next
//! allocations, so the process keeps every thread's high-water mark at once
//! (a live writer's RSS climbed to 290–310 MB in 8 minutes at 1,000 events/s
//! when glibc served everything; two shared arenas held 145–207 MB,
//! BENCHMARKS.md, session 9). [`tune`] bounds the arenas before any thread
//! starts, and [`release_freed`] trims what glibc holds free.
//!
//! An operator who tunes malloc through its environment variables
//! (`GLIBC_TUNABLES` with `glibc.malloc.*`, `MALLOC_ARENA_MAX`, ...) keeps
//! exactly that instead; jemalloc's settings can be overridden with
//! `_RJEM_MALLOC_CONF` (jemalloc's `MALLOC_CONF` syntax).

/// jemalloc's settings (NUL-terminated, exported by the binary as
/// `malloc_conf`): two arenas, as for glibc; freed pages go back to the
/// system after about a second, from a background thread, not from the
/// threads that free them.
pub const JEMALLOC: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:2\0";

/// The arenas the process's threads share.
pub const ARENAS: usize = 2;

/// What [`tune`] did, for the start-up log.
#[derive(Debug, PartialEq, Eq)]
pub enum Tuning {
    Applied { arenas: usize },
    /// The environment tunes malloc itself (the variable named).
    LeftToEnvironment(&'static str),
    /// Not glibc: nothing to tune.
    NotGlibc,
}

/// Bounds the number of arenas, unless the environment tunes malloc. Call
/// before the process starts threads.
pub fn tune() -> Tuning {
    if let Some(var) = environment_tunes_malloc(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())) {
        return Tuning::LeftToEnvironment(var);
    }
    apply()
}

/// The variable through which the environment tunes malloc, if any.
fn environment_tunes_malloc(var: impl Fn(&str) -> Option<String>) -> Option<&'static str> {
    if var("GLIBC_TUNABLES").is_some_and(|v| v.contains("glibc.malloc.")) {
        return Some("GLIBC_TUNABLES");
    }
    ["MALLOC_ARENA_MAX", "MALLOC_ARENA_TEST", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"]
        .into_iter()
        .find(|name| var(name).is_some())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> Tuning {
    // SAFETY: mallopt only changes malloc's parameters; called before any
    // other thread exists, it races with no allocation.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS as libc::c_int);
    }
    Tuning::Applied { arenas: ARENAS }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> Tuning {
    Tuning::NotGlibc
}

/// Hands memory that malloc holds free back to the system. Called after
/// work that frees much at once (a maintenance round): glibc keeps what it
/// freed in its arenas, so without this the RSS ratchets up to the largest round.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn the_environment_keeps_its_own_malloc_settings() {
        assert_eq!(environment_tunes_malloc(env(&[])), None);
        assert_eq!(environment_tunes_malloc(env(&[("GLIBC_TUNABLES", "glibc.rtld.optional_static_tls=512")])), None);
        assert_eq!(environment_tunes_malloc(env(&[("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")])), Some("GLIBC_TUNABLES"));
        assert_eq!(environment_tunes_malloc(env(&[("MALLOC_ARENA_MAX", "8")])), Some("MALLOC_ARENA_MAX"));
        assert_eq!(environment_tunes_malloc(env(&[("MALLOC_MMAP_THRESHOLD_", "65536")])), Some("MALLOC_MMAP_THRESHOLD_"));
    }

    /// The binary's own setting reaches glibc: with it, the threads of a
    /// process share at most [`ARENAS`] arenas, however many allocate at once.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn threads_share_the_arenas() {
        // `malloc_info` lists one <heap> per arena; run in a child process, so
        // that the setting applies from its start, before any thread.
        if std::env::var_os("LAKESTREAM_ARENA_CHILD").is_none() {
            let me = std::env::current_exe().unwrap();
            let out = std::process::Command::new(me)
                .args(["--exact", "memory::tests::threads_share_the_arenas", "--nocapture", "--test-threads=1"])
                .env("LAKESTREAM_ARENA_CHILD", "1")
                .env_remove("MALLOC_ARENA_MAX")
                .env_remove("GLIBC_TUNABLES")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{text}");
            let heaps: usize = text.lines().find_map(|l| l.split("arenas: ").nth(1)).expect("the child reports its arenas").parse().unwrap();
            assert!(heaps <= ARENAS, "{heaps} arenas, at most {ARENAS} expected");
            return;
        }
        assert_eq!(tune(), Tuning::Applied { arenas: ARENAS });
        // Eight threads allocating at the same time: without the limit, glibc gives most of them an arena.
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let blocks: Vec<Vec<u8>> = (0..2000).map(|i| vec![1u8; 64 + i % 512]).collect();
                    barrier.wait();
                    drop(blocks);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        println!("arenas: {}", arenas_in_use());
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn arenas_in_use() -> usize {
        extern "C" {
            fn open_memstream(buf: *mut *mut libc::c_char, len: *mut libc::size_t) -> *mut libc::FILE;
            fn malloc_info(options: libc::c_int, stream: *mut libc::FILE) -> libc::c_int;
        }
        let mut buf: *mut libc::c_char = std::ptr::null_mut();
        let mut len: libc::size_t = 0;
        // SAFETY: a memory stream malloc_info writes its XML report to, read
        // once it is closed, then freed as open_memstream requires.
        let xml = unsafe {
            let stream = open_memstream(&mut buf, &mut len);
            malloc_info(0, stream);
            libc::fclose(stream);
            let xml = std::slice::from_raw_parts(buf as *const u8, len).to_vec();
            libc::free(buf.cast());
            String::from_utf8_lossy(&xml).into_owned()
        };
        xml.matches("<heap nr=").count()
    }
}
