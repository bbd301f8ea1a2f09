//! The free space of the file system under the spool, so that the spool's
//! room is what the disk can still take, not only what `spool_max_bytes`
//! allows: a spool on a small disk must refuse before a write fails.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Bytes an unprivileged process may still write on the file system that
/// holds `path`, if the system says.
pub(super) fn available(path: &Path) -> Option<u64> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `statvfs` writes only into the zeroed struct we pass it, and
    // reads only the NUL-terminated path, which outlives the call. No safe
    // binding of it is in the standard library.
    #[allow(unsafe_code)]
    let stat = unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c_path.as_ptr(), &mut stat) != 0 {
            return None;
        }
        stat
    };
    #[allow(clippy::unnecessary_cast)] // the field types differ between systems
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_directory_has_some_space_and_a_missing_one_none() {
        let here = super::available(std::path::Path::new("."));
        assert!(here.is_some_and(|n| n > 0));
        assert_eq!(super::available(std::path::Path::new("/no/such/dir")), None);
    }
}
