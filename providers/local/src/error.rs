//! Turning netlink and socket errors into [`ProviderError`]s that tell the daemon whether to
//! retry and tell the operator what to change.

use std::io;

use cloudha_provider_core::ProviderError;

use crate::netlink;

/// The fix for every permission failure: both the netlink writes and the packet socket need it.
pub(crate) const PRIVILEGE_FIX: &str = "run as root or grant CAP_NET_ADMIN and CAP_NET_RAW";

/// The fix when the configured interface does not exist.
pub(crate) fn missing_interface(operation: &str, interface: &str) -> ProviderError {
    ProviderError::Permanent {
        operation: operation.to_string(),
        message: format!("interface {interface} not found"),
        fix: "set provider.local.interface to an existing interface".to_string(),
    }
}

/// Classify a netlink failure of `operation` on `interface`.
pub(crate) fn from_netlink(
    operation: &str,
    interface: &str,
    error: &rtnetlink::Error,
) -> ProviderError {
    match netlink::errno(error) {
        Some(code) => from_errno(operation, interface, code, &error.to_string()),
        // The connection broke or the kernel sent something unexpected: nothing the
        // operator can fix, and a fresh socket on the next attempt may well work.
        None => transient(operation, error.to_string()),
    }
}

/// Classify an I/O failure (opening or writing the packet socket, opening netlink).
pub(crate) fn from_io(operation: &str, interface: &str, error: &io::Error) -> ProviderError {
    match error.raw_os_error() {
        Some(code) => from_errno(operation, interface, code, &error.to_string()),
        None => transient(operation, error.to_string()),
    }
}

fn from_errno(operation: &str, interface: &str, code: i32, message: &str) -> ProviderError {
    match code {
        libc::EPERM | libc::EACCES => permanent(operation, message, PRIVILEGE_FIX),
        libc::ENODEV => missing_interface(operation, interface),
        libc::EINVAL => permanent(
            operation,
            message,
            "check provider.local.floating_ips: each needs a valid IPv4 address and a prefix length of 0 to 32",
        ),
        libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::ESOCKTNOSUPPORT => permanent(
            operation,
            message,
            "run on a Linux kernel with IPv4 and AF_PACKET support",
        ),
        libc::ENETDOWN => ProviderError::Transient {
            operation: operation.to_string(),
            message: format!("interface {interface} is down: {message}"),
            retry_after: None,
        },
        _ => transient(operation, message.to_string()),
    }
}

fn permanent(operation: &str, message: &str, fix: &str) -> ProviderError {
    ProviderError::Permanent {
        operation: operation.to_string(),
        message: message.to_string(),
        fix: fix.to_string(),
    }
}

fn transient(operation: &str, message: String) -> ProviderError {
    ProviderError::Transient {
        operation: operation.to_string(),
        message,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_errors_are_permanent_with_the_capability_fix() {
        let e = from_io("garp", "lan0", &io::Error::from_raw_os_error(libc::EPERM));
        assert!(!e.is_retryable());
        assert!(
            e.to_string().contains("CAP_NET_ADMIN and CAP_NET_RAW"),
            "{e}"
        );
    }

    #[test]
    fn missing_device_names_the_setting() {
        let e = from_io(
            "link.get",
            "lan0",
            &io::Error::from_raw_os_error(libc::ENODEV),
        );
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("interface lan0 not found"), "{e}");
        assert!(e.to_string().contains("provider.local.interface"), "{e}");
    }

    #[test]
    fn other_errors_are_retried() {
        let e = from_io("garp", "lan0", &io::Error::from_raw_os_error(libc::ENOBUFS));
        assert!(e.is_retryable());
        let e = from_netlink("address.add", "lan0", &rtnetlink::Error::RequestFailed);
        assert!(e.is_retryable());
    }
}
