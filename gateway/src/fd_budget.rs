//! The open-file budget: how many client connections the process's descriptor
//! limit (`RLIMIT_NOFILE`) holds, which is the default `server.maxConnections`.
//!
//! Settings read the default when a config leaves `maxConnections` out, and the
//! server warns at start when a configured value is more than the limit holds (at
//! the limit, accepts fail with EMFILE instead). Its own module so resolving
//! settings needs nothing of the server.

/// `server.maxConnections` when the open-file limit leaves room for it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Descriptors kept out of the connection budget: stdio, the two listeners, the
/// runtime's epoll and wakers, the config watcher and its reads, the exporter's
/// connection, admin requests.
const RESERVED_FDS: u64 = 64;

/// The default `server.maxConnections`: [`DEFAULT_MAX_CONNECTIONS`], or fewer when the
/// process's open-file limit (`RLIMIT_NOFILE`) would not hold that many.
pub fn default_max_connections() -> usize {
    connections_that_fit(open_file_limit())
}

/// Connections that fit in `limit` descriptors: each may need a second one for its
/// upstream request, and [`RESERVED_FDS`] stay free so reloads and exports still work
/// at the limit.
fn connections_that_fit(limit: Option<u64>) -> usize {
    match limit {
        Some(limit) => {
            let fit = limit.saturating_sub(RESERVED_FDS) / 2;
            usize::try_from(fit).map_or(DEFAULT_MAX_CONNECTIONS, |fit| {
                fit.clamp(1, DEFAULT_MAX_CONNECTIONS)
            })
        }
        None => DEFAULT_MAX_CONNECTIONS,
    }
}

/// The soft `RLIMIT_NOFILE`, when there is one.
#[cfg(unix)]
pub fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the `rlimit` it is pointed at, which outlives
    // the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    // `rlim_t` is u64 on Linux, not on every unix.
    #[allow(clippy::unnecessary_cast)]
    let soft = limit.rlim_cur as u64;
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(soft)
}

#[cfg(not(unix))]
pub fn open_file_limit() -> Option<u64> {
    None
}

/// Warns when a configured `server.maxConnections` is more than the open-file limit
/// leaves room for: at the limit, accepts fail with EMFILE instead.
pub fn warn_if_over_fd_limit(max_connections: usize) {
    let limit = open_file_limit();
    let fit = connections_that_fit(limit);
    if let Some(limit) = limit
        && max_connections > fit
    {
        tracing::warn!(
            "server.maxConnections is {max_connections}, but the open-file limit ({limit}) leaves room for about {fit}; raise the limit (ulimit -n) or lower maxConnections"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_leaves_room_below_the_open_file_limit() {
        assert_eq!(connections_that_fit(None), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(connections_that_fit(Some(1 << 40)), DEFAULT_MAX_CONNECTIONS);
        // The 128-descriptor container of issue 11: 32 connections, 64 spare.
        assert_eq!(connections_that_fit(Some(128)), 32);
        assert_eq!(connections_that_fit(Some(1024)), 480);
        assert_eq!(connections_that_fit(Some(10)), 1);
        assert!(default_max_connections() >= 1);
    }
}
