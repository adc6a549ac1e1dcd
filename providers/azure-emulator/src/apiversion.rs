//! Which `api-version`s each emulated resource type accepts, and ARM's answers for the rest.
//!
//! ARM resolves a request's resource type and api-version against the resource provider's
//! registration before the provider sees the request. Three answers, all seen from the
//! real service:
//!
//! * a value that is not a date (`latest`, `2024-5-01`): 400 `InvalidApiVersionParameter`
//!   ("The api-version '...' is invalid. The supported versions are '...'."; the versions
//!   ARM lists there are its own);
//! * a well-formed version the type is not registered for, on a resource in a resource
//!   group: 400 `NoRegisteredProviderFound` ("No registered resource provider found for
//!   location '{loc}' and API version '{v}' for type '{type}'. The supported api-versions
//!   are '{a}, {b}'. The supported locations are '{l}'." — Azure/azure-sdk-for-js#9297 (NIC
//!   GET), Azure/azure-cli#28496, Azure/azure-sdk-for-go#836 and #18704);
//! * the same on a subscription-level list, where no location is known: 404
//!   `InvalidResourceType` ("The resource type '{type}' could not be found in the namespace
//!   '{ns}' for api version '{v}'. The supported api-versions are '{a},{b}'." —
//!   Azure/azure-powershell#10299 and #12061).
//!
//! The version lists are the stable folders of specification/network/resource-manager
//! (Azure/azure-rest-api-specs) and the lists ARM printed in those reports; they include
//! every version cloudha's client uses (`NETWORK_API_VERSION` 2024-05-01, `MOVE_API_VERSION`
//! 2025-09-01, `COMPUTE_API_VERSION` 2024-07-01, the permissions API's 2022-04-01) and the
//! one the official Python SDK (azure-mgmt-network 33.1.0) sends, 2026-03-01.

/// Microsoft.Network api-versions (stable), oldest first.
#[rustfmt::skip]
pub(crate) const NETWORK: &[&str] = &[
    "2014-12-01-preview", "2015-05-01-preview", "2015-06-15", "2016-03-30", "2016-06-01",
    "2016-07-01", "2016-08-01", "2016-09-01", "2016-10-01", "2016-11-01", "2016-12-01",
    "2017-03-01", "2017-04-01", "2017-06-01", "2017-08-01", "2017-09-01", "2017-10-01",
    "2017-11-01", "2018-01-01", "2018-02-01", "2018-03-01", "2018-04-01", "2018-05-01",
    "2018-06-01", "2018-07-01", "2018-08-01", "2018-10-01", "2018-11-01", "2018-12-01",
    "2019-02-01", "2019-04-01", "2019-06-01", "2019-07-01", "2019-08-01", "2019-09-01",
    "2019-11-01", "2019-12-01", "2020-01-01", "2020-03-01", "2020-04-01", "2020-05-01",
    "2020-06-01", "2020-07-01", "2020-08-01", "2020-11-01", "2021-01-01", "2021-02-01",
    "2021-03-01", "2021-04-01", "2021-05-01", "2021-06-01", "2021-08-01", "2021-12-01",
    "2022-01-01", "2022-05-01", "2022-07-01", "2022-09-01", "2022-11-01", "2023-02-01",
    "2023-04-01", "2023-05-01", "2023-06-01", "2023-09-01", "2023-11-01", "2024-01-01",
    "2024-03-01", "2024-05-01", "2024-07-01", "2024-10-01", "2025-01-01", "2025-03-01",
    "2025-05-01", "2025-07-01", "2025-09-01", "2026-01-01", "2026-03-01",
];

/// Microsoft.Compute `virtualMachines` api-versions (stable), oldest first.
#[rustfmt::skip]
pub(crate) const COMPUTE: &[&str] = &[
    "2015-05-01-preview", "2015-06-15", "2016-03-30", "2016-04-30-preview", "2016-08-30",
    "2017-03-30", "2017-12-01", "2018-04-01", "2018-06-01", "2018-10-01", "2019-03-01",
    "2019-07-01", "2019-12-01", "2020-06-01", "2020-12-01", "2021-03-01", "2021-04-01",
    "2021-07-01", "2021-11-01", "2022-03-01", "2022-08-01", "2022-11-01", "2023-03-01",
    "2023-07-01", "2023-09-01", "2024-03-01", "2024-07-01", "2024-11-01", "2025-04-01",
];

/// Microsoft.Authorization `permissions` api-versions.
#[rustfmt::skip]
pub(crate) const AUTHORIZATION: &[&str] = &[
    "2015-07-01", "2018-01-01-preview", "2022-04-01", "2022-05-01-preview",
];

/// What ARM knows about the type a request addresses.
pub(crate) struct TypeInfo {
    /// Resource provider namespace, e.g. `Microsoft.Network`.
    pub namespace: &'static str,
    /// Type within the namespace as ARM prints it, e.g. `routeTables/routes`.
    pub type_name: &'static str,
    /// Registered api-versions.
    pub versions: &'static [&'static str],
}

/// Whether `v` is registered for the type (ARM compares case-insensitively).
pub(crate) fn supported(info: &TypeInfo, v: &str) -> bool {
    info.versions.iter().any(|s| s.eq_ignore_ascii_case(v))
}

/// 400 `NoRegisteredProviderFound`, for a request whose region ARM knows.
pub(crate) fn no_registered_provider(
    info: &TypeInfo,
    v: &str,
    location: &str,
) -> crate::http::Resp {
    crate::http::arm_error(
        400,
        "NoRegisteredProviderFound",
        format!(
            "No registered resource provider found for location '{location}' and API version '{v}' for type '{}'. The supported api-versions are '{}'. The supported locations are '{location}'.",
            info.type_name,
            info.versions.join(", ")
        ),
    )
}

/// 404 `InvalidResourceType`, for a request without a region (subscription-level lists).
pub(crate) fn invalid_resource_type(info: &TypeInfo, v: &str) -> crate::http::Resp {
    crate::http::arm_error(
        404,
        "InvalidResourceType",
        format!(
            "The resource type '{}' could not be found in the namespace '{}' for api version '{v}'. The supported api-versions are '{}'.",
            info.type_name,
            info.namespace,
            info.versions.join(",")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_and_hold_the_clients_versions() {
        for list in [NETWORK, COMPUTE, AUTHORIZATION] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?}");
        }
        for v in ["2024-05-01", "2025-09-01", "2026-03-01"] {
            assert!(NETWORK.contains(&v), "{v}");
        }
        assert!(COMPUTE.contains(&"2024-07-01"));
        assert!(AUTHORIZATION.contains(&"2022-04-01"));
    }
}
